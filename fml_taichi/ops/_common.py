"""Pieces every kernel module shares: small Taichi helpers and :class:`AutodiffOp`, a torch op made
from one Taichi kernel differentiated by Taichi's autodiff (the per-op kernels' bridge).

The kernel's arguments are ``(*inputs, *outputs, dt)``: ndarray inputs, ndarray outputs the op
allocates (zero-filled, so kernels may accumulate into them with ``+=``), and the Taichi float type as
a template. Forward launches on detached tensors and the backward goes through
:func:`fml_taichi.ops.bridge.launch_grad`, so gradients never accumulate across backward calls.
"""
from typing import Callable, Sequence

import taichi as ti
import torch
from torch.autograd.function import once_differentiable

from ..common import runtime
from .bridge import detached, launch_grad


def ti_float(dtype: torch.dtype):
    """The Taichi float type of a torch float dtype (inputs are validated to be float32/float64)."""
    return ti.f64 if dtype == torch.float64 else ti.f32


@ti.func
def load3(a: ti.template(), b, i):
    """Row ``a[b, i, :]`` of a [B, N, 3] ndarray as a 3-vector."""
    return ti.Vector([a[b, i, 0], a[b, i, 1], a[b, i, 2]])


@ti.func
def store3(a: ti.template(), b, i, x):
    for k in ti.static(range(3)):
        a[b, i, k] = x[k]


@ti.func
def load_mat3(a: ti.template(), b):
    """``a[b]`` of a [B, 3, 3] ndarray as a 3x3 matrix."""
    return ti.Matrix([[a[b, r, c] for c in ti.static(range(3))] for r in ti.static(range(3))])


def check_device(name: str, t: torch.Tensor) -> None:
    """Kernels read tensors zero-copy, so they must live where the Taichi arch runs."""
    want = runtime.torch_device()
    if t.device.type != want:
        raise ValueError(f"{name}: expected a tensor on {want} (where Taichi runs), got {t.device}")


# Items per serial chunk of a parallel loop on the CPU: large enough that per-chunk register reductions
# (instead of per-item atomics) and per-image loads are amortised, small enough (B * N / 256 tasks) to
# keep both cores busy at B = 1. On CUDA a thread per few items is the right shape (untested here).
CPU_CHUNK = 256
CUDA_CHUNK = 4


def chunk_size() -> int:
    return CUDA_CHUNK if runtime.arch() == "cuda" else CPU_CHUNK


@ti.func
def chunk_range(c, chunk, n):
    """Items ``[lo, hi)`` of chunk ``c`` of ``n`` items."""
    return c * chunk, ti.min(n, (c + 1) * chunk)


class AutodiffOp:
    """Wrap ``kernel`` as a differentiable op.

    ``make_outputs(*inputs)`` returns the zero-filled output tensors; ``differentiable`` lists the
    input positions that may receive gradients (the others, e.g. index tensors, never do). Only inputs
    whose gradient torch asks for get a Taichi gradient buffer: each distinct set is one compiled
    gradient kernel (4-7 s), so callers should keep the combinations they use few.
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
