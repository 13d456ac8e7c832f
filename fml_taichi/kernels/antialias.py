"""Analytic silhouette-edge antialiasing (Laine et al. 2020, "Modular Primitives for High-Performance
Differentiable Rendering", the antialias op of nvdiffrast), Taichi, hand-written backward.

Rasterised images are piecewise constant in the vertex positions where triangle ids change, so they give
no gradient at silhouettes. This op blends across silhouette edges by how far the edge crosses between
two pixel centres, which makes the image continuous, and differentiable, in the edge's screen position.

For every pair of horizontally or vertically adjacent pixels (P, Q) with different triangle ids:

1. The occluder is the nearer of the two triangles (background is infinitely far); call its pixel
   ``p_in`` and the other ``p_out``.
2. Walk the segment p_in -> p_out through the mesh: it leaves the occluder's triangle through the edge
   whose (orientation-normalised) edge function turns negative first. If that edge is a silhouette
   edge (a mesh boundary, or its neighbouring triangle faces the other way in screen space: the
   occluding contour), it is the one. If the neighbour faces the same way, the segment goes on into it
   (near silhouettes, triangles seen edge-on are thinner than a pixel and cover no pixel centre), up to
   ``MAX_WALK`` triangles. The pair is left alone if the walk reaches p_out's own triangle, ends inside
   a triangle, or runs out. Each edge is blended in one direction only, across it: horizontal pairs for
   edges closer to vertical (``|dy| >= |dx|`` on screen), vertical pairs for the others. Then the blends
   measure the covered area row by row (or column by column) without counting it twice, and an edge
   crossing a pixel centre does not switch on a blend along the edge.
3. ``t = e(p_in) / (e(p_in) - e(p_out))`` in [0, 1] is where the edge crosses the segment. With a 1-pixel
   box filter along the segment, the pixel whose footprint holds the crossing sees both surfaces:
   ``t < 1/2``: ``out[p_in] += (1/2 - t) (c[p_out] - c[p_in])``;
   ``t > 1/2``: ``out[p_out] += (t - 1/2) (c[p_in] - c[p_out])``.
   The pair's summed occluder coverage is then ``t + 1/2``: linear in the edge position, so the
   gradient w.r.t. the edge's two vertices is the edge-sampling gradient of the coverage integral.

Contributions of the up to four pairs of a pixel add (all read the input colours). The backward
recomputes each pair and scatters into the colour gradient and the edge vertices' screen gradients.

Edge adjacency (``neighbours[f, k]``: the triangle across the edge opposite corner k of f, -1 if none or
if the edge is shared by more than two triangles) comes from ``reference.raster_ops.edge_neighbours``.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as objects, not strings.
import functools

import taichi as ti

from ..common import runtime
from ..common.constants import MAX_WALK
from .helpers import chunk_range
from .interpolate import edge_fn, edge_fn_vjp, next_pixel, pixel_of

__all__ = ["antialias_kernels", "MAX_WALK"]


@ti.func
def _signed_area(screen: ti.template(), tris: ti.template(), b, f):
    i0, i1, i2 = tris[f, 0], tris[f, 1], tris[f, 2]
    return edge_fn(screen[b, i0, 0], screen[b, i0, 1], screen[b, i1, 0], screen[b, i1, 1],
                   screen[b, i2, 0], screen[b, i2, 1])


@ti.func
def _in_front(screen: ti.template(), tris: ti.template(), b, f):
    """All corners in front of the camera (1/z > 0): only then is the screen orientation meaningful."""
    return screen[b, tris[f, 0], 2] > 0 and screen[b, tris[f, 1], 2] > 0 and screen[b, tris[f, 2], 2] > 0


@ti.func
def _analyse(tri_id: ti.template(), depth: ti.template(), screen: ti.template(), tris: ti.template(),
             nbr: ti.template(), b, ya, xa, yb, xb, dt: ti.template()):
    """``(found, a_is_in, ia, ic, pin, pout)``: whether a silhouette edge (ia, ic) crosses between pixel
    a and b, which of them is inside the occluder, and the two centres (see the module docstring)."""
    ta, tb = tri_id[b, ya, xa], tri_id[b, yb, xb]
    found, a_is_in, ia, ic = 0, 1, 0, 0
    pin = ti.Vector([ti.cast(xa, dt), ti.cast(ya, dt)])
    pout = ti.Vector([ti.cast(xb, dt), ti.cast(yb, dt)])
    if ta != tb:
        if not (tb < 0 or (ta >= 0 and depth[b, ya, xa] < depth[b, yb, xb])):
            a_is_in = 0
            pin, pout = pout, pin
        f = ta if a_is_in == 1 else tb
        t_other = tb if a_is_in == 1 else ta
        sgn = dt(1.0) if _signed_area(screen, tris, b, f) > 0 else dt(-1.0)
        cur, walking = f, 1
        for _step in range(MAX_WALK):
            if walking == 1:
                idx = ti.Vector([tris[cur, 0], tris[cur, 1], tris[cur, 2]])
                best_k, best_s = -1, dt(2.0)
                for k in ti.static(range(3)):
                    a, c = idx[(k + 1) % 3], idx[(k + 2) % 3]
                    e_in = sgn * edge_fn(screen[b, a, 0], screen[b, a, 1], screen[b, c, 0], screen[b, c, 1],
                                         pin[0], pin[1])
                    e_out = sgn * edge_fn(screen[b, a, 0], screen[b, a, 1], screen[b, c, 0], screen[b, c, 1],
                                          pout[0], pout[1])
                    if e_out < e_in:  # the segment leaves this edge's inner half-plane
                        s = e_in / (e_in - e_out)
                        if s < best_s:
                            best_k, best_s = k, s
                walking = 0
                if best_k >= 0 and best_s <= 1:
                    g = nbr[cur, best_k]
                    silhouette = g < 0
                    if not silhouette:
                        silhouette = (not _in_front(screen, tris, b, g)) or \
                            (_signed_area(screen, tris, b, g) > 0) != (sgn > 0)
                    if silhouette:
                        ia, ic = idx[(best_k + 1) % 3], idx[(best_k + 2) % 3]
                        dx = ti.abs(screen[b, ic, 0] - screen[b, ia, 0])
                        steep = ti.abs(screen[b, ic, 1] - screen[b, ia, 1]) >= dx
                        found = 1 if steep == (ya == yb) else 0
                    elif g != t_other:
                        cur, walking = g, 1  # a front-facing neighbour smaller than a pixel: walk on
    return found, a_is_in, ia, ic, pin, pout


@ti.func
def _crossing(screen: ti.template(), b, ia, ic, pin, pout, dt: ti.template()):
    """``(t, e_in, e_out, unclamped)`` with t the crossing parameter along pin -> pout, in [0, 1]."""
    ax, ay, cx, cy = screen[b, ia, 0], screen[b, ia, 1], screen[b, ic, 0], screen[b, ic, 1]
    e_in = edge_fn(ax, ay, cx, cy, pin[0], pin[1])
    e_out = edge_fn(ax, ay, cx, cy, pout[0], pout[1])
    t = e_in / (e_in - e_out)
    inside = t >= 0 and t <= 1
    return ti.min(ti.max(t, dt(0.0)), dt(1.0)), e_in, e_out, inside


@ti.func
def _blend_pair(colour: ti.template(), tri_id: ti.template(), depth: ti.template(), screen: ti.template(),
                tris: ti.template(), nbr: ti.template(), out: ti.template(), b, ya, xa, yb, xb, dt: ti.template()):
    """Add the blend of pixel pair (a, b) into ``out`` when a silhouette edge crosses between them."""
    if tri_id[b, ya, xa] != tri_id[b, yb, xb]:
        found, a_is_in, ia, ic, pin, pout = _analyse(tri_id, depth, screen, tris, nbr, b, ya, xa, yb, xb, dt)
        if found == 1:
            t, _e_in, _e_out, _unclamped = _crossing(screen, b, ia, ic, pin, pout, dt)
            # The pixel whose footprint holds the crossing takes the blend.
            aff_is_a = (t < 0.5) == (a_is_in == 1)
            alpha = ti.abs(t - dt(0.5))
            y0, x0, y1, x1 = ya, xa, yb, xb
            if not aff_is_a:
                y0, x0, y1, x1 = yb, xb, ya, xa
            for c in range(colour.shape[3]):
                out[b, y0, x0, c] += alpha * (colour[b, y1, x1, c] - colour[b, y0, x0, c])


@ti.func
def _blend_pair_grad(colour: ti.template(), tri_id: ti.template(), depth: ti.template(), screen: ti.template(),
                     tris: ti.template(), nbr: ti.template(), g_out: ti.template(), g_colour: ti.template(),
                     g_screen: ti.template(), b, ya, xa, yb, xb, dt: ti.template()):
    """The backward of :func:`_blend_pair`: into the colour gradient and the edge's screen gradients."""
    if tri_id[b, ya, xa] != tri_id[b, yb, xb]:
        found, a_is_in, ia, ic, pin, pout = _analyse(tri_id, depth, screen, tris, nbr, b, ya, xa, yb, xb, dt)
        if found == 1:
            t, e_in, e_out, unclamped = _crossing(screen, b, ia, ic, pin, pout, dt)
            aff_is_a = (t < 0.5) == (a_is_in == 1)
            alpha = ti.abs(t - dt(0.5))
            y0, x0, y1, x1 = ya, xa, yb, xb
            if not aff_is_a:
                y0, x0, y1, x1 = yb, xb, ya, xa
            g_alpha = dt(0.0)
            for c in range(colour.shape[3]):
                g = g_out[b, y0, x0, c]
                g_colour[b, y0, x0, c] -= alpha * g
                g_colour[b, y1, x1, c] += alpha * g
                g_alpha += g * (colour[b, y1, x1, c] - colour[b, y0, x0, c])
            if unclamped:
                g_t = g_alpha if t > 0.5 else -g_alpha
                inv = dt(1.0) / ((e_in - e_out) * (e_in - e_out))
                g_ein, g_eout = -e_out * inv * g_t, e_in * inv * g_t
                ax, ay = screen[b, ia, 0], screen[b, ia, 1]
                cx, cy = screen[b, ic, 0], screen[b, ic, 1]
                gv = edge_fn_vjp(g_ein, ax, ay, cx, cy, pin[0], pin[1]) + \
                    edge_fn_vjp(g_eout, ax, ay, cx, cy, pout[0], pout[1])
                g_screen[b, ia, 0] += gv[0]
                g_screen[b, ia, 1] += gv[1]
                g_screen[b, ic, 0] += gv[2]
                g_screen[b, ic, 1] += gv[3]


@functools.cache
def antialias_kernels():
    """(forward, backward) Taichi kernels.

    forward (colour [B,H,W,C], tri_id [B,H,W] i32, depth [B,H,W], screen [B,N,3] (u, v, iz),
    tris [F,3] i32, nbr [F,3] i32, out [B,H,W,C] = a copy of colour, chunk, dt): adds the blends into
    out. backward (colour, tri_id, depth, screen, tris, nbr, g_out, g_colour [B,H,W,C] = a copy of g_out,
    g_screen [B,N,3] zero-filled, chunk, dt). ``chunk``: pixels per serial chunk (``ops.bridge.chunk_size()``).
    """
    runtime.init()

    @ti.kernel
    def forward(colour: ti.types.ndarray(), tri_id: ti.types.ndarray(), depth: ti.types.ndarray(),
                screen: ti.types.ndarray(), tris: ti.types.ndarray(), nbr: ti.types.ndarray(),
                out: ti.types.ndarray(), chunk: ti.i32, dt: ti.template()):
        h, w = tri_id.shape[1], tri_id.shape[2]
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                # The pixel's pairs with its right (k = 0) and lower (k = 1) neighbour.
                for k in ti.static(range(2)):
                    if (k == 0 and x + 1 < w) or (k == 1 and y + 1 < h):
                        _blend_pair(colour, tri_id, depth, screen, tris, nbr, out, b, y, x, y + k, x + 1 - k, dt)
                b, y, x = next_pixel(b, y, x, h, w)

    @ti.kernel
    def backward(colour: ti.types.ndarray(), tri_id: ti.types.ndarray(), depth: ti.types.ndarray(),
                 screen: ti.types.ndarray(), tris: ti.types.ndarray(), nbr: ti.types.ndarray(),
                 g_out: ti.types.ndarray(), g_colour: ti.types.ndarray(), g_screen: ti.types.ndarray(),
                 chunk: ti.i32, dt: ti.template()):
        h, w = tri_id.shape[1], tri_id.shape[2]
        n = tri_id.shape[0] * h * w
        for ck in range((n + chunk - 1) // chunk):
            lo, hi = chunk_range(ck, chunk, n)
            b, y, x = pixel_of(lo, h, w)
            for _p in range(lo, hi):
                for k in ti.static(range(2)):
                    if (k == 0 and x + 1 < w) or (k == 1 and y + 1 < h):
                        _blend_pair_grad(colour, tri_id, depth, screen, tris, nbr, g_out, g_colour, g_screen,
                                         b, y, x, y + k, x + 1 - k, dt)
                b, y, x = next_pixel(b, y, x, h, w)

    return forward, backward
