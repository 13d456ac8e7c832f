"""Backface-culling visibility: a vertex is visible when its camera-space normal faces the camera.

With the camera at the origin, that is ``dot(n_cam, v_cam) < 0`` (docs/conventions.md). The result
is a {0, 1} mask in the points' dtype and carries no gradient (a step function). The image-formation
layer additionally requires z > Z_MIN and a position inside the image.
"""
import torch

from ..common.checks import check_same
from ..kernels.visibility import visibility_kernel
from ..reference.image_formation import check_float_tensor, check_points
from .bridge import check_device, ti_float

__all__ = ["backface_visibility"]


def backface_visibility(v_cam: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
    """[B, N] float {0, 1}: 1 where ``dot(normals_cam, v_cam) < 0``. Not differentiable.

    v_cam, normals_cam [B, N, 3] camera space, same float dtype, contiguous.
    """
    check_points("v_cam", v_cam)
    check_device("v_cam", v_cam)
    check_float_tensor("normals_cam", normals_cam, tuple(v_cam.shape))
    check_same("v_cam", v_cam, "normals_cam", normals_cam)
    out = v_cam.new_empty(v_cam.shape[:2])
    visibility_kernel()(v_cam.detach(), normals_cam.detach(), out, ti_float(out.dtype))
    return out
