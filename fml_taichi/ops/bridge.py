"""The one way Taichi kernels become differentiable torch ops, and what every op hands to a kernel.

Measured traps this module exists for (taichi 1.7.4, see the project notes):
- Whether Taichi allocates a gradient buffer for an ndarray follows ``tensor.requires_grad``, and a
  plain launch with a ``requires_grad`` tensor silently sets ``tensor.grad = zeros`` on the caller's
  tensor: forward launches must receive detached tensors (:func:`detached`).
- ``kernel.grad(...)`` ADDS into ``tensor.grad``. Re-using the caller's tensors in backward returned
  doubled, then tripled gradients. What works: fresh storage-sharing leaves with zeroed ``.grad`` for
  the inputs, the incoming gradient in the outputs' ``.grad``, then ``kernel.grad`` with the same
  argument list (:func:`launch_grad`).

Two ways to write an op on top of that, one mechanism underneath:
- hand-written backward: an ``autograd.Function`` whose forward calls ``kernel(*detached(args))`` and
  whose backward (marked ``once_differentiable``) launches a backward kernel, or :func:`launch_grad`;
- Taichi autodiff of one forward kernel: :class:`AutodiffOp`, an ``autograd.Function`` whose backward
  is :func:`launch_grad`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import taichi as ti
import torch
from torch.autograd.function import once_differentiable

from ..common import runtime
from ..kernels.helpers import CPU_CHUNK, CUDA_CHUNK

__all__ = ["AutodiffOp", "check_device", "chunk_size", "detached", "launch_grad", "ti_float"]


def ti_float(dtype: torch.dtype):
    """The Taichi float type of a torch float dtype (inputs are validated to be float32/float64)."""
    return ti.f64 if dtype == torch.float64 else ti.f32


def check_device(name: str, t: torch.Tensor) -> None:
    """Kernels read tensors zero-copy, so they must live where the Taichi arch runs."""
    want = runtime.torch_device()
    if t.device.type != want:
        raise ValueError(f"{name}: expected a tensor on {want} (where Taichi runs), got {t.device}")


def chunk_size() -> int:
    """Items per serial chunk of the chunked kernels' parallel loops on the current arch."""
    return CUDA_CHUNK if runtime.arch() == "cuda" else CPU_CHUNK


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


class AutodiffOp:
    """Wrap ``kernel`` as a differentiable op, its backward Taichi's autodiff of it.

    The kernel's arguments are ``(*inputs, *outputs, dt)``: ndarray inputs, ndarray outputs the op
    allocates (zero-filled, so kernels may accumulate into them with ``+=``), and the Taichi float type
    as a template. ``make_outputs(*inputs)`` returns the zero-filled output tensors; ``differentiable``
    lists the input positions that may receive gradients (the others, e.g. index tensors, never do).
    Only inputs whose gradient torch asks for get a Taichi gradient buffer: each distinct set is one
    compiled gradient kernel (4-7 s), so callers should keep the combinations they use few.
    """

    def __init__(self, kernel, make_outputs: "Callable[..., Sequence[torch.Tensor]]",
                 differentiable: Sequence[int]):
        self.kernel = kernel
        self.make_outputs = make_outputs
        self.differentiable = tuple(differentiable)

    def __call__(self, *inputs: torch.Tensor):
        runtime.init()
        outs = _AutodiffFunction.apply(self, *inputs)
        return outs[0] if len(outs) == 1 else outs


class _AutodiffFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op: AutodiffOp, *inputs):
        outs = list(op.make_outputs(*inputs))
        dt = ti_float(outs[0].dtype)
        op.kernel(*detached(list(inputs) + outs), dt)
        ctx.op = op
        ctx.save_for_backward(*inputs)
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs):
        op: AutodiffOp = ctx.op
        inputs = list(ctx.saved_tensors)
        want = [i for i in op.differentiable if ctx.needs_input_grad[i + 1]]
        grads: list = [None] * len(inputs)
        if want:
            outs = list(op.make_outputs(*inputs))
            n = len(inputs)
            got = launch_grad(op.kernel, inputs + outs + [ti_float(outs[0].dtype)], want,
                              list(range(n, n + len(outs))), list(grad_outputs))
            for i, g in zip(want, got):
                grads[i] = g
        return (None, *grads)
