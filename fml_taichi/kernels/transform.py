"""Rigid transform kernel ``out = R v + t`` (forward only: the op's backward is three batched torch
products, see :mod:`fml_taichi.ops.transform`)."""
import functools

import taichi as ti

from ..common import runtime
from .helpers import chunk_range, load3, load_mat3, store3

__all__ = ["transform_kernel"]


@functools.cache
def transform_kernel():
    """``out[b, i] = R[b] @ v[b, i] + t[b]``; args (v [B,N,3], R [B,3,3], t [B,3], out [B,N,3], chunk, dt)."""
    runtime.init()

    @ti.kernel
    def transform(v: ti.types.ndarray(), rot: ti.types.ndarray(), t: ti.types.ndarray(),
                  out: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        n = v.shape[1]
        for b, c in ti.ndrange(v.shape[0], (n + chunk - 1) // chunk):
            rm = load_mat3(rot, b)
            tb = ti.Vector([t[b, 0], t[b, 1], t[b, 2]])
            lo, hi = chunk_range(c, chunk, n)
            for i in range(lo, hi):
                store3(out, b, i, rm @ load3(v, b, i) + tb)

    return transform
