"""Spherical-harmonics irradiance times reflectance (paper Eq. 5), 3 bands = 9 coefficients per channel.

``c = r * sum_b gamma_b H_b(n)`` per RGB channel, ``gamma`` = ``light`` [B, 9, 3], ``n`` unit camera-space
normals. The convention (basis order, constants, what a uniform light is) is stated once in
:mod:`fml_taichi.kernels.shading`.
"""
import torch
from torch.autograd.function import once_differentiable

from ..common.checks import check_same
from ..kernels.shading import shade_kernels
from ..reference.image_formation import check_float_tensor, check_light, check_points, sh_basis
from .bridge import check_device, chunk_size, detached, ti_float

__all__ = ["sh_basis", "sh_shading"]


class _SHShading(torch.autograd.Function):
    @staticmethod
    def forward(ctx, normals, reflectance, light):
        shade, _ = shade_kernels()
        out = torch.empty_like(reflectance)
        shade(*detached([normals, reflectance, light, out]), ti_float(out.dtype))
        ctx.save_for_backward(normals, reflectance, light)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        _, shade_backward = shade_kernels()
        normals, reflectance, light = detached(ctx.saved_tensors)  # see bridge.detached
        g_n, g_r, g_l = torch.empty_like(normals), torch.empty_like(reflectance), torch.zeros_like(light)
        shade_backward(normals, reflectance, light, g_out.contiguous(), g_n, g_r, g_l, chunk_size(),
                       ti_float(g_n.dtype))
        return tuple(g if need else None for g, need in zip((g_n, g_r, g_l), ctx.needs_input_grad))


def sh_shading(normals: torch.Tensor, reflectance: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Shaded colours ``c = r * sum_b gamma_b H_b(n)`` [B, N, 3] (convention in kernels/shading.py).

    normals [B, N, 3] unit, camera space; reflectance [B, N, 3]; light [B, 9, 3] SH irradiance
    coefficients per RGB channel. All float32 or all float64, contiguous. Differentiable w.r.t. all.
    """
    b = check_points("normals", normals)
    check_device("normals", normals)
    check_float_tensor("reflectance", reflectance, tuple(normals.shape))
    check_same("normals", normals, "reflectance", reflectance)
    check_light(light, b, "normals", normals)
    return _SHShading.apply(normals, reflectance, light)
