"""Backface visibility kernel: 1 where the camera-space normal faces the camera (``dot(n, v) < 0``)."""
import functools

import taichi as ti

from ..common import runtime
from .helpers import load3

__all__ = ["faces_camera", "visibility_kernel"]


@ti.func
def faces_camera(p, n):
    return p.dot(n) < 0


@functools.cache
def visibility_kernel():
    """Args (v_cam [B,N,3], normals [B,N,3], out [B,N], dt); forward only."""
    runtime.init()

    @ti.kernel
    def visibility(v_cam: ti.types.ndarray(), normals: ti.types.ndarray(), out: ti.types.ndarray(),
                   dt: ti.template()):
        for b, i in ti.ndrange(v_cam.shape[0], v_cam.shape[1]):
            out[b, i] = ti.select(faces_camera(load3(v_cam, b, i), load3(normals, b, i)), dt(1.0), dt(0.0))

    return visibility
