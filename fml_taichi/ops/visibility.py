"""Backface-culling visibility: a vertex is visible when its camera-space normal faces the camera.

With the camera at the origin, that is ``dot(n_cam, v_cam) < 0`` (docs/conventions.md). The result
is a {0, 1} mask in the points' dtype and carries no gradient (a step function). The image-formation
layer additionally requires z > Z_MIN and a position inside the image.
"""
import functools

import taichi as ti
import torch

from ..common import runtime
from ..reference.image_formation import check_float_tensor, check_points
from ..common.checks import check_same
from ._common import check_device, load3

__all__ = ["backface_visibility", "faces_camera", "visibility_kernel"]


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


def backface_visibility(v_cam: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
    """[B, N] float {0, 1}: 1 where ``dot(normals_cam, v_cam) < 0``. Not differentiable.

    v_cam, normals_cam [B, N, 3] camera space, same float dtype, contiguous.
    """
    check_points("v_cam", v_cam)
    check_device("v_cam", v_cam)
    check_float_tensor("normals_cam", normals_cam, tuple(v_cam.shape))
    check_same("v_cam", v_cam, "normals_cam", normals_cam)
    out = v_cam.new_empty(v_cam.shape[:2])
    visibility_kernel()(v_cam.detach(), normals_cam.detach(), out, ti.f64 if out.dtype == torch.float64 else ti.f32)
    return out
