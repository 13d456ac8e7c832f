"""Converter for FLAME (``generic_model.pkl``, e.g. FLAME 2020): the linear shape and expression space.

Read: ``v_template`` (N, 3) metres, ``f`` (F, 3) 0-based triangles, ``shapedirs`` (N, 3, S + E), the
first ``n_shape`` (300 in FLAME 2020) columns shape, the rest (100) expression. FLAME's blendshapes
are already scaled so that coefficients have unit variance (its shape prior is ||beta||^2), so they are
stored as they are and all sigmas are 1. Pose-dependent parts (joints, skinning, pose correctives) are
not part of a linear 3DMM and are ignored: the model is FLAME at zero pose. FLAME has no albedo in this
file, so the low-frequency reflectance space is used. Frame: y up, z out of the face (metres) -> model
space by a 180 degree turn about x; the origin is moved to the centre of the template's bounding box
(FLAME's own origin sits low, near the neck joint), so it lies near the head centre as the
conventions require.

Pickles: the official file is a Python 2 pickle whose arrays are ``chumpy`` objects. It is read with
:mod:`fml_taichi.common.safe_pickle`, which admits only numpy arrays, scipy sparse matrices and a stand-in for
chumpy's arrays (so chumpy need not be installed) and refuses anything else before it runs: a model
file cannot run code. Files re-saved with plain numpy arrays (``{k: np.asarray(v) ...}``) load too.

Landmarks are required: FLAME ships them separately as barycentric embeddings (e.g. DECA's
``landmark_embedding.npy`` with ``full_lmk_faces_idx``/``full_lmk_bary_coords``, 68 points), or pass 68
vertex indices.

Licence: FLAME is under its own non-commercial "FLAME model licence" (``docs/face_models.md``).
"""
from __future__ import annotations

import numpy as np

from ...common import safe_pickle
from ..assemble import BFM_TO_MODEL, unit_scale
from ..face_model import FaceModel
from . import common


def _unpickle(path: str) -> dict:
    data = safe_pickle.load(path)  # RefusedPickle / ValueError name the file
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of arrays (FLAME generic_model.pkl), got {type(data).__name__}")
    return data


def _plain(value):
    """chumpy objects expose their value as ``.r``; plain arrays pass through."""
    return value.r if hasattr(value, "r") and not isinstance(value, np.ndarray) else value


def load_flame(
    path,
    landmarks,
    n_shape: int = 300,
    m_shape: int | None = None,
    m_expression: int | None = None,
    m_reflectance: int = 48,
    unit: str | None = "m",
) -> FaceModel:
    """Convert a FLAME ``generic_model.pkl`` into a :class:`FaceModel` (float32).

    ``landmarks``: 68 vertex indices or a landmark embedding file (see :func:`.common.read_landmarks`).
    ``n_shape``: how many of the ``shapedirs`` columns are shape (the rest are expression).
    ``m_shape`` / ``m_expression``: keep only the first modes. ``unit``: 'm' for real FLAME files.
    """
    path = common.require_file(path, "FLAME model file")
    data = _unpickle(path)
    for key in ("v_template", "f", "shapedirs"):
        if key not in data:
            raise ValueError(f"{path}: {key}: missing field (not a FLAME generic_model.pkl?)")
    v = common.array(path, "v_template", _plain(data["v_template"]), shape=(None, 3))
    n = len(v)
    tri = common.triangles_checked(path, "f", common.array(path, "f", _plain(data["f"]), kind="i"), n)
    dirs = common.array(path, "shapedirs", _plain(data["shapedirs"]), shape=(n, 3, None))
    if not 0 < n_shape <= dirs.shape[2]:
        raise ValueError(f"{path}: shapedirs: has {dirs.shape[2]} columns, cannot take n_shape={n_shape} as shape")
    scale = unit_scale(unit, v)
    to_model = BFM_TO_MODEL * scale
    mean = v * to_model
    mean -= 0.5 * (mean.min(axis=0) + mean.max(axis=0))  # origin at the head's bounding-box centre
    shape = dirs[:, :, :n_shape][:, :, :m_shape] * to_model[None, :, None]
    expr = dirs[:, :, n_shape:][:, :, :m_expression] * to_model[None, :, None]
    lms = common.read_landmarks(landmarks, n, tri)
    return common.finish(path, mean, shape, expr, tri, lms, None, None, m_reflectance)
