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


@ti.kernel
def _composite_kernel(
    tri_id: ti.types.ndarray(dtype=ti.i32, ndim=3),
    bary: ti.types.ndarray(dtype=ti.f32, ndim=4),
    tris: ti.types.ndarray(dtype=ti.i32, ndim=2),
    colours: ti.types.ndarray(dtype=ti.f32, ndim=3),
    background: ti.types.ndarray(dtype=ti.f32, ndim=4),
    out: ti.types.ndarray(dtype=ti.f32, ndim=4),
):
    for b, y, x in ti.ndrange(out.shape[0], out.shape[1], out.shape[2]):
        f = tri_id[b, y, x]
        if f < 0:
            for c in ti.static(range(3)):
                out[b, y, x, c] = background[b, y, x, c]
        else:
            for c in ti.static(range(3)):
                out[b, y, x, c] = (bary[b, y, x, 0] * colours[b, tris[f, 0], c]
                                   + bary[b, y, x, 1] * colours[b, tris[f, 1], c]
                                   + bary[b, y, x, 2] * colours[b, tris[f, 2], c])


def composite(raster, triangles: torch.Tensor, colours: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] image: ``colours`` [B, N, 3] interpolated with the raster's barycentrics where a
    triangle is visible, ``background`` [B, H, W, 3] elsewhere (same result as ``shade_image``)."""
    backend.init()
    b, h, w = raster.triangle_id.shape
    if tuple(background.shape) != (b, h, w, 3):
        raise ValueError(f"background: expected shape {(b, h, w, 3)}, got {tuple(background.shape)}")
    if colours.ndim != 3 or colours.shape[0] != b or colours.shape[2] != 3:
        raise ValueError(f"colours: expected shape ({b}, N, 3), got {tuple(colours.shape)}")
    out = torch.empty((b, h, w, 3), dtype=torch.float32, device=colours.device)
    _composite_kernel(raster.triangle_id.contiguous(), raster.barycentrics.contiguous(), triangles.contiguous(),
                      colours.detach().float().contiguous(), background.detach().float().contiguous(), out)
    return out


@ti.kernel
def _blur_pass(src: ti.types.ndarray(dtype=ti.f32, ndim=4), weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
               dst: ti.types.ndarray(dtype=ti.f32, ndim=4), axis: ti.i32):
    r = (weights.shape[0] - 1) // 2
    h, w = src.shape[1], src.shape[2]
    for b, y, x, c in ti.ndrange(src.shape[0], h, w, 3):
        acc = 0.0
        for k in range(weights.shape[0]):
            yy, xx = y, x
            if axis == 0:
                yy = ti.min(ti.max(y + k - r, 0), h - 1)
            else:
                xx = ti.min(ti.max(x + k - r, 0), w - 1)
            acc += weights[k] * src[b, yy, xx, c]
        dst[b, y, x, c] = acc


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, H, W, 3] float32 images, radius ceil(1.5 sigma), edge-clamped.

    Two Taichi passes: torch's single-channel ``conv2d`` took ~40 ms per 240 px image here and a
    sum of shifted slices ~3 ms; these passes take a fraction of a millisecond (measured).
    """
    import math

    backend.init()
    if sigma <= 0:
        return images
    r = max(1, int(math.ceil(1.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    k = (k / k.sum()).contiguous()
    src = images.detach().float().contiguous()
    tmp = torch.empty_like(src)
    out = torch.empty_like(src)
    _blur_pass(src, k, tmp, 1)
    _blur_pass(tmp, k, out, 0)
    return out
