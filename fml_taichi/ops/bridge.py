"""The one way Taichi kernels become differentiable torch ops.

Measured traps this module exists for (taichi 1.7.4, see the project notes):
- Whether Taichi allocates a gradient buffer for an ndarray follows ``tensor.requires_grad``, and a
  plain launch with a ``requires_grad`` tensor silently sets ``tensor.grad = zeros`` on the caller's
  tensor: forward launches must receive detached tensors (:func:`detached`).
- ``kernel.grad(...)`` ADDS into ``tensor.grad``. Re-using the caller's tensors in backward returned
  doubled, then tripled gradients. What works: fresh storage-sharing leaves with zeroed ``.grad`` for
  the inputs, the incoming gradient in the outputs' ``.grad``, then ``kernel.grad`` with the same
  argument list (:func:`launch_grad`).

Kernel authors write a forward Taichi kernel whose ndarray arguments are inputs and outputs, then an
``autograd.Function`` whose forward calls ``kernel(*detached(args))`` and whose backward (marked
``once_differentiable``) calls :func:`launch_grad`.
"""
from __future__ import annotations

from typing import Sequence

import torch


def detached(args: Sequence) -> list:
    """Detach every tensor in ``args`` so a forward launch never touches the caller's ``.grad``."""
    return [a.detach() if isinstance(a, torch.Tensor) else a for a in args]


def launch_grad(
    kernel,
    args: Sequence,
    grad_inputs: Sequence[int],
    outputs: Sequence[int],
    grad_outputs: Sequence[torch.Tensor | None],
) -> list[torch.Tensor]:
    """Run ``kernel.grad`` and return the gradients of ``args[i]`` for ``i`` in ``grad_inputs``.

    ``outputs`` are the positions of the kernel's output ndarrays in ``args`` and ``grad_outputs`` the
    incoming gradients for them (``None`` means zero). The caller's tensors are never mutated: the
    kernel sees fresh leaves that share storage with them, each with its own zeroed gradient.
    """
    launch = detached(args)
    for i in grad_inputs:
        leaf = launch[i].requires_grad_()
        leaf.grad = torch.zeros_like(leaf)
        launch[i] = leaf
    for i, g in zip(outputs, grad_outputs):
        leaf = launch[i].detach().requires_grad_()
        # A copy: reverse-mode kernels may clear the adjoints they consume.
        leaf.grad = torch.zeros_like(leaf) if g is None else g.detach().to(leaf.dtype).contiguous().clone()
        launch[i] = leaf
    kernel.grad(*launch)
    return [launch[i].grad for i in grad_inputs]
