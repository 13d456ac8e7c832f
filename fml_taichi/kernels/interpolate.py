"""Differentiable per-pixel barycentrics and attribute interpolation (Taichi), hand-written backwards.

Two steps turn a rasterised triangle id into differentiable per-pixel values:

1. :func:`barycentric_kernels`: from the visible triangle's id and the screen positions of its corners
   ``(u, v, 1/z)`` recompute, in the caller's precision, its perspective-correct barycentrics and depth.
   The visibility (which triangle) is a constant; the weights are smooth functions of the corners, so
   the backward scatters pixel gradients onto the corners. This is the "interior" half of the position
   gradient; the silhouette half comes from ``kernels.antialias``.
2. :func:`interpolate_kernels`: ``out = sum_k b_k attr[tri[f, k]]``, with gradients w.r.t. the
   attributes (scatter) and the barycentrics (gather).

Maths (pixel centre p, corners s_k = (u_k, v_k), iz_k = 1/z_k):
``e_0 = edge(s_1, s_2, p)``, ``e_1 = edge(s_2, s_0, p)``, ``e_2 = edge(s_0, s_1, p)`` with
``edge(a, c, p) = (c_x - a_x)(p_y - a_y) - (c_y - a_y)(p_x - a_x)`` (screen-space barycentrics up to a
common factor); ``D = sum_k e_k iz_k``; ``b_k = e_k iz_k / D``; ``depth = sum_k e_k / D``.

Why hand-written: Taichi autodiff needs the whole kernel in one differentiable top-level loop and costs
seconds of compile per input combination; these backwards are a few lines of the chain rule, checked by
float64 gradcheck in ``tests/test_raster_ops.py``. Background pixels (id < 0) get zeros and no gradient.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as objects, not strings.
import functools

import taichi as ti

from ..common import runtime
from .helpers import chunk_range

__all__ = ["barycentric_kernels", "interpolate_kernels", "edge_fn", "edge_fn_vjp", "pixel_of", "next_pixel"]


# Pixel loops run over chunks of ``chunk`` consecutive pixels of the flattened [B, H, W] image (``chunk``
# is ``ops.bridge.chunk_size()``: a row's worth on the CPU, a few pixels per thread on CUDA). Only the
# first pixel of a chunk is decoded with divisions; the rest step x, y, b: three integer divisions per
# pixel made a plain image pass ~3x slower on the CPU than stepping.
@ti.func
def pixel_of(p, h, w):
    """(b, y, x) of flat pixel index p of a [B, h, w] image."""
    return p // (h * w), (p // w) % h, p % w


@ti.func
def next_pixel(b, y, x, h, w):
    """The pixel after (b, y, x) in row-major order."""
    x += 1
    if x == w:
        x = 0
        y += 1
        if y == h:
            y = 0
            b += 1
    return b, y, x


@ti.func
def edge_fn(ax, ay, cx, cy, px, py):
    """Twice the signed area of (a, c, p): positive when p is left of a->c in a y-down image."""
    return (cx - ax) * (py - ay) - (cy - ay) * (px - ax)


@ti.func
def edge_fn_vjp(g, ax, ay, cx, cy, px, py):
    """``g`` times the gradient of :func:`edge_fn` w.r.t. (ax, ay, cx, cy)."""
    return ti.Vector([g * (cy - py), g * (px - cx), g * (py - ay), g * (ax - px)])


@ti.func
def _corners(screen: ti.template(), tris: ti.template(), b, f):
    """Vertex indices and (u, v, iz) rows of triangle f in image b."""
    i = ti.Vector([tris[f, 0], tris[f, 1], tris[f, 2]])
    s = ti.Matrix([[screen[b, i[k], c] for c in ti.static(range(3))] for k in ti.static(range(3))])
    return i, s


@ti.func
def _edges(s, px, py):
    return ti.Vector([edge_fn(s[1, 0], s[1, 1], s[2, 0], s[2, 1], px, py),
                      edge_fn(s[2, 0], s[2, 1], s[0, 0], s[0, 1], px, py),
                      edge_fn(s[0, 0], s[0, 1], s[1, 0], s[1, 1], px, py)])


@functools.cache
def barycentric_kernels():
    """(forward, backward) Taichi kernels.

    forward (screen [B,N,3] (u, v, iz), tris [F,3] i32, tri_id [B,H,W] i32, bary [B,H,W,3],
    depth [B,H,W], chunk, dt); backward (screen, tris, tri_id, bary, depth, g_bary, g_depth,
    g_screen [B,N,3] zero-filled, chunk, dt): adds the corners' gradients into g_screen (atomics).
    ``chunk``: pixels per serial chunk (``ops.bridge.chunk_size()``).
    """
    runtime.init()

    @ti.kernel
    def forward(screen: ti.types.ndarray(), tris: ti.types.ndarray(), tri_id: ti.types.ndarray(),
                bary: ti.types.ndarray(), depth: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        h, w = tri_id.shape[1], tri_id.shape[2]
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                f = tri_id[b, y, x]
                if f < 0:
                    depth[b, y, x] = dt(0.0)
                    for k in ti.static(range(3)):
                        bary[b, y, x, k] = dt(0.0)
                else:
                    _, s = _corners(screen, tris, b, f)
                    e = _edges(s, ti.cast(x, dt), ti.cast(y, dt))
                    we = ti.Vector([e[k] * s[k, 2] for k in ti.static(range(3))])
                    inv_d = dt(1.0) / (we[0] + we[1] + we[2])
                    depth[b, y, x] = (e[0] + e[1] + e[2]) * inv_d
                    for k in ti.static(range(3)):
                        bary[b, y, x, k] = we[k] * inv_d
                b, y, x = next_pixel(b, y, x, h, w)

    @ti.kernel
    def backward(screen: ti.types.ndarray(), tris: ti.types.ndarray(), tri_id: ti.types.ndarray(),
                 bary: ti.types.ndarray(), depth: ti.types.ndarray(), g_bary: ti.types.ndarray(),
                 g_depth: ti.types.ndarray(), g_screen: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        h, w = tri_id.shape[1], tri_id.shape[2]
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                f = tri_id[b, y, x]
                if f >= 0:
                    _corner_grads(screen, tris, bary, depth, g_bary, g_depth, g_screen, b, y, x, f, dt)
                b, y, x = next_pixel(b, y, x, h, w)

    return forward, backward


@ti.func
def _corner_grads(screen: ti.template(), tris: ti.template(), bary: ti.template(), depth: ti.template(),
                  g_bary: ti.template(), g_depth: ti.template(), g_screen: ti.template(), b, y, x, f,
                  dt: ti.template()):
    """Scatter pixel (b, y, x)'s barycentric and depth gradients onto triangle f's corners."""
    px, py = ti.cast(x, dt), ti.cast(y, dt)
    idx, s = _corners(screen, tris, b, f)
    e = _edges(s, px, py)
    inv_d = dt(1.0) / (e[0] * s[0, 2] + e[1] * s[1, 2] + e[2] * s[2, 2])
    bk = ti.Vector([bary[b, y, x, k] for k in ti.static(range(3))])
    gb = ti.Vector([g_bary[b, y, x, k] for k in ti.static(range(3))])
    gd, z = g_depth[b, y, x], depth[b, y, x]
    dot = gb.dot(bk)
    g_e = ti.Vector([(s[k, 2] * (gb[k] - dot) + gd * (dt(1.0) - z * s[k, 2])) * inv_d
                     for k in ti.static(range(3))])
    for k in ti.static(range(3)):
        g_screen[b, idx[k], 2] += e[k] * (gb[k] - dot - gd * z) * inv_d
    # e_k is the edge function of the two corners other than k, in cyclic order.
    for k in ti.static(range(3)):
        a, c = (k + 1) % 3, (k + 2) % 3
        ga = edge_fn_vjp(g_e[k], s[a, 0], s[a, 1], s[c, 0], s[c, 1], px, py)
        g_screen[b, idx[a], 0] += ga[0]
        g_screen[b, idx[a], 1] += ga[1]
        g_screen[b, idx[c], 0] += ga[2]
        g_screen[b, idx[c], 1] += ga[3]


@functools.cache
def interpolate_kernels():
    """(forward, backward) Taichi kernels.

    forward (attr [Ba,N,C] with Ba = 1 or B, tris [F,3] i32, tri_id [B,H,W] i32, bary [B,H,W,3],
    out [B,H,W,C], chunk, dt); backward (attr, tris, tri_id, bary, g_out, g_attr [Ba,N,C] zero-filled,
    g_bary [B,H,W,3], want_attr i32, want_bary i32, chunk, dt).
    """
    runtime.init()

    @ti.kernel
    def forward(attr: ti.types.ndarray(), tris: ti.types.ndarray(), tri_id: ti.types.ndarray(),
                bary: ti.types.ndarray(), out: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        h, w, n_ch = tri_id.shape[1], tri_id.shape[2], attr.shape[2]
        shared = attr.shape[0] == 1
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                f = tri_id[b, y, x]
                if f < 0:
                    for c in range(n_ch):
                        out[b, y, x, c] = dt(0.0)
                else:
                    ba = 0 if shared else b
                    i0, i1, i2 = tris[f, 0], tris[f, 1], tris[f, 2]
                    w0, w1, w2 = bary[b, y, x, 0], bary[b, y, x, 1], bary[b, y, x, 2]
                    for c in range(n_ch):
                        out[b, y, x, c] = w0 * attr[ba, i0, c] + w1 * attr[ba, i1, c] + w2 * attr[ba, i2, c]
                b, y, x = next_pixel(b, y, x, h, w)

    @ti.kernel
    def backward(attr: ti.types.ndarray(), tris: ti.types.ndarray(), tri_id: ti.types.ndarray(),
                 bary: ti.types.ndarray(), g_out: ti.types.ndarray(), g_attr: ti.types.ndarray(),
                 g_bary: ti.types.ndarray(), want_attr: ti.i32, want_bary: ti.i32, chunk: ti.i32,
                 dt: ti.template()):
        h, w, n_ch = tri_id.shape[1], tri_id.shape[2], attr.shape[2]
        shared = attr.shape[0] == 1
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                f = tri_id[b, y, x]
                gb = ti.Vector([dt(0.0), dt(0.0), dt(0.0)])
                if f >= 0:
                    ba = 0 if shared else b
                    i = ti.Vector([tris[f, 0], tris[f, 1], tris[f, 2]])
                    wk = ti.Vector([bary[b, y, x, 0], bary[b, y, x, 1], bary[b, y, x, 2]])
                    for c in range(n_ch):
                        g = g_out[b, y, x, c]
                        for k in ti.static(range(3)):
                            if want_attr != 0:
                                g_attr[ba, i[k], c] += wk[k] * g
                            gb[k] += attr[ba, i[k], c] * g
                if want_bary != 0:
                    for k in ti.static(range(3)):
                        g_bary[b, y, x, k] = gb[k]
                b, y, x = next_pixel(b, y, x, h, w)

    return forward, backward
