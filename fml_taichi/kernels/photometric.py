"""The l2,1 photometric loss of paper Eq. 9 over visible vertices, per image.

``loss[b] = (1/N) sum_i visible_i * sqrt(||sampled_i - colors_i||^2 + LOSS_EPS)`` with N all vertices
(visible or not), as in the paper. LOSS_EPS (1e-10, reference module) keeps the gradient finite at a
perfectly fitted vertex, where d||x||/dx = x/||x|| is 0/0.
"""
import functools

import taichi as ti
import torch

from .. import backend
from ..reference.image_formation import LOSS_EPS, check_float_tensor, check_points
from .._validate import check_same
from ._common import AutodiffOp, load3

__all__ = ["photometric_loss", "l2_eps", "photometric_kernel"]


@ti.func
def l2_eps(d, dt: ti.template()):
    return ti.sqrt(d.dot(d) + dt(LOSS_EPS))


@functools.cache
def photometric_kernel():
    """Args (sampled, colors [B,N,3], visible [B,N], loss [B] zero-filled, dt); Taichi autodiff.

    The sum over N is an atomic add into loss[b]; its reverse is a broadcast read, so the backward
    is cheap and autodiff is right here.
    """
    backend.init()

    @ti.kernel
    def photometric(sampled: ti.types.ndarray(), colors: ti.types.ndarray(), visible: ti.types.ndarray(),
                    loss: ti.types.ndarray(), dt: ti.template()):
        for b, i in ti.ndrange(sampled.shape[0], sampled.shape[1]):
            d = load3(sampled, b, i) - load3(colors, b, i)
            loss[b] += visible[b, i] * l2_eps(d, dt) / ti.cast(sampled.shape[1], dt)

    return photometric


@functools.cache
def _op() -> AutodiffOp:
    return AutodiffOp(photometric_kernel(), lambda s, c, vis: [s.new_zeros(s.shape[0])], differentiable=(0, 1))


def photometric_loss(sampled: torch.Tensor, colors: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Per-image Eq. 9 loss [B] (module docstring).

    sampled, colors [B, N, 3]; visible [B, N] {0, 1} mask (no gradient flows into it). Same float
    dtype, contiguous. Differentiable w.r.t. sampled and colors.
    """
    check_points("sampled", sampled)
    check_float_tensor("colors", colors, tuple(sampled.shape))
    check_float_tensor("visible", visible, tuple(sampled.shape[:2]))
    check_same("sampled", sampled, "colors", colors)
    check_same("sampled", sampled, "visible", visible)
    return _op()(sampled, colors, visible.detach())
