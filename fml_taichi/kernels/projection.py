"""Full-perspective projection with intrinsics ``[fx, fy, cx, cy]`` (OpenCV frame, docs/conventions.md).

``u = fx x / z + cx``, ``v = fy y / z + cy`` in pixels, pixel centres at integer coordinates. z is
clamped to ``Z_MIN`` so points at or behind the camera give finite (meaningless) positions; the
image-formation layer marks them invisible.
"""
import functools

import taichi as ti
import torch

from .. import backend
from ..reference.image_formation import Z_MIN, batched_intrinsics, check_points
from ._common import AutodiffOp

__all__ = ["project", "project_point", "project_kernel"]


@ti.func
def project_point(p, fx, fy, cx, cy, dt: ti.template()):
    """(u, v) of camera-space point ``p`` (z clamped to Z_MIN)."""
    z = ti.max(p[2], dt(Z_MIN))
    return fx * p[0] / z + cx, fy * p[1] / z + cy


@functools.cache
def project_kernel():
    """Args (v_cam [B,N,3], intrinsics [B,4], out [B,N,2], dt); Taichi autodiff (elementwise maths)."""
    backend.init()

    @ti.kernel
    def project_k(v_cam: ti.types.ndarray(), k: ti.types.ndarray(), out: ti.types.ndarray(), dt: ti.template()):
        for b, i in ti.ndrange(v_cam.shape[0], v_cam.shape[1]):
            p = ti.Vector([v_cam[b, i, 0], v_cam[b, i, 1], v_cam[b, i, 2]])
            u, v = project_point(p, k[b, 0], k[b, 1], k[b, 2], k[b, 3], dt)
            out[b, i, 0] = u
            out[b, i, 1] = v

    return project_k


@functools.cache
def _op() -> AutodiffOp:
    return AutodiffOp(project_kernel(), lambda v, k: [v.new_zeros(v.shape[0], v.shape[1], 2)],
                      differentiable=(0, 1))


def project(v_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixel positions [B, N, 2] of camera-space points v_cam [B, N, 3].

    intrinsics ``[fx, fy, cx, cy]``, shape (4,) (shared) or (B, 4), same dtype as v_cam.
    Differentiable w.r.t. v_cam and intrinsics.
    """
    b = check_points("v_cam", v_cam)
    k = batched_intrinsics(intrinsics, b, "v_cam", v_cam)
    return _op()(v_cam, k)
