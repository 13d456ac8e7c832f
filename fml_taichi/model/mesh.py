"""Triangle-mesh utilities used to build and check face models (numpy/scipy, build time only).

Triangles are ``(F, 3)`` integer arrays, counter-clockwise seen from outside (``docs/conventions.md``).
Nothing here is differentiable or on a hot path: these run once when a model is built or loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import Delaunay


def directed_edges(triangles: np.ndarray) -> np.ndarray:
    """The ``3F`` directed edges (v0,v1), (v1,v2), (v2,v0) of every triangle, triangle-major."""
    t = np.asarray(triangles)
    return np.stack([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], axis=1).reshape(-1, 2)


def _undirected_keys(directed: np.ndarray) -> np.ndarray:
    """One int64 per undirected edge (1-D keys: np.unique is several times faster than on rows)."""
    a = np.minimum(directed[:, 0], directed[:, 1]).astype(np.int64)
    b = np.maximum(directed[:, 0], directed[:, 1]).astype(np.int64)
    return a * (int(directed.max(initial=0)) + 1) + b


def edges(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges ``(E, 2)`` (smaller index first) and how many triangles use each."""
    d = directed_edges(triangles)
    _, first, counts = np.unique(_undirected_keys(d), return_index=True, return_counts=True)
    return np.sort(d[first], axis=1), counts


def edge_use_counts(triangles: np.ndarray) -> np.ndarray:
    """For each of the ``3F`` directed edges, how many triangles use its undirected edge."""
    _, inv, counts = np.unique(_undirected_keys(directed_edges(triangles)), return_inverse=True, return_counts=True)
    return counts[inv.ravel()]


def boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """Directed edges used by exactly one triangle, in that triangle's direction."""
    return directed_edges(triangles)[edge_use_counts(triangles) == 1]


def one_ring(triangles: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """1-ring neighbourhoods as CSR: ``offsets [N+1]`` and sorted ``indices [nnz]``, both int32.

    The neighbours of vertex ``i`` are ``indices[offsets[i]:offsets[i+1]]``. Isolated vertices have none.
    """
    d = directed_edges(triangles)
    both = np.concatenate([d, d[:, ::-1]])
    a = sp.coo_matrix((np.ones(len(both)), (both[:, 0], both[:, 1])), shape=(n_vertices, n_vertices)).tocsr()
    a.sum_duplicates()
    a.sort_indices()
    return a.indptr.astype(np.int32), a.indices.astype(np.int32)


def adjacency(triangles: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency matrix (float64)."""
    offsets, indices = one_ring(triangles, n_vertices)
    return sp.csr_matrix((np.ones(len(indices)), indices, offsets), shape=(n_vertices, n_vertices))


def graph_laplacian(triangles: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Combinatorial Laplacian ``D - A`` of the mesh graph (positive semi-definite)."""
    a = adjacency(triangles, n_vertices)
    return (sp.diags(np.asarray(a.sum(axis=1)).ravel()) - a).tocsr()


def face_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unnormalised ``(v1 - v0) x (v2 - v0)`` per triangle (length = twice the area)."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles)
    return np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (zero for vertices in no triangle)."""
    fn = face_normals(vertices, triangles)
    n = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(n, triangles[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops as vertex-index arrays, longest first.

    Assumes a manifold mesh (each boundary vertex starts exactly one boundary edge); at a non-manifold
    vertex the walk takes the first continuation, so loops there may merge.
    """
    b = boundary_edges(triangles)
    nxt: dict[int, int] = {}
    for s, e in b:
        nxt.setdefault(int(s), int(e))
    seen: set[int] = set()
    loops = []
    for s in nxt:
        if s in seen:
            continue
        loop = []
        cur = s
        while cur not in seen and cur in nxt:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    return sorted(loops, key=len, reverse=True)


def nonmanifold_vertices(triangles: np.ndarray) -> np.ndarray:
    """Vertices whose triangle fan is not a single disc or half-disc ("bow-ties"), or on an edge shared by >2."""
    b = boundary_edges(triangles)
    starts, counts = np.unique(b[:, 0], return_counts=True)
    bad = set(starts[counts > 1].tolist())
    e, c = edges(triangles)
    bad.update(e[c > 2].ravel().tolist())
    return np.asarray(sorted(bad), dtype=np.int64)


@dataclass
class MeshReport:
    """What :func:`check_mesh` found; :meth:`problems` lists the failures in words."""

    n_vertices: int
    n_triangles: int
    max_triangles_per_edge: int
    inconsistent_edges: int  # interior edges traversed in the same direction by both triangles
    degenerate_triangles: int  # repeated vertex or (near-)zero area
    nonmanifold_vertices: int
    unreferenced_vertices: int
    boundary_loops: int

    def problems(self) -> list[str]:
        out = []
        if self.max_triangles_per_edge > 2:
            out.append(f"an edge is shared by {self.max_triangles_per_edge} triangles")
        if self.inconsistent_edges:
            out.append(f"{self.inconsistent_edges} edges with inconsistent triangle orientation")
        if self.degenerate_triangles:
            out.append(f"{self.degenerate_triangles} degenerate triangles")
        if self.nonmanifold_vertices:
            out.append(f"{self.nonmanifold_vertices} non-manifold vertices")
        if self.unreferenced_vertices:
            out.append(f"{self.unreferenced_vertices} vertices in no triangle")
        return out


def check_mesh(vertices: np.ndarray, triangles: np.ndarray, area_eps: float = 1e-9) -> MeshReport:
    """Manifoldness, orientation consistency and degeneracy of a triangle mesh.

    ``area_eps`` is relative to the squared median edge length (scale-free).
    """
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    d = directed_edges(t)
    _, dir_counts = np.unique(d[:, 0] * (int(d.max(initial=0)) + 1) + d[:, 1], return_counts=True)
    e, c = edges(t)
    lengths = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    scale = float(np.median(lengths)) ** 2 if len(lengths) else 1.0
    area2 = np.linalg.norm(face_normals(v, t), axis=1)
    repeated = (t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 0] == t[:, 2])
    used = np.zeros(len(v), bool)
    used[t.ravel()] = True
    return MeshReport(
        n_vertices=len(v),
        n_triangles=len(t),
        max_triangles_per_edge=int(c.max()) if len(c) else 0,
        inconsistent_edges=int((dir_counts > 1).sum()),
        degenerate_triangles=int((repeated | (area2 <= area_eps * scale)).sum()),
        nonmanifold_vertices=len(nonmanifold_vertices(t)),
        unreferenced_vertices=int((~used).sum()),
        boundary_loops=len(boundary_loops(t)),
    )


def compact(triangles: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no triangle uses: returns (re-indexed triangles, kept old indices)."""
    used = np.zeros(n_vertices, bool)
    used[np.asarray(triangles).ravel()] = True
    kept = np.nonzero(used)[0]
    remap = np.full(n_vertices, -1, np.int64)
    remap[kept] = np.arange(len(kept))
    return remap[triangles], kept


def triangle_neighbours(triangles: np.ndarray) -> np.ndarray:
    """(F, 3): the triangle across edge k of each triangle (edge k = corners k, k+1), or -1 on the boundary.

    Assumes every edge has at most two triangles (true for a Delaunay triangulation).
    """
    keys = _undirected_keys(directed_edges(triangles))
    order = np.argsort(keys, kind="stable")
    same = keys[order][1:] == keys[order][:-1]
    nb = np.full(len(keys), -1, np.int64)
    a, b = order[:-1][same], order[1:][same]
    nb[a], nb[b] = b // 3, a // 3
    return nb.reshape(-1, 3)


def _peel_boundary(triangles: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Repeatedly remove bad triangles that touch the boundary; interior ones are kept.

    Delaunay fills the convex hull of the parameter domain, so concave parts of the real outline get
    covered by long thin triangles. Removing only those reachable from the boundary trims them without
    ever punching a hole into the interior (where a long triangle legitimately spans, e.g., a nostril).
    Returns the mask of kept triangles.
    """
    nb = triangle_neighbours(triangles)
    alive = np.ones(len(triangles), bool)
    while True:
        exposed = ((nb < 0) | ~alive[np.maximum(nb, 0)]).any(axis=1)
        drop = alive & bad & exposed
        if not drop.any():
            return alive
        alive &= ~drop


def _fix_bowties(triangles: np.ndarray, max_rounds: int = 50) -> np.ndarray:
    """Remove triangles around non-manifold vertices until none is left (keeps the larger fans)."""
    t = triangles
    for _ in range(max_rounds):
        bad = nonmanifold_vertices(t)
        if len(bad) == 0:
            return t
        # Drop every boundary triangle touching a bow-tie vertex: the dangling fan is small, the main
        # surface loses at most a boundary sliver, and the loop repeats until the mesh is manifold.
        on_boundary = (edge_use_counts(t) == 1).reshape(-1, 3).any(axis=1)
        touches = np.isin(t, bad).any(axis=1)
        t = t[~(touches & on_boundary)]
    raise RuntimeError("could not make the triangulation manifold")


def remove_small_components(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """Keep only the triangles of the largest edge-connected component."""
    a = adjacency(triangles, n_vertices)
    _, label = sp.csgraph.connected_components(a, directed=False)
    tri_label = label[triangles[:, 0]]
    main = np.bincount(tri_label).argmax()
    return triangles[tri_label == main]


def triangulate_param(
    param: np.ndarray,
    vertices: np.ndarray,
    max_edge_ratio: float = 4.0,
    min_angle_deg: float = 5.0,
) -> np.ndarray:
    """Triangulate a surface patch that is a height field over the 2-D parametrisation ``param``.

    Delaunay on ``param`` (N, 2), then boundary peeling of triangles that are bad in 3-D: an edge longer
    than ``max_edge_ratio`` times the local vertex spacing (nearest-neighbour distance, from a k-d tree)
    or a sliver with a 3-D angle below ``min_angle_deg``. Bow-tie vertices are repaired and only the
    largest component kept. The result is counter-clockwise in ``param``; callers orient it in 3-D
    with :func:`orient_outward`. Vertices may end up unreferenced (see :func:`compact`).
    """
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, dtype=np.float64)
    tri = Delaunay(np.asarray(param, dtype=np.float64)).simplices.astype(np.int64)
    dist, _ = cKDTree(v).query(v, k=7)
    spacing = dist[:, 1:].mean(axis=1)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    lab, lbc, lca = (np.linalg.norm(x, axis=1) for x in (b - a, c - b, a - c))
    longest = np.maximum(np.maximum(lab, lbc), lca)
    too_long = longest > max_edge_ratio * spacing[tri].max(axis=1)
    # Smallest angle from the law of sines: sin(min) = 2 * area / (product of the two longer sides).
    area2 = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    sides = np.sort(np.stack([lab, lbc, lca], 1), axis=1)
    sin_min = area2 / np.maximum(sides[:, 1] * sides[:, 2], 1e-30)
    sliver = sin_min < np.sin(np.deg2rad(min_angle_deg))
    alive = _peel_boundary(tri, too_long | sliver)
    tri = _fix_bowties(tri[alive])
    return remove_small_components(tri, len(v))


def orient_outward(vertices: np.ndarray, triangles: np.ndarray, inside_point: np.ndarray) -> np.ndarray:
    """Flip all triangles if most of the (area-weighted) normals point toward ``inside_point``.

    Only a global flip: the caller's triangulation must already be consistently oriented.
    """
    v = np.asarray(vertices, dtype=np.float64)
    fn = face_normals(v, triangles)
    centres = v[triangles].mean(axis=1)
    outward = float((fn * (centres - np.asarray(inside_point))).sum())
    return triangles if outward >= 0 else triangles[:, ::-1].copy()


def subsample_param(param: np.ndarray, target: int, keep: np.ndarray | None = None, iterations: int = 12) -> np.ndarray:
    """About ``target`` well-spread vertices (sorted indices), always including ``keep``.

    Vertex clustering on a square grid over the 2-D parametrisation: each occupied cell keeps the vertex
    nearest its centre. The cell size is found by bisection so the count lands within a few percent of
    ``target``. Deterministic. Simple and robust: the kept vertices are a subset, so every per-vertex
    array (bases, landmarks, masks) stays consistent by indexing.
    """
    p = np.asarray(param, dtype=np.float64)
    n = len(p)
    keep = np.zeros(0, np.int64) if keep is None else np.asarray(keep, np.int64)
    if target >= n:
        return np.arange(n)
    lo_xy = p.min(axis=0)
    extent = float((p.max(axis=0) - lo_xy).max())

    def pick(h: float) -> np.ndarray:
        cell = np.floor((p - lo_xy) / h).astype(np.int64)
        centre = (cell + 0.5) * h + lo_xy
        d = np.linalg.norm(p - centre, axis=1)
        cid = cell[:, 0] * (int(extent / h) + 3) + cell[:, 1]
        order = np.lexsort((d, cid))  # by cell, nearest-to-centre first
        first = np.ones(n, bool)
        first[1:] = cid[order][1:] != cid[order][:-1]
        return np.union1d(order[first], keep)

    lo, hi = extent / np.sqrt(n) / 4, extent / 2
    best = pick(hi)
    for _ in range(iterations):
        h = np.sqrt(lo * hi)
        got = pick(h)
        if abs(len(got) - target) < abs(len(best) - target):
            best = got
        if len(got) > target:
            lo = h
        else:
            hi = h
    return best
