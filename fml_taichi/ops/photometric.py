"""The l2,1 photometric loss of paper Eq. 9 over visible vertices, per image.

``loss[b] = (1/N) sum_i visible_i * sqrt(||sampled_i - colors_i||^2 + LOSS_EPS)`` with N all vertices
(visible or not), as in the paper. LOSS_EPS (1e-10, :mod:`fml_taichi.common.constants`) keeps the gradient finite at a
perfectly fitted vertex, where d||x||/dx = x/||x|| is 0/0.
"""
import torch
from torch.autograd.function import once_differentiable

from ..common.checks import check_same
from ..kernels.photometric import photometric_kernels
from ..reference.image_formation import check_float_tensor, check_points
from .bridge import check_device, chunk_size, detached, ti_float

__all__ = ["photometric_loss"]


class _Photometric(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sampled, colors, visible):
        photometric, _ = photometric_kernels()
        loss = sampled.new_zeros(sampled.shape[0])
        photometric(*detached([sampled, colors, visible, loss]), chunk_size(), ti_float(loss.dtype))
        ctx.save_for_backward(sampled, colors, visible)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss):
        _, photometric_backward = photometric_kernels()
        sampled, colors, visible = detached(ctx.saved_tensors)  # see bridge.detached
        g_s, g_c = torch.empty_like(sampled), torch.empty_like(colors)
        photometric_backward(sampled, colors, visible, g_loss.contiguous(), g_s, g_c, ti_float(g_s.dtype))
        return (g_s if ctx.needs_input_grad[0] else None), (g_c if ctx.needs_input_grad[1] else None), None


def photometric_loss(sampled: torch.Tensor, colors: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Per-image Eq. 9 loss [B] (module docstring).

    sampled, colors [B, N, 3]; visible [B, N] {0, 1} mask (no gradient flows into it). Same float
    dtype, contiguous. Differentiable w.r.t. sampled and colors.
    """
    check_points("sampled", sampled)
    check_device("sampled", sampled)
    check_float_tensor("colors", colors, tuple(sampled.shape))
    check_float_tensor("visible", visible, tuple(sampled.shape[:2]))
    check_same("sampled", sampled, "colors", colors)
    check_same("sampled", sampled, "visible", visible)
    return _Photometric.apply(sampled, colors, visible.detach())
