"""Procedural meshes and small geometry helpers shared by the generic (non-face) examples.

Meshes follow docs/conventions.md: vertices [N, 3] float, triangles [F, 3] int32, counter-clockwise
seen from outside.
"""
from __future__ import annotations

import math

import torch

__all__ = ["icosphere", "blob", "rotation_matrix", "rotation_angle_deg", "uniform_laplacian", "mask_iou"]


def icosphere(level: int, radius: float = 1.0, dtype: torch.dtype = torch.float32):
    """Unit icosahedron subdivided ``level`` times (20 * 4^level triangles), projected to the sphere."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    v = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                      [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    f = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                      [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=torch.long)
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(level):
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
        uniq, inv = torch.unique(edges, dim=0, return_inverse=True)
        mid = v[uniq].mean(1)
        mid = mid / mid.norm(dim=1, keepdim=True)
        m = inv.view(3, -1).t() + v.shape[0]  # midpoints of edges (01, 12, 20) per face
        v = torch.cat([v, mid])
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        ab, bc, ca = m[:, 0], m[:, 1], m[:, 2]
        f = torch.cat([torch.stack([a, ab, ca], 1), torch.stack([b, bc, ab], 1), torch.stack([c, ca, bc], 1),
                       torch.stack([ab, bc, ca], 1)])
    # Orient outward: (v1 - v0) x (v2 - v0) along the centroid direction.
    p = v[f]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    flip = (n * p.mean(1)).sum(1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    return (v * radius).to(dtype), f.to(torch.int32)


def blob(level: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A lumpy, elongated, non-symmetric closed shape: an icosphere with a few Gaussian bumps and dents."""
    v, f = icosphere(level, 1.0, torch.float64)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn((7, 3), generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    amps = torch.tensor([0.7, 0.5, 0.4, -0.2, 0.35, -0.15, 0.3], dtype=torch.float64)
    widths = torch.tensor([0.12, 0.2, 0.1, 0.2, 0.08, 0.15, 0.15], dtype=torch.float64)
    cos = v @ dirs.t()  # [N, 7]
    r = 1.0 + (amps * torch.exp((cos - 1.0) / widths)).sum(1)
    v = v * r.unsqueeze(1) * torch.tensor([1.25, 0.85, 1.0], dtype=torch.float64)
    return (v - v.mean(0)).to(dtype), f


def rotation_matrix(omega: torch.Tensor) -> torch.Tensor:
    """Axis-angle [..., 3] (radians) -> rotation [..., 3, 3] via the matrix exponential (smooth at 0)."""
    z = torch.zeros_like(omega[..., 0])
    k = torch.stack([z, -omega[..., 2], omega[..., 1], omega[..., 2], z, -omega[..., 0],
                     -omega[..., 1], omega[..., 0], z], -1).view(*omega.shape[:-1], 3, 3)
    return torch.linalg.matrix_exp(k)


def rotation_angle_deg(r_a: torch.Tensor, r_b: torch.Tensor) -> float:
    """Angle of the rotation taking r_b to r_a, in degrees."""
    c = ((r_a @ r_b.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return float(torch.rad2deg(torch.arccos(c.clamp(-1.0, 1.0))))


def uniform_laplacian(n_vertices: int, triangles: torch.Tensor) -> torch.Tensor:
    """Sparse [N, N] ``L = I - D^-1 A`` over the mesh's edges: ``L v`` is each vertex minus the mean of its
    neighbours."""
    f = triangles.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = torch.unique(torch.cat([e, e.flip(1)]), dim=0)
    deg = torch.bincount(e[:, 0], minlength=n_vertices).clamp(min=1).to(torch.float32)
    idx = torch.cat([e.t(), torch.arange(n_vertices).repeat(2, 1)], 1)
    val = torch.cat([-1.0 / deg[e[:, 0]], torch.ones(n_vertices)])
    return torch.sparse_coo_tensor(idx, val, (n_vertices, n_vertices), check_invariants=True).coalesce()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean mask batches, pooled over the batch."""
    return float((a & b).sum()) / max(1, float((a | b).sum()))
