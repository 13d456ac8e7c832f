"""Z-buffer triangle rasterisation kernels (Taichi): depth, triangle id, perspective-correct
barycentrics. Not differentiable; the op and its contract are in :mod:`fml_taichi.ops.rasterize`.

Algorithm (three kernel launches, no per-pixel triangle lists):

0. One thread per vertex: project once to (u, v, z, 1/z).
1. One thread per (image, triangle): cull, loop over the pixels of the triangle's clipped bounding
   box and, for each covered pixel centre, ``atomic_min`` a 64-bit key into the z-buffer.
   The key packs the IEEE bits of the float depth in the high word (positive floats order like their
   bit patterns as integers) and the triangle index in the low word. One atomic therefore resolves
   depth and identity together: the nearest triangle wins whatever its place in the list, and exact
   depth ties go to the lower index, so the result is deterministic despite parallel writes.
2. One thread per chunk of consecutive pixels (``chunk``: a row's worth on the CPU, a few pixels on
   CUDA): decode the winner and recompute its perspective-correct barycentrics and depth from the
   projected corners (cheaper than storing them per candidate write), or only its id (``ids_only``).

Coverage rule: a pixel is covered when its centre lies inside the projected triangle or on its edge
(inclusive test; a pixel on a shared edge goes to the nearer / lower-index triangle). Edge functions
are evaluated in a canonical vertex order, so the two triangles sharing an edge get exactly opposite
values: meshes are watertight, no pixel centre slips between them through rounding. Degenerate
(zero screen area) triangles cover nothing. Triangles with any vertex at ``z <= near`` are skipped
entirely (no clipping). Either winding is drawn unless ``cull`` is set.

Cost: one thread per triangle suits meshes of many small triangles (faces: ~60k triangles of ~1 px
at 240x240); a triangle covering much of the image is filled by one thread, which is still fine on
CPUs. See ``benchmarks/bench_rasterize.py``.

The z-buffer must be filled with ``ZBUF_EMPTY_KEY`` (:mod:`fml_taichi.common.constants`) before
:func:`raster_triangles`. Module-level kernels: call :func:`fml_taichi.common.runtime.init` before the
first launch.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as objects, not strings.

import taichi as ti

from ..common.constants import BACKGROUND_DEPTH, ZBUF_EMPTY_KEY
from .helpers import chunk_range
from .interpolate import next_pixel, pixel_of

__all__ = ["project_vertices", "raster_triangles", "resolve"]

# High word of the empty key: above the bit pattern of every finite positive float32 depth.
_EMPTY_HIGH = ZBUF_EMPTY_KEY >> 32


@ti.kernel
def project_vertices(
    v: ti.types.ndarray(dtype=ti.f32, ndim=3),
    intr: ti.types.ndarray(dtype=ti.f32, ndim=2),
    screen: ti.types.ndarray(dtype=ti.f32, ndim=3),
):
    """(u, v, z, 1/z) per vertex, once: triangles share vertices ~6 times over, and watertightness
    needs every triangle to see bit-identical projected corners."""
    for b, i in ti.ndrange(v.shape[0], v.shape[1]):
        z = v[b, i, 2]
        iz = 1.0 / z  # inf/negative for z <= 0: such triangles are dropped by the near test
        screen[b, i, 0] = intr[b, 0] * v[b, i, 0] * iz + intr[b, 2]
        screen[b, i, 1] = intr[b, 1] * v[b, i, 1] * iz + intr[b, 3]
        screen[b, i, 2] = z
        screen[b, i, 3] = iz


@ti.func
def _corner(screen: ti.template(), b, i):
    return ti.Vector([screen[b, i, 0], screen[b, i, 1], screen[b, i, 2], screen[b, i, 3]])


@ti.func
def _edge(a, c, px, py):
    """Twice the signed area of (a, c, p): positive when p is left of a->c in a y-down image."""
    return (c[0] - a[0]) * (py - a[1]) - (c[1] - a[1]) * (px - a[0])


@ti.func
def _edge_shared(a, ia, c, ic, px, py):
    """``_edge(a, c, p)`` evaluated in a canonical vertex order (lower index first).

    Two triangles sharing an edge traverse it in opposite directions; evaluating it the same way in
    both gives exactly opposite values, so every pixel centre lands in exactly one of them (or on
    the edge, in both): no cracks. The naive form left ~0.6 hole pixels per face-sized render.
    """
    e = 0.0
    if ia < ic:
        e = _edge(a, c, px, py)
    else:
        e = -_edge(c, a, px, py)
    return e


@ti.func
def _edges(s0, s1, s2, i0, i1, i2, px, py):
    """Unnormalised screen-space barycentrics (e0, e1, e2) of pixel centre (px, py)."""
    return ti.Vector([_edge_shared(s1, i1, s2, i2, px, py), _edge_shared(s2, i2, s0, i0, px, py),
                      _edge_shared(s0, i0, s1, i1, px, py)])


@ti.func
def _covers(e):
    """Inside or on the edge, for either winding; a zero sum means a degenerate triangle."""
    return ((e[0] >= 0.0 and e[1] >= 0.0 and e[2] >= 0.0) or (e[0] <= 0.0 and e[1] <= 0.0 and e[2] <= 0.0)) \
        and (e[0] + e[1] + e[2]) != 0.0


@ti.kernel
def raster_triangles(
    v: ti.types.ndarray(dtype=ti.f32, ndim=3),
    screen: ti.types.ndarray(dtype=ti.f32, ndim=3),
    tris: ti.types.ndarray(dtype=ti.i32, ndim=2),
    zbuf: ti.types.ndarray(dtype=ti.i64, ndim=3),
    near: ti.f32,
    cull: ti.i32,
):
    n_img, height, width = zbuf.shape[0], zbuf.shape[1], zbuf.shape[2]
    for b, f in ti.ndrange(n_img, tris.shape[0]):
        i0, i1, i2 = tris[f, 0], tris[f, 1], tris[f, 2]
        s0, s1, s2 = _corner(screen, b, i0), _corner(screen, b, i1), _corner(screen, b, i2)
        visible = s0[2] > near and s1[2] > near and s2[2] > near
        if visible and cull != 0:
            # Backface test in 3D, as in docs/conventions.md: front-facing iff dot(n, v) < 0.
            p0 = ti.Vector([v[b, i0, 0], v[b, i0, 1], v[b, i0, 2]])
            p1 = ti.Vector([v[b, i1, 0], v[b, i1, 1], v[b, i1, 2]])
            p2 = ti.Vector([v[b, i2, 0], v[b, i2, 1], v[b, i2, 2]])
            visible = (p1 - p0).cross(p2 - p0).dot(p0) < 0.0
        # Clip the bounding box in float first: a vertex near the near plane can project far
        # outside the int32 range.
        x_lo = ti.max(ti.min(s0[0], s1[0], s2[0]), 0.0)
        x_hi = ti.min(ti.max(s0[0], s1[0], s2[0]), width - 1.0)
        y_lo = ti.max(ti.min(s0[1], s1[1], s2[1]), 0.0)
        y_hi = ti.min(ti.max(s0[1], s1[1], s2[1]), height - 1.0)
        if visible and x_lo <= x_hi and y_lo <= y_hi:
            iz = ti.Vector([s0[3], s1[3], s2[3]])
            for y in range(ti.cast(ti.ceil(y_lo), ti.i32), ti.cast(ti.floor(y_hi), ti.i32) + 1):
                for x in range(ti.cast(ti.ceil(x_lo), ti.i32), ti.cast(ti.floor(x_hi), ti.i32) + 1):
                    e = _edges(s0, s1, s2, i0, i1, i2, ti.cast(x, ti.f32), ti.cast(y, ti.f32))
                    if _covers(e):
                        # 1/z is affine in screen space: z = sum(e) / sum(e_i / z_i), exact at the centre.
                        z = (e[0] + e[1] + e[2]) / e.dot(iz)
                        key = (ti.cast(ti.bit_cast(z, ti.i32), ti.i64) << 32) | ti.cast(f, ti.i64)
                        ti.atomic_min(zbuf[b, y, x], key)


@ti.kernel
def resolve(
    screen: ti.types.ndarray(dtype=ti.f32, ndim=3),
    tris: ti.types.ndarray(dtype=ti.i32, ndim=2),
    zbuf: ti.types.ndarray(dtype=ti.i64, ndim=3),
    depth: ti.types.ndarray(dtype=ti.f32, ndim=3),
    tri_id: ti.types.ndarray(dtype=ti.i32, ndim=3),
    bary: ti.types.ndarray(dtype=ti.f32, ndim=4),
    chunk: ti.i32,
    ids_only: ti.template(),
):
    """Decode the z-buffer; with ``ids_only`` only ``tri_id`` is written (for callers that recompute
    depth and barycentrics themselves: ``depth`` and ``bary`` are then not touched)."""
    height, width = zbuf.shape[1], zbuf.shape[2]
    n = zbuf.shape[0] * height * width
    # Chunks of consecutive pixels, stepping (b, y, x): per-pixel integer divisions made this pass
    # ~3x slower on the CPU (see kernels.interpolate).
    for ck in range((n + chunk - 1) // chunk):
        lo, hi = chunk_range(ck, chunk, n)
        b, y, x = pixel_of(lo, height, width)
        for _p in range(lo, hi):
            _resolve_pixel(screen, tris, zbuf, depth, tri_id, bary, b, y, x, ids_only)
            b, y, x = next_pixel(b, y, x, height, width)


@ti.func
def _resolve_pixel(screen: ti.template(), tris: ti.template(), zbuf: ti.template(), depth: ti.template(),
                   tri_id: ti.template(), bary: ti.template(), b, y, x, ids_only: ti.template()):
    key = zbuf[b, y, x]
    high = ti.cast(key >> 32, ti.i32)
    if high == _EMPTY_HIGH:
        tri_id[b, y, x] = -1
        if ti.static(not ids_only):
            depth[b, y, x] = BACKGROUND_DEPTH
            for k in ti.static(range(3)):
                bary[b, y, x, k] = 0.0
    else:
        f = ti.cast(key - (ti.cast(high, ti.i64) << 32), ti.i32)
        tri_id[b, y, x] = f
        if ti.static(not ids_only):
            i0, i1, i2 = tris[f, 0], tris[f, 1], tris[f, 2]
            s0, s1, s2 = _corner(screen, b, i0), _corner(screen, b, i1), _corner(screen, b, i2)
            e = _edges(s0, s1, s2, i0, i1, i2, ti.cast(x, ti.f32), ti.cast(y, ti.f32))
            lam = e / (e[0] + e[1] + e[2])  # screen-space weights; >= 0: the pixel passed _covers
            # Perspective correction: weights proportional to lambda_i / z_i, normalised.
            w = lam * ti.Vector([s0[3], s1[3], s2[3]])
            inv_sum = 1.0 / (w[0] + w[1] + w[2])
            depth[b, y, x] = inv_sum
            for k in ti.static(range(3)):
                bary[b, y, x, k] = w[k] * inv_sum
