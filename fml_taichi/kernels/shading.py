"""Spherical-harmonics irradiance times reflectance (paper Eq. 5), 3 bands = 9 coefficients per channel.

Convention (docs/conventions.md points here):
- ``c = r * sum_b gamma_b H_b(n)`` per RGB channel (Hadamard product with the reflectance ``r``),
  where ``gamma`` ([B, 9, 3], ``light``) are irradiance coefficients applied directly to the basis:
  a uniform light of 1 is ``gamma_0 = 1 / 0.282095`` and all other coefficients 0.
- ``n`` are unit normals in camera space.
- Real orthonormal SH basis, order (l, m) = (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0),
  (2,1), (2,2), with n = (x, y, z):
  ``H_0 = 0.282095``; ``H_1..3 = 0.488603 * (y, z, x)``;
  ``H_4 = 1.092548 xy``, ``H_5 = 1.092548 yz``, ``H_6 = 0.315392 (3 z^2 - 1)``, ``H_7 = 1.092548 xz``,
  ``H_8 = 0.546274 (x^2 - y^2)``.
  Full-precision values: ``fml_taichi.reference.image_formation.SH_C0 .. SH_C4``.
"""
import functools

import taichi as ti
import torch

from .. import backend
from ..reference.image_formation import (SH_C0, SH_C1, SH_C2, SH_C3, SH_C4, check_float_tensor, check_light,
                                         check_points, sh_basis)
from .._validate import check_same
from ._common import AutodiffOp, load3

__all__ = ["sh_basis", "sh_shading", "sh9", "sh9_vjp", "shade_kernel"]


@ti.func
def sh9(n, dt: ti.template()):
    """The 9 basis values at unit normal ``n`` (constants cast to ``dt`` exactly: see the notes)."""
    x, y, z = n[0], n[1], n[2]
    c1, c2 = dt(SH_C1), dt(SH_C2)
    return ti.Vector([
        dt(SH_C0),
        c1 * y, c1 * z, c1 * x,
        c2 * x * y, c2 * y * z, dt(SH_C3) * (dt(3.0) * z * z - dt(1.0)), c2 * x * z,
        dt(SH_C4) * (x * x - y * y),
    ])


@ti.func
def sh9_vjp(n, g, dt: ti.template()):
    """``sum_k g_k dH_k/dn``: the gradient w.r.t. ``n`` given the gradient ``g`` of the 9 values."""
    x, y, z = n[0], n[1], n[2]
    c1, c2, c4x2 = dt(SH_C1), dt(SH_C2), dt(2.0 * SH_C4)
    return ti.Vector([
        c1 * g[3] + c2 * (g[4] * y + g[7] * z) + c4x2 * g[8] * x,
        c1 * g[1] + c2 * (g[4] * x + g[5] * z) - c4x2 * g[8] * y,
        c1 * g[2] + c2 * (g[5] * y + g[7] * x) + dt(6.0 * SH_C3) * g[6] * z,
    ])


@functools.cache
def shade_kernel():
    """Args (normals, refl [B,N,3], light [B,9,3], out [B,N,3], dt); Taichi autodiff.

    The light gradient is a reduction over N done by atomics (27 per vertex onto one image's 27
    coefficients); measured acceptable for a generic op. The fused image-formation kernel reduces in
    registers instead.
    """
    backend.init()

    @ti.kernel
    def shade(normals: ti.types.ndarray(), refl: ti.types.ndarray(), light: ti.types.ndarray(),
              out: ti.types.ndarray(), dt: ti.template()):
        for b, i in ti.ndrange(normals.shape[0], normals.shape[1]):
            h = sh9(load3(normals, b, i), dt)
            for c in ti.static(range(3)):
                e = dt(0.0)
                for k in ti.static(range(9)):
                    e += light[b, k, c] * h[k]
                out[b, i, c] = refl[b, i, c] * e

    return shade


@functools.cache
def _op() -> AutodiffOp:
    return AutodiffOp(shade_kernel(), lambda n, r, l: [torch.zeros_like(r)], differentiable=(0, 1, 2))


def sh_shading(normals: torch.Tensor, reflectance: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Shaded colours ``c = r * sum_b gamma_b H_b(n)`` [B, N, 3] (convention in the module docstring).

    normals [B, N, 3] unit, camera space; reflectance [B, N, 3]; light [B, 9, 3] SH irradiance
    coefficients per RGB channel. All float32 or all float64, contiguous. Differentiable w.r.t. all.
    """
    b = check_points("normals", normals)
    check_float_tensor("reflectance", reflectance, tuple(normals.shape))
    check_same("normals", normals, "reflectance", reflectance)
    check_light(light, b, "normals", normals)
    return _op()(normals, reflectance, light)
