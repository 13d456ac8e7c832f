"""Bilinear texture lookup at per-pixel uv (Taichi), hand-written backward w.r.t. texture and uv.

Conventions: ``uv`` in [0, 1]^2, u along the texture's width, v along its height with v = 0 the first
row (image order, y down); texel (i, j)'s centre is at ``((j + 0.5) / W, (i + 0.5) / H)``, i.e. the
texel coordinates are ``x = u W - 1/2``, ``y = v H - 1/2``. Outside the texel centres the lookup clamps
to the border (the uv gradient is zero there), as ``kernels.sampling`` does for images.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as objects, not strings.
import functools

import taichi as ti

from ..common import runtime

__all__ = ["texture_kernels"]


@ti.func
def _taps(u, v, th, tw, dt: ti.template()):
    """``(x0, x1, y0, y1, fx, fy, inside_x, inside_y)`` for texture size (th, tw)."""
    x = u * ti.cast(tw, dt) - dt(0.5)
    y = v * ti.cast(th, dt) - dt(0.5)
    xc = ti.min(ti.max(x, dt(0.0)), ti.cast(tw - 1, dt))
    yc = ti.min(ti.max(y, dt(0.0)), ti.cast(th - 1, dt))
    x0 = ti.min(ti.cast(ti.floor(xc), ti.i32), ti.max(tw - 2, 0))
    y0 = ti.min(ti.cast(ti.floor(yc), ti.i32), ti.max(th - 2, 0))
    return (x0, ti.min(x0 + 1, tw - 1), y0, ti.min(y0 + 1, th - 1), xc - ti.cast(x0, dt), yc - ti.cast(y0, dt),
            x == xc, y == yc)


@functools.cache
def texture_kernels():
    """(forward, backward) Taichi kernels.

    forward (tex [Bt,Ht,Wt,C] with Bt = 1 or B, uv [B,H,W,2], out [B,H,W,C], dt); backward (tex, uv,
    g_out, g_tex [Bt,Ht,Wt,C] zero-filled, g_uv [B,H,W,2], want_tex i32, dt).
    """
    runtime.init()

    @ti.kernel
    def forward(tex: ti.types.ndarray(), uv: ti.types.ndarray(), out: ti.types.ndarray(), dt: ti.template()):
        h, w, th, tw, n_ch = uv.shape[1], uv.shape[2], tex.shape[1], tex.shape[2], tex.shape[3]
        shared = tex.shape[0] == 1
        for p in range(uv.shape[0] * h * w):
            b, y, x = p // (h * w), (p // w) % h, p % w
            bt = 0 if shared else b
            x0, x1, y0, y1, fx, fy, _, _ = _taps(uv[b, y, x, 0], uv[b, y, x, 1], th, tw, dt)
            for c in range(n_ch):
                top = tex[bt, y0, x0, c] + fx * (tex[bt, y0, x1, c] - tex[bt, y0, x0, c])
                bottom = tex[bt, y1, x0, c] + fx * (tex[bt, y1, x1, c] - tex[bt, y1, x0, c])
                out[b, y, x, c] = top + fy * (bottom - top)

    @ti.kernel
    def backward(tex: ti.types.ndarray(), uv: ti.types.ndarray(), g_out: ti.types.ndarray(),
                 g_tex: ti.types.ndarray(), g_uv: ti.types.ndarray(), want_tex: ti.i32, dt: ti.template()):
        h, w, th, tw, n_ch = uv.shape[1], uv.shape[2], tex.shape[1], tex.shape[2], tex.shape[3]
        shared = tex.shape[0] == 1
        for p in range(uv.shape[0] * h * w):
            b, y, x = p // (h * w), (p // w) % h, p % w
            bt = 0 if shared else b
            x0, x1, y0, y1, fx, fy, in_x, in_y = _taps(uv[b, y, x, 0], uv[b, y, x, 1], th, tw, dt)
            g_fx, g_fy = dt(0.0), dt(0.0)
            for c in range(n_ch):
                g = g_out[b, y, x, c]
                t00, t01, t10, t11 = tex[bt, y0, x0, c], tex[bt, y0, x1, c], tex[bt, y1, x0, c], tex[bt, y1, x1, c]
                top = t00 + fx * (t01 - t00)
                bottom = t10 + fx * (t11 - t10)
                g_fx += g * ((t01 - t00) + fy * ((t11 - t10) - (t01 - t00)))
                g_fy += g * (bottom - top)
                if want_tex != 0:
                    g_tex[bt, y0, x0, c] += g * (1 - fx) * (1 - fy)
                    g_tex[bt, y0, x1, c] += g * fx * (1 - fy)
                    g_tex[bt, y1, x0, c] += g * (1 - fx) * fy
                    g_tex[bt, y1, x1, c] += g * fx * fy
            g_uv[b, y, x, 0] = g_fx * ti.cast(tw, dt) if in_x else dt(0.0)
            g_uv[b, y, x, 1] = g_fy * ti.cast(th, dt) if in_y else dt(0.0)

    return forward, backward
