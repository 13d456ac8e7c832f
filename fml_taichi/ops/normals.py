"""Area-weighted per-vertex normals from a triangle list.

Each face adds its unnormalised normal ``(v1 - v0) x (v2 - v0)`` (length = twice its area, direction
outward for counter-clockwise triangles, docs/conventions.md) to its three vertices; the sums are
then normalised. A vertex whose sum is shorter than ``NORMAL_EPS`` (isolated, or only zero-area
faces) gets the normal 0 and zero gradient instead of 0/0.
"""
import functools
import threading

import torch

from ..kernels.normals import face_sums_kernel, normalize_kernel
from ..reference.image_formation import check_points, check_triangles
from .bridge import AutodiffOp, check_device

__all__ = ["vertex_normals", "vertex_adjacency"]


@functools.cache
def _ops():
    sums = AutodiffOp(face_sums_kernel(), lambda v, tri: [torch.zeros_like(v)], differentiable=(0,))
    unit = AutodiffOp(normalize_kernel(), lambda s: [torch.zeros_like(s)], differentiable=(0,))
    return sums, unit


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals [B, N, 3] (see module docstring).

    vertices [B, N, 3] float32/float64 contiguous, in any frame (the normals come out in the same
    frame); triangles [F, 3] int32, counter-clockwise seen from outside, indices in [0, N).
    Differentiable w.r.t. vertices.
    """
    check_points("vertices", vertices)
    check_device("vertices", vertices)
    check_triangles(triangles, vertices.shape[1], like=vertices)
    sums, unit = _ops()
    return unit(sums(vertices, triangles))


# ----------------------------------------------------------------------------------------------
# Vertex -> incident-corner adjacency, for the fused layer's gather formulation (no atomics).

_ADJ_LOCK = threading.Lock()
_ADJ_CACHE: list = []  # [(n_vertices, triangles copy, (offsets, others))], most recent last
_ADJ_CACHE_SIZE = 8


def _build_adjacency(triangles: torch.Tensor, n_vertices: int):
    tri = triangles.long()
    centre = tri.reshape(-1)
    # A face's normal is invariant under cyclic rotation of its corners, so each corner sees its face
    # as (itself, next, prev) and can compute (v_next - v) x (v_prev - v) on its own.
    nxt, prv = tri[:, [1, 2, 0]].reshape(-1), tri[:, [2, 0, 1]].reshape(-1)
    order = torch.argsort(centre, stable=True)  # stable: a deterministic summation order
    others = torch.stack([nxt[order], prv[order]], dim=-1).to(torch.int32).contiguous()
    counts = torch.bincount(centre, minlength=n_vertices)
    offsets = torch.zeros(n_vertices + 1, dtype=torch.int64, device=triangles.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return offsets.to(torch.int32), others


def vertex_adjacency(triangles: torch.Tensor, n_vertices: int):
    """``(offsets [N+1] int32, others [3F, 2] int32)``: vertex i's incident corners are rows
    ``offsets[i]:offsets[i+1]`` of ``others``, each holding that face's next and previous vertex.

    Cached by content (the topology of a face model never changes, and building it costs an argsort
    of 3F entries, ~ms): a hit costs one ``torch.equal`` over the triangles.
    """
    with _ADJ_LOCK:
        for k, (n, tri, adj) in enumerate(_ADJ_CACHE):
            if (n == n_vertices and tri.shape == triangles.shape and tri.device == triangles.device
                    and torch.equal(tri, triangles)):
                _ADJ_CACHE.append(_ADJ_CACHE.pop(k))
                return adj
    adj = _build_adjacency(triangles, n_vertices)
    with _ADJ_LOCK:
        _ADJ_CACHE.append((n_vertices, triangles.detach().clone(), adj))
        del _ADJ_CACHE[:-_ADJ_CACHE_SIZE]
    return adj
