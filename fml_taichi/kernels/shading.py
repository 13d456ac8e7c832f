"""Spherical-harmonics shading kernels, irradiance times reflectance (paper Eq. 5), 3 bands = 9
coefficients per channel, with a hand-written backward; the op is :func:`fml_taichi.ops.shading.sh_shading`.

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
  Full-precision values: ``fml_taichi.common.constants.SH_C0 .. SH_C4``.
"""
import functools

import taichi as ti

from ..common import runtime
from ..common.constants import SH_C0, SH_C1, SH_C2, SH_C3, SH_C4
from .helpers import chunk_range, load3, store3

__all__ = ["sh9", "sh9_vjp", "irradiance", "irradiance_vjp", "shade_kernels"]


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


@ti.func
def irradiance(lt, hs):
    """``e_c = sum_k gamma[k, c] H_k``; lt is gamma transposed [3, 9]. Written out: measured faster
    than ``lt @ hs`` here."""
    e = ti.Vector([lt[c, 0] * hs[0] for c in ti.static(range(3))])
    for q in ti.static(range(1, 9)):
        for c in ti.static(range(3)):
            e[c] += lt[c, q] * hs[q]
    return e


@ti.func
def irradiance_vjp(lt, g_e):
    """``dL/dH_k = sum_c gamma[k, c] dL/de_c`` (the transpose of :func:`irradiance`)."""
    g = ti.Vector([lt[0, q] * g_e[0] for q in ti.static(range(9))])
    for c in ti.static(range(1, 3)):
        for q in ti.static(range(9)):
            g[q] += lt[c, q] * g_e[c]
    return g


@functools.cache
def shade_kernels():
    """(forward, backward) kernels; hand-written backward.

    forward args (normals, refl [B,N,3], light [B,9,3], out [B,N,3], dt); backward args (normals,
    refl, light, g_out, g_normals, g_refl, g_light (zero-filled), chunk, dt).
    Why not Taichi's autodiff (measured, N=30k, B=8, float32, 2-core CPU, CPU time): it turned the
    light gradient into 27 atomics per vertex onto one image's 27 coefficients; forward+backward took
    29.8 ms, no better than plain torch (27.9 ms). The hand-written backward reduces each chunk of
    vertices in registers and issues 27 atomics per chunk: 12.6 ms against torch's 22.9 ms.
    """
    runtime.init()

    @ti.kernel
    def shade(normals: ti.types.ndarray(), refl: ti.types.ndarray(), light: ti.types.ndarray(),
              out: ti.types.ndarray(), dt: ti.template()):
        for b, i in ti.ndrange(normals.shape[0], normals.shape[1]):
            lt = ti.Matrix([[light[b, q, c] for q in ti.static(range(9))] for c in ti.static(range(3))])
            store3(out, b, i, load3(refl, b, i) * irradiance(lt, sh9(load3(normals, b, i), dt)))

    @ti.kernel
    def shade_backward(normals: ti.types.ndarray(), refl: ti.types.ndarray(), light: ti.types.ndarray(),
                       g_out: ti.types.ndarray(), g_normals: ti.types.ndarray(), g_refl: ti.types.ndarray(),
                       g_light: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        n = normals.shape[1]
        for b, c in ti.ndrange(normals.shape[0], (n + chunk - 1) // chunk):
            lt = ti.Matrix([[light[b, q, ch] for q in ti.static(range(9))] for ch in ti.static(range(3))])
            a_light = ti.Matrix.zero(dt, 3, 9)
            lo, hi = chunk_range(c, chunk, n)
            for i in range(lo, hi):
                nrm = load3(normals, b, i)
                hs = sh9(nrm, dt)
                g = load3(g_out, b, i)
                store3(g_refl, b, i, g * irradiance(lt, hs))
                g_e = g * load3(refl, b, i)
                a_light += g_e.outer_product(hs)
                store3(g_normals, b, i, sh9_vjp(nrm, irradiance_vjp(lt, g_e), dt))
            for q in ti.static(range(9)):
                for ch in ti.static(range(3)):
                    g_light[b, q, ch] += a_light[ch, q]

    return shade, shade_backward
