"""Bilinear sampling of a channels-last image at sub-pixel positions, border clamp.

Pixel centres are at integer coordinates ((0, 0) is the top-left pixel's centre). A position is
clamped to [0, W-1] x [0, H-1] first, so outside the image the border value is returned and the
gradient w.r.t. the position is zero there (as torch.clamp: the boundary itself passes gradient).
The left/top tap index is capped at W-2 / H-2 so that a position exactly on the last pixel centre
interpolates with weight 1 on it and its derivative still sees the last interval.
"""
import functools

import torch

from ..kernels.sampling import bilinear_kernel
from ..reference.image_formation import check_float_tensor, check_image
from .bridge import AutodiffOp, check_device

__all__ = ["bilinear_sample"]


@functools.cache
def _op() -> AutodiffOp:
    return AutodiffOp(bilinear_kernel(), lambda img, uv: [uv.new_zeros(uv.shape[0], uv.shape[1], 3)],
                      differentiable=(0, 1))


def bilinear_sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Image values [B, N, 3] at pixel positions ``uv`` [B, N, 2] (x, y); image [B, H, W, 3].

    Bilinear with border clamp (module docstring). float32/float64, contiguous, same dtype.
    Differentiable w.r.t. image and uv.
    """
    b = check_float_tensor("uv", uv, (None, None, 2)).shape[0]
    if b == 0:
        raise ValueError("uv: expected a batch of at least 1, got shape (0, ...)")
    check_device("uv", uv)
    check_image(image, b, "uv", uv)
    return _op()(image, uv)
