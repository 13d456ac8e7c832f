"""Fused compositing for the synthetic renderer: interpolate per-vertex colours over covered pixels,
background elsewhere, in one Taichi launch.

Why here and not :func:`fml_taichi.ops.rasterize.shade_image`: that function is plain torch over every pixel
(a [B, H, W, 3, 3] gather); for on-the-fly training data at batch 32 it cost more than the
rasterisation itself (measured, see ``benchmarks/bench_synthetic.py``). Not differentiable (data
generation needs no gradients), float32 only. Kernels (and why they loop over rows):
:mod:`fml_taichi.kernels.composite`.
"""
import math

import torch

from ..common import runtime
from ..kernels.composite import blur_noise_kernel, composite_kernel

__all__ = ["composite", "blur_and_noise"]


def composite(raster, triangles: torch.Tensor, colours: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] image: ``colours`` [B, N, 3] interpolated with the raster's barycentrics where a
    triangle is visible, ``background`` elsewhere (same result as ``shade_image``).

    ``background`` [B, h, w, 3] may have any resolution: it is resampled bilinearly on the fly, so a
    smooth background can be drawn at a fraction of the output size without another full-size pass.
    """
    runtime.init()
    b, h, w = raster.triangle_id.shape
    if background.ndim != 4 or background.shape[0] != b or background.shape[3] != 3 or 0 in background.shape:
        raise ValueError(f"background: expected shape ({b}, h, w, 3), got {tuple(background.shape)}")
    if colours.ndim != 3 or colours.shape[0] != b or colours.shape[2] != 3:
        raise ValueError(f"colours: expected shape ({b}, N, 3), got {tuple(colours.shape)}")
    out = torch.empty((b, h, w, 3), dtype=torch.float32, device=colours.device)
    composite_kernel(raster.triangle_id.contiguous(), raster.barycentrics.contiguous(), triangles.contiguous(),
                      colours.detach().float().contiguous(), background.detach().float().contiguous(), out)
    return out


def blur_and_noise(images: torch.Tensor, sigma: float, keys: torch.Tensor, noise_sd: torch.Tensor) -> torch.Tensor:
    """3 x 3 Gaussian blur of SD ``sigma`` (<= 1 px: a camera's softness and anti-aliasing of the
    z-buffered edges; edge-clamped), plus uniform noise of SD ``noise_sd[b]``, clamped to [0, 1];
    [B, H, W, 3] float32 in one kernel pass.

    The noise is a hash of (``keys[b]``, pixel): deterministic per image key whatever the batch, and
    no [B, H, W, 3] random buffer is drawn (on this CPU every full-batch pass costs milliseconds,
    measured in ``benchmarks/bench_synthetic.py``). ``keys`` [B] integers (the low 31 bits are used).
    Uniform values have 10 bits per channel, plenty for sensor noise.
    """
    runtime.init()
    b = images.shape[0]
    if keys.shape != (b,) or noise_sd.shape != (b,):
        raise ValueError(f"keys / noise_sd: expected shape ({b},), got {tuple(keys.shape)} / {tuple(noise_sd.shape)}")
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma: the 3 x 3 blur supports 0 <= sigma <= 1 px, got {sigma}")
    side = math.exp(-1.0 / (2 * sigma * sigma)) if sigma > 0 else 0.0
    w_side = side / (1.0 + 2.0 * side)  # normalised 1-D weights (w_side, 1 - 2 w_side, w_side)
    src = images.detach().float().contiguous()
    out = torch.empty_like(src)
    amp = (noise_sd.float() * math.sqrt(12.0)).contiguous()  # uniform on [-a/2, a/2] has SD a / sqrt(12)
    blur_noise_kernel(src, w_side, (keys.to(torch.int64) & 0x7FFFFFFF).to(torch.int32).contiguous(), amp, out)
    return out
