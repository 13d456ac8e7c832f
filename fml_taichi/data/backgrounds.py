"""Procedural backgrounds for synthetic faces: varied, cheap, deterministic per generator.

A reconstruction network must learn to ignore what is around the face, so the synthetic images put
faces over backgrounds that vary in colour, frequency content and structure rather than over a flat
colour. Four families, chosen uniformly per image:

* ``gradient``: a linear ramp between two random colours at a random angle (walls, sky);
* ``blobs``: smooth value noise, a coarse random colour grid upsampled bilinearly (defocused scenes);
* ``stripes``: soft sinusoidal stripes or a checkerboard at a random frequency and angle (textiles,
  tiles: strong edges the photometric loss must not latch on to);
* ``clutter``: a gradient with 2-6 random soft-edged ellipses and rectangles on top (objects).

Optionally a ``hair`` blob (a dark or fair ellipse behind the upper head, see :func:`add_hair`),
because real crops show hair where the face model's forehead ends.

Everything is vectorised torch on [H, W] grids; one image costs well under a millisecond at 240 px.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

KINDS = ("gradient", "blobs", "stripes", "clutter")

# Hair colours (linear RGB): black, dark brown, brown, auburn, blond, grey.
HAIR_COLOURS = torch.tensor([
    [0.03, 0.025, 0.02], [0.09, 0.05, 0.03], [0.20, 0.12, 0.06],
    [0.30, 0.10, 0.04], [0.55, 0.42, 0.22], [0.45, 0.44, 0.42],
])


def _uniform(gen: torch.Generator, *shape, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates scaled to [-1, 1] (x right, y down), each [H, W]. Cached (callers
    never modify it): rebuilding it was a visible share of a background's cost."""
    ys = torch.linspace(-1.0, 1.0, height)
    xs = torch.linspace(-1.0, 1.0, width)
    return torch.meshgrid(ys, xs, indexing="ij")[::-1]


def _random_colour(gen: torch.Generator) -> torch.Tensor:
    """A colour with random brightness and saturation (not uniform in RGB: avoids many pastel greys)."""
    base = torch.rand(3, generator=gen)
    grey = base.mean()
    sat = _uniform(gen, 1, lo=0.2, hi=1.0)
    bright = _uniform(gen, 1, lo=0.1, hi=0.95)
    c = grey + sat * (base - grey)
    return (c / c.max().clamp_min(1e-6) * bright).clamp(0.0, 1.0)


def gradient(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A linear ramp between two random colours at a random angle; [H, W, 3]."""
    x, y = _grid(height, width)
    a = float(_uniform(gen, 1, hi=2 * math.pi))
    t = (math.cos(a) * x + math.sin(a) * y) * 0.5 + 0.5
    c0, c1 = _random_colour(gen), _random_colour(gen)
    return c0 + t.unsqueeze(-1) * (c1 - c0)


def blobs(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """Smooth value noise: a random 2x2 to 7x7 colour grid, bilinearly upsampled; [H, W, 3]."""
    cells = int(torch.randint(2, 8, (1,), generator=gen))
    grid = torch.stack([_random_colour(gen) for _ in range(cells * cells)]).T.reshape(1, 3, cells, cells)
    up = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return up[0].permute(1, 2, 0).clamp(0.0, 1.0)


def stripes(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """Soft stripes (or a checkerboard) between two colours, random frequency and angle; [H, W, 3]."""
    x, y = _grid(height, width)
    a = float(_uniform(gen, 1, hi=math.pi))
    freq = float(_uniform(gen, 1, lo=2.0, hi=14.0))
    u = math.cos(a) * x + math.sin(a) * y
    s = torch.sin(math.pi * freq * u)
    if bool(torch.rand(1, generator=gen) < 0.3):  # checkerboard: product of two orthogonal waves
        s = s * torch.sin(math.pi * freq * (-math.sin(a) * x + math.cos(a) * y))
    sharp = float(_uniform(gen, 1, lo=1.0, hi=8.0))  # tanh gain: from sinusoid to near-hard edges
    t = (torch.tanh(sharp * s) / math.tanh(sharp)) * 0.5 + 0.5
    c0, c1 = _random_colour(gen), _random_colour(gen)
    return c0 + t.unsqueeze(-1) * (c1 - c0)


def clutter(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A gradient with 2-6 random soft ellipses and rectangles painted over it; [H, W, 3]."""
    img = gradient(gen, height, width)
    x, y = _grid(height, width)
    for _ in range(int(torch.randint(2, 7, (1,), generator=gen))):
        cx, cy = (float(v) for v in _uniform(gen, 2, lo=-1.1, hi=1.1))
        rx, ry = (float(v) for v in _uniform(gen, 2, lo=0.08, hi=0.6))
        if bool(torch.rand(1, generator=gen) < 0.5):
            d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 - 1.0  # ellipse: < 0 inside
        else:
            d = torch.maximum((x - cx).abs() / rx, (y - cy).abs() / ry) - 1.0  # rectangle
        alpha = torch.sigmoid(-d * 30.0).unsqueeze(-1)
        img = img + alpha * (_random_colour(gen) - img)
    return img


_FAMILIES = {"gradient": gradient, "blobs": blobs, "stripes": stripes, "clutter": clutter}


def random_background(gen: torch.Generator, height: int, width: int, kind: str | None = None) -> torch.Tensor:
    """One background [H, W, 3] float32 in [0, 1]; ``kind`` one of :data:`KINDS` or None (random)."""
    if kind is None:
        kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=gen))]
    if kind not in _FAMILIES:
        raise ValueError(f"kind: expected one of {KINDS} or None, got {kind!r}")
    return _FAMILIES[kind](gen, height, width).to(torch.float32).contiguous()


def add_hair(gen: torch.Generator, image: torch.Tensor, centre_px, radius_px: float) -> torch.Tensor:
    """Paint a soft hair-coloured ellipse behind the head (returns a new [H, W, 3] image).

    ``centre_px`` (x, y) and ``radius_px`` describe the projected head (e.g. from the landmarks); the
    ellipse sits a little above it and is slightly wider, so the face renders over it and hair shows
    around the forehead and temples, as in a real crop.
    """
    h, w = image.shape[:2]
    ys = torch.arange(h, dtype=torch.float32).unsqueeze(1)
    xs = torch.arange(w, dtype=torch.float32).unsqueeze(0)
    cx, cy = float(centre_px[0]), float(centre_px[1])
    rx = radius_px * float(_uniform(gen, 1, lo=1.0, hi=1.3))
    ry = radius_px * float(_uniform(gen, 1, lo=1.05, hi=1.35))
    cy = cy - radius_px * float(_uniform(gen, 1, lo=0.25, hi=0.45))
    d = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 - 1.0
    alpha = torch.sigmoid(-d * 12.0).unsqueeze(-1)
    colour = HAIR_COLOURS[int(torch.randint(len(HAIR_COLOURS), (1,), generator=gen))]
    colour = (colour * _uniform(gen, 1, lo=0.7, hi=1.3)).clamp(0.0, 1.0)
    # Hair texture: a little per-pixel noise so it is not a flat disc.
    texture = 1.0 + 0.15 * torch.randn((h, w, 1), generator=gen)
    return image + alpha * (colour * texture - image)
