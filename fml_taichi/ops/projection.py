"""Full-perspective projection with intrinsics ``[fx, fy, cx, cy]`` (OpenCV frame, docs/conventions.md).

``u = fx x / z + cx``, ``v = fy y / z + cy`` in pixels, pixel centres at integer coordinates. z is
clamped to ``Z_MIN`` so points at or behind the camera give finite (meaningless) positions; the
image-formation layer marks them invisible.
"""
import torch
from torch.autograd.function import once_differentiable

from ..kernels.projection import project_kernels
from ..reference.image_formation import batched_intrinsics, check_points
from .bridge import check_device, chunk_size, detached, ti_float

__all__ = ["project"]


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v_cam, k):
        project_k, _ = project_kernels()
        out = v_cam.new_empty(v_cam.shape[0], v_cam.shape[1], 2)
        project_k(*detached([v_cam, k, out]), chunk_size(), ti_float(out.dtype))
        ctx.save_for_backward(v_cam, k)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_uv):
        _, project_backward = project_kernels()
        v_cam, k = detached(ctx.saved_tensors)  # see bridge.detached
        g_v, g_k = torch.empty_like(v_cam), torch.zeros_like(k)
        project_backward(v_cam, k, g_uv.contiguous(), g_v, g_k, chunk_size(), ti_float(g_v.dtype))
        return (g_v if ctx.needs_input_grad[0] else None), (g_k if ctx.needs_input_grad[1] else None)


def project(v_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixel positions [B, N, 2] of camera-space points v_cam [B, N, 3].

    intrinsics ``[fx, fy, cx, cy]``, shape (4,) (shared) or (B, 4), same dtype as v_cam.
    Differentiable w.r.t. v_cam and intrinsics.
    """
    b = check_points("v_cam", v_cam)
    check_device("v_cam", v_cam)
    k = batched_intrinsics(intrinsics, b, "v_cam", v_cam)
    return _Project.apply(v_cam, k)
