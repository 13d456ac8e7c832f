"""Image kernels of the synthetic renderer, forward only and float32: compositing interpolated vertex
colours over a (resampled) background, and a 3 x 3 blur plus hashed noise. The ops and their contracts
are in :mod:`fml_taichi.ops.composite`. Module-level kernels: call
:func:`fml_taichi.common.runtime.init` before the first launch.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import taichi as ti

__all__ = ["ROW_LOOPS_NOTE", "composite_kernel", "blur_noise_kernel"]

#: Measured on this 2-core CPU (taichi 1.7.4, batch 32 x 240 x 240 x 3 float32): a copy kernel over
#: ``ti.ndrange(B, H, W, 3)`` took 100 ms, the same copy parallel over ``(B, H)`` with a serial loop
#: along the row 12 ms, a flat 1-D loop 3.6 ms (= torch's clone). Image kernels here loop over rows.
ROW_LOOPS_NOTE = "parallelise image kernels over (batch, row), not over every pixel with ti.ndrange"


@ti.func
def _load3(src: ti.template(), b, y, x):
    return ti.Vector([src[b, y, x, 0], src[b, y, x, 1], src[b, y, x, 2]])


@ti.func
def _bilinear_bg(bg: ti.template(), b, y, x, h, w):
    """RGB background at output pixel (y, x) of an h x w image, resampled bilinearly from ``bg``'s own
    resolution (pixel centres map to pixel centres; edges clamp)."""
    bh, bw = bg.shape[1], bg.shape[2]
    sy = ti.min(ti.max((y + 0.5) * bh / h - 0.5, 0.0), bh - 1.0)
    sx = ti.min(ti.max((x + 0.5) * bw / w - 0.5, 0.0), bw - 1.0)
    y0 = ti.min(ti.cast(ti.floor(sy), ti.i32), bh - 1)
    x0 = ti.min(ti.cast(ti.floor(sx), ti.i32), bw - 1)
    y1, x1 = ti.min(y0 + 1, bh - 1), ti.min(x0 + 1, bw - 1)
    fy, fx = sy - y0, sx - x0
    top = (1.0 - fx) * _load3(bg, b, y0, x0) + fx * _load3(bg, b, y0, x1)
    bottom = (1.0 - fx) * _load3(bg, b, y1, x0) + fx * _load3(bg, b, y1, x1)
    return (1.0 - fy) * top + fy * bottom


@ti.kernel
def composite_kernel(
    tri_id: ti.types.ndarray(dtype=ti.i32, ndim=3),
    bary: ti.types.ndarray(dtype=ti.f32, ndim=4),
    tris: ti.types.ndarray(dtype=ti.i32, ndim=2),
    colours: ti.types.ndarray(dtype=ti.f32, ndim=3),
    background: ti.types.ndarray(dtype=ti.f32, ndim=4),
    out: ti.types.ndarray(dtype=ti.f32, ndim=4),
):
    h, w = out.shape[1], out.shape[2]
    # Parallel over rows, serial along a row: a 3-D ti.ndrange decomposes every flat index with
    # divisions and was ~8x slower for a plain copy of a batch (measured, see ROW_LOOPS_NOTE).
    for b, y in ti.ndrange(out.shape[0], h):
        for x in range(w):
            f = tri_id[b, y, x]
            if f < 0:
                v = _bilinear_bg(background, b, y, x, h, w)
                for c in ti.static(range(3)):
                    out[b, y, x, c] = v[c]
            else:
                for c in ti.static(range(3)):
                    out[b, y, x, c] = (bary[b, y, x, 0] * colours[b, tris[f, 0], c]
                                       + bary[b, y, x, 1] * colours[b, tris[f, 1], c]
                                       + bary[b, y, x, 2] * colours[b, tris[f, 2], c])



@ti.func
def _hash(x):
    """A 32-bit integer mix (lowbias32): a stateless per-pixel random source."""
    x ^= x >> 16
    x *= ti.u32(0x7FEB352D)
    x ^= x >> 15
    x *= ti.u32(0x846CA68B)
    x ^= x >> 16
    return x


@ti.kernel
def blur_noise_kernel(src: ti.types.ndarray(dtype=ti.f32, ndim=4), w_side: ti.f32,
                keys: ti.types.ndarray(dtype=ti.i32, ndim=1), amplitude: ti.types.ndarray(dtype=ti.f32, ndim=1),
                dst: ti.types.ndarray(dtype=ti.f32, ndim=4)):
    # One pass, 3 x 3 separable taps, one hash per pixel: this stage was compute-bound (a general
    # (2r+1)^2 loop with a hash per channel cost ~7x a plain copy of the batch, measured).
    h, w = src.shape[1], src.shape[2]
    w_mid = 1.0 - 2.0 * w_side
    for b, y in ti.ndrange(src.shape[0], h):  # rows in parallel (see ROW_LOOPS_NOTE)
        ym, yp = ti.max(y - 1, 0), ti.min(y + 1, h - 1)
        # Sliding window along the row: each column's vertical 3-tap sum is computed once and reused
        # by three output pixels (9 loads per pixel instead of 27).
        prev = w_side * (_load3(src, b, ym, 0) + _load3(src, b, yp, 0)) + w_mid * _load3(src, b, y, 0)
        cur = prev
        for x in range(w):
            xn = ti.min(x + 1, w - 1)
            nxt = w_side * (_load3(src, b, ym, xn) + _load3(src, b, yp, xn)) + w_mid * _load3(src, b, y, xn)
            acc = w_side * (prev + nxt) + w_mid * cur
            bits = _hash(ti.cast(keys[b], ti.u32) ^ _hash(ti.cast(y * w + x, ti.u32)))
            for c in ti.static(range(3)):
                u = ti.cast((bits >> (10 * c)) & ti.u32(1023), ti.f32) * (1.0 / 1023.0)  # 10 bits per channel
                dst[b, y, x, c] = ti.min(ti.max(acc[c] + (u - 0.5) * amplitude[b], 0.0), 1.0)
            prev = cur
            cur = nxt
