"""Small procedural meshes for tests and benchmarks (closed UV spheres), in the project conventions.

Triangles are int32 and counter-clockwise seen from outside, so ``(v1 - v0) x (v2 - v0)`` points
outward (docs/conventions.md).
"""
from __future__ import annotations

import math

import torch


def uv_sphere(rings: int, segments: int, radius: float = 1.0, dtype: torch.dtype = torch.float32):
    """A closed sphere: ``rings`` latitude circles of ``segments`` vertices plus two poles.

    Returns (vertices [rings * segments + 2, 3], triangles [2 * rings * segments, 3] int32). The
    poles are the last two vertices: index R*S is y = -radius (top in the image, y points down),
    R*S + 1 is y = +radius.
    """
    if rings < 1 or segments < 3:
        raise ValueError(f"uv_sphere: need rings >= 1 and segments >= 3, got {rings}, {segments}")
    theta = torch.arange(1, rings + 1, dtype=torch.float64) * (math.pi / (rings + 1))
    phi = torch.arange(segments, dtype=torch.float64) * (2 * math.pi / segments)
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring_pts = torch.stack([torch.sin(th) * torch.cos(ph), -torch.cos(th), torch.sin(th) * torch.sin(ph)], -1)
    poles = torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    verts = torch.cat([ring_pts.reshape(-1, 3), poles]) * radius

    i = torch.arange(rings - 1)[:, None]
    j = torch.arange(segments)[None, :]
    a, b = i * segments + j, i * segments + (j + 1) % segments
    c, d = a + segments, b + segments
    # With y = -cos(theta) the rings run top to bottom: (a, c, b) and (b, c, d) wind outward.
    quads = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    top, bottom = rings * segments, rings * segments + 1
    js = torch.arange(segments)
    last = (rings - 1) * segments
    top_fan = torch.stack([torch.full_like(js, top), js, (js + 1) % segments], -1)
    bottom_fan = torch.stack([torch.full_like(js, bottom), last + (js + 1) % segments, last + js], -1)
    tris = torch.cat([quads, top_fan, bottom_fan]).to(torch.int32)
    return verts.to(dtype), tris


def sphere_with_n_vertices(n: int, radius: float = 1.0, dtype: torch.dtype = torch.float32):
    """A :func:`uv_sphere` with about ``n`` vertices (within a ring) and about 2n triangles."""
    rings = max(1, round(math.sqrt(n / 2)))
    segments = max(3, round((n - 2) / rings))
    return uv_sphere(rings, segments, radius, dtype)
