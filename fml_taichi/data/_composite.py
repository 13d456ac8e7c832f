"""Fused compositing for the synthetic renderer: interpolate per-vertex colours over covered pixels,
background elsewhere, in one Taichi launch.

Why here and not ``kernels.rasterize.shade_image``: that function is plain torch over every pixel
(a [B, H, W, 3, 3] gather); for on-the-fly training data at batch 32 it cost more than the
rasterisation itself (measured, see ``benchmarks/bench_synthetic.py``). Not differentiable (data
generation needs no gradients), float32 only.
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import taichi as ti
import torch

from .. import backend


@ti.func
def _bilinear_bg(bg: ti.template(), b, y, x, c, h, w):
    """Background at output pixel (y, x) of an h x w image, resampled bilinearly from ``bg``'s own
    resolution (pixel centres map to pixel centres; edges clamp)."""
    bh, bw = bg.shape[1], bg.shape[2]
    sy = ti.min(ti.max((y + 0.5) * bh / h - 0.5, 0.0), bh - 1.0)
    sx = ti.min(ti.max((x + 0.5) * bw / w - 0.5, 0.0), bw - 1.0)
    y0 = ti.min(ti.cast(ti.floor(sy), ti.i32), bh - 1)
    x0 = ti.min(ti.cast(ti.floor(sx), ti.i32), bw - 1)
    y1, x1 = ti.min(y0 + 1, bh - 1), ti.min(x0 + 1, bw - 1)
    fy, fx = sy - y0, sx - x0
    top = bg[b, y0, x0, c] + fx * (bg[b, y0, x1, c] - bg[b, y0, x0, c])
    bottom = bg[b, y1, x0, c] + fx * (bg[b, y1, x1, c] - bg[b, y1, x0, c])
    return top + fy * (bottom - top)


@ti.kernel
def _composite_kernel(
    tri_id: ti.types.ndarray(dtype=ti.i32, ndim=3),
    bary: ti.types.ndarray(dtype=ti.f32, ndim=4),
    tris: ti.types.ndarray(dtype=ti.i32, ndim=2),
    colours: ti.types.ndarray(dtype=ti.f32, ndim=3),
    background: ti.types.ndarray(dtype=ti.f32, ndim=4),
    out: ti.types.ndarray(dtype=ti.f32, ndim=4),
):
    h, w = out.shape[1], out.shape[2]
    for b, y, x in ti.ndrange(out.shape[0], h, w):
        f = tri_id[b, y, x]
        if f < 0:
            for c in ti.static(range(3)):
                out[b, y, x, c] = _bilinear_bg(background, b, y, x, c, h, w)
        else:
            for c in ti.static(range(3)):
                out[b, y, x, c] = (bary[b, y, x, 0] * colours[b, tris[f, 0], c]
                                   + bary[b, y, x, 1] * colours[b, tris[f, 1], c]
                                   + bary[b, y, x, 2] * colours[b, tris[f, 2], c])


def composite(raster, triangles: torch.Tensor, colours: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] image: ``colours`` [B, N, 3] interpolated with the raster's barycentrics where a
    triangle is visible, ``background`` elsewhere (same result as ``shade_image``).

    ``background`` [B, h, w, 3] may have any resolution: it is resampled bilinearly on the fly, so a
    smooth background can be drawn at a fraction of the output size without another full-size pass.
    """
    backend.init()
    b, h, w = raster.triangle_id.shape
    if background.ndim != 4 or background.shape[0] != b or background.shape[3] != 3 or 0 in background.shape:
        raise ValueError(f"background: expected shape ({b}, h, w, 3), got {tuple(background.shape)}")
    if colours.ndim != 3 or colours.shape[0] != b or colours.shape[2] != 3:
        raise ValueError(f"colours: expected shape ({b}, N, 3), got {tuple(colours.shape)}")
    out = torch.empty((b, h, w, 3), dtype=torch.float32, device=colours.device)
    _composite_kernel(raster.triangle_id.contiguous(), raster.barycentrics.contiguous(), triangles.contiguous(),
                      colours.detach().float().contiguous(), background.detach().float().contiguous(), out)
    return out


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
def _blur_rows(src: ti.types.ndarray(dtype=ti.f32, ndim=4), weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
               dst: ti.types.ndarray(dtype=ti.f32, ndim=4)):
    r = (weights.shape[0] - 1) // 2
    w = src.shape[2]
    for b, y, x in ti.ndrange(src.shape[0], src.shape[1], w):
        acc = ti.Vector([0.0, 0.0, 0.0])
        for k in range(weights.shape[0]):
            xx = ti.min(ti.max(x + k - r, 0), w - 1)
            acc += weights[k] * ti.Vector([src[b, y, xx, 0], src[b, y, xx, 1], src[b, y, xx, 2]])
        for c in ti.static(range(3)):
            dst[b, y, x, c] = acc[c]


@ti.kernel
def _blur_cols_noise(src: ti.types.ndarray(dtype=ti.f32, ndim=4), weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     keys: ti.types.ndarray(dtype=ti.i32, ndim=1), amplitude: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     dst: ti.types.ndarray(dtype=ti.f32, ndim=4)):
    r = (weights.shape[0] - 1) // 2
    h, w = src.shape[1], src.shape[2]
    for b, y, x in ti.ndrange(src.shape[0], h, w):
        acc = ti.Vector([0.0, 0.0, 0.0])
        for k in range(weights.shape[0]):
            yy = ti.min(ti.max(y + k - r, 0), h - 1)
            acc += weights[k] * ti.Vector([src[b, yy, x, 0], src[b, yy, x, 1], src[b, yy, x, 2]])
        for c in ti.static(range(3)):
            idx = ti.cast((y * w + x) * 3 + c, ti.u32)
            u = ti.cast(_hash(ti.cast(keys[b], ti.u32) ^ _hash(idx)) >> 8, ti.f32) * (1.0 / 16777216.0)  # uniform [0, 1)
            dst[b, y, x, c] = ti.min(ti.max(acc[c] + (u - 0.5) * amplitude[b], 0.0), 1.0)


def blur_and_noise(images: torch.Tensor, sigma: float, keys: torch.Tensor, noise_sd: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur (radius ceil(1.5 sigma), edge-clamped), plus uniform noise of SD
    ``noise_sd[b]``, clamped to [0, 1]; [B, H, W, 3] float32.

    The noise is a hash of (``keys[b]``, pixel, channel): deterministic per image key whatever the
    batch, and no [B, H, W, 3] random buffer is drawn (on this CPU every full-batch pass costs
    milliseconds, measured in ``benchmarks/bench_synthetic.py``). ``keys`` [B] integers (the low 31 bits are used).
    """
    import math

    backend.init()
    b = images.shape[0]
    if keys.shape != (b,) or noise_sd.shape != (b,):
        raise ValueError(f"keys / noise_sd: expected shape ({b},), got {tuple(keys.shape)} / {tuple(noise_sd.shape)}")
    r = max(1, int(math.ceil(1.5 * sigma))) if sigma > 0 else 0
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma)) if sigma > 0 else torch.ones(1)
    k = (k / k.sum()).contiguous()
    src = images.detach().float().contiguous()
    tmp = torch.empty_like(src)
    out = torch.empty_like(src)
    _blur_rows(src, k, tmp)
    amp = (noise_sd.float() * math.sqrt(12.0)).contiguous()  # uniform on [-a/2, a/2] has SD a / sqrt(12)
    _blur_cols_noise(tmp, k, (keys.to(torch.int64) & 0x7FFFFFFF).to(torch.int32).contiguous(), amp, out)
    return out
