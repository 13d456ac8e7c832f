"""Soft silhouettes (Liu et al. 2019, "Soft Rasterizer"), Taichi, hand-written backward.

Every triangle j contributes ``D_j(p) = sigmoid(delta_j d_j(p)^2 / sigma)`` at pixel centre p, where
``d_j`` is the screen distance (pixels) from p to the triangle's boundary and ``delta_j = +1`` inside
(either winding), -1 outside; the silhouette is ``S = 1 - prod_j (1 - D_j)``. It is smooth in the vertex
positions everywhere, so it gives gradients far from the silhouette (coarse starts), blurred by sigma.

Implementation: per triangle, loop over the pixels of its bounding box grown by ``radius`` px (beyond
it, outside pixels have ``D_j < exp(-radius^2 / sigma)``, which the caller picks negligible); add
``log(1 - D_j) = -softplus(x_j)`` into a per-pixel sum A (atomics); ``S = 1 - exp(A)``. In log form
the backward is stable: ``dS/dx_j = (1 - S) D_j``. Triangles with a corner behind the near plane are
left out.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as objects, not strings.
import functools

import taichi as ti

from ..common import runtime

__all__ = ["soft_silhouette_kernels"]


@ti.func
def _softplus(x):
    return ti.max(x, 0.0) + ti.log(1.0 + ti.exp(-ti.abs(x)))


@ti.func
def _segment(px, py, ax, ay, cx, cy, dt: ti.template()):
    """``(d^2, s, qx, qy)``: squared distance from p to segment a-c, the closest point q = a + s (c - a)."""
    ex, ey = cx - ax, cy - ay
    ee = ex * ex + ey * ey
    s = dt(0.0)
    if ee > 0:
        s = ti.min(ti.max(((px - ax) * ex + (py - ay) * ey) / ee, dt(0.0)), dt(1.0))
    qx, qy = ax + s * ex, ay + s * ey
    return (px - qx) * (px - qx) + (py - qy) * (py - qy), s, qx, qy


@ti.func
def _window(s, radius, h, w, dt: ti.template()):
    """Integer pixel range [x_lo, x_hi] x [y_lo, y_hi] of the triangle's bounding box grown by radius."""
    r = ti.cast(radius, dt)
    x_lo = ti.max(ti.cast(ti.ceil(ti.min(s[0, 0], s[1, 0], s[2, 0]) - r), ti.i32), 0)
    x_hi = ti.min(ti.cast(ti.floor(ti.max(s[0, 0], s[1, 0], s[2, 0]) + r), ti.i32), w - 1)
    y_lo = ti.max(ti.cast(ti.ceil(ti.min(s[0, 1], s[1, 1], s[2, 1]) - r), ti.i32), 0)
    y_hi = ti.min(ti.cast(ti.floor(ti.max(s[0, 1], s[1, 1], s[2, 1]) + r), ti.i32), h - 1)
    return x_lo, x_hi, y_lo, y_hi


@ti.func
def _load(screen: ti.template(), tris: ti.template(), b, f):
    i = ti.Vector([tris[f, 0], tris[f, 1], tris[f, 2]])
    s = ti.Matrix([[screen[b, i[k], c] for c in ti.static(range(3))] for k in ti.static(range(3))])
    return i, s


@ti.func
def _usable(s, max_iz):
    """Corners in front of the near plane, inside the float range of the window computation."""
    ok = True
    for k in ti.static(range(3)):
        ok = ok and s[k, 2] > 0 and s[k, 2] < max_iz and ti.abs(s[k, 0]) < 1e7 and ti.abs(s[k, 1]) < 1e7
    return ok


@ti.func
def _signed_x(s, px, py, inv_sigma, dt: ti.template()):
    """``(x, k, seg_s, qx, qy, delta)``: x = delta d^2 / sigma with the nearest edge k (from corner k to
    corner k+1) and its closest point."""
    best, best_s, bqx, bqy = dt(1e30), dt(0.0), dt(0.0), dt(0.0)
    best_k = 0
    e = ti.Vector([dt(0.0), dt(0.0), dt(0.0)])
    for k in ti.static(range(3)):
        a, c = k, (k + 1) % 3
        d2, sk, qx, qy = _segment(px, py, s[a, 0], s[a, 1], s[c, 0], s[c, 1], dt)
        e[k] = (s[c, 0] - s[a, 0]) * (py - s[a, 1]) - (s[c, 1] - s[a, 1]) * (px - s[a, 0])
        if d2 < best:
            best, best_s, bqx, bqy = d2, sk, qx, qy
            best_k = k
    inside = (e[0] > 0 and e[1] > 0 and e[2] > 0) or (e[0] < 0 and e[1] < 0 and e[2] < 0)
    delta = dt(1.0) if inside else dt(-1.0)
    return delta * best * inv_sigma, best_k, best_s, bqx, bqy, delta


@functools.cache
def soft_silhouette_kernels():
    """(forward, backward) Taichi kernels.

    forward (screen [B,N,3] (u, v, iz), tris [F,3] i32, log_sum [B,H,W] zero-filled, sil [B,H,W],
    inv_sigma, radius i32, max_iz, dt); backward (screen, tris, sil, g_sil, g_screen [B,N,3]
    zero-filled, inv_sigma, radius, max_iz, dt).
    """
    runtime.init()

    @ti.kernel
    def forward(screen: ti.types.ndarray(), tris: ti.types.ndarray(), log_sum: ti.types.ndarray(),
                sil: ti.types.ndarray(), inv_sigma: ti.f64, radius: ti.i32, max_iz: ti.f64, dt: ti.template()):
        h, w = sil.shape[1], sil.shape[2]
        for b, f in ti.ndrange(screen.shape[0], tris.shape[0]):
            _, s = _load(screen, tris, b, f)
            if _usable(s, max_iz):
                x_lo, x_hi, y_lo, y_hi = _window(s, radius, h, w, dt)
                for y in range(y_lo, y_hi + 1):
                    for x in range(x_lo, x_hi + 1):
                        xs, _k, _sk, _qx, _qy, _delta = _signed_x(s, ti.cast(x, dt), ti.cast(y, dt),
                                                                  ti.cast(inv_sigma, dt), dt)
                        log_sum[b, y, x] += -_softplus(xs)
        # A second top-level loop: Taichi runs it after the scatter above has finished.
        for p in range(sil.shape[0] * h * w):
            b, y, x = p // (h * w), (p // w) % h, p % w
            sil[b, y, x] = dt(1.0) - ti.exp(log_sum[b, y, x])

    @ti.kernel
    def backward(screen: ti.types.ndarray(), tris: ti.types.ndarray(), sil: ti.types.ndarray(),
                 g_sil: ti.types.ndarray(), g_screen: ti.types.ndarray(), inv_sigma: ti.f64, radius: ti.i32,
                 max_iz: ti.f64, dt: ti.template()):
        h, w = sil.shape[1], sil.shape[2]
        for b, f in ti.ndrange(screen.shape[0], tris.shape[0]):
            idx, s = _load(screen, tris, b, f)
            if _usable(s, max_iz):
                isg = ti.cast(inv_sigma, dt)
                x_lo, x_hi, y_lo, y_hi = _window(s, radius, h, w, dt)
                g = ti.Matrix.zero(dt, 3, 2)
                for y in range(y_lo, y_hi + 1):
                    for x in range(x_lo, x_hi + 1):
                        px, py = ti.cast(x, dt), ti.cast(y, dt)
                        xs, k, sk, qx, qy, delta = _signed_x(s, px, py, isg, dt)
                        d_j = dt(1.0) / (dt(1.0) + ti.exp(-xs))
                        # dS/dx = (1 - S) D_j; dx/d(d^2) = delta / sigma; d(d^2)/dq = -2 (p - q).
                        g_d2 = g_sil[b, y, x] * (dt(1.0) - sil[b, y, x]) * d_j * delta * isg
                        gqx, gqy = -dt(2.0) * (px - qx) * g_d2, -dt(2.0) * (py - qy) * g_d2
                        # q = (1 - s) a + s c, with s held (its variation is orthogonal, or it is clamped).
                        for kk in ti.static(range(3)):
                            if kk == k:
                                g[kk, 0] += (dt(1.0) - sk) * gqx
                                g[kk, 1] += (dt(1.0) - sk) * gqy
                                g[(kk + 1) % 3, 0] += sk * gqx
                                g[(kk + 1) % 3, 1] += sk * gqy
                for k in ti.static(range(3)):
                    g_screen[b, idx[k], 0] += g[k, 0]
                    g_screen[b, idx[k], 1] += g[k, 1]

    return forward, backward
