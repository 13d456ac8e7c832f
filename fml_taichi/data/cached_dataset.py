"""The cached crop folder: the on-disk format training reads for real (non-synthetic) images.

Preprocessing (face detection, landmark detection, cropping; a separate command) turns a user's
image folder (CelebA/LFW-like layouts) into this flat folder, which training then reads with
:class:`CachedCropDataset`. Format, version 1::

    ROOT/
      crops.json               {"format": "fml_taichi.crops", "version": 1, "image_size": 240}
      NAME.png                 the square crop, image_size x image_size, RGB (8 or 16 bit)
      NAME.landmarks.npy       float32 [68, 2]: 0-based (x, y) pixels in the crop, iBUG 300-W order
        or NAME.pts            the same points as an iBUG .pts file (1-based on disk)
      NAME.confidence.npy      optional float32 [68] in [0, 1] (detector confidence; default: 1,
                               or 0 for points a .pts file marks missing)

Items are the PNGs in ROOT (not recursive), sorted by name so the order is the same everywhere.
Every crop must have landmarks; a missing or malformed file raises an error naming it when the
dataset is opened (landmarks are small and checked up front) or when the image is read.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..common.atomic import atomic_path, write_text
from ..io.images import load_image, write_png
from ..io.pts import read_pts

FORMAT = "fml_taichi.crops"
VERSION = 1
MANIFEST = "crops.json"
N_LANDMARKS = 68


def write_manifest(root: str | os.PathLike, image_size: int) -> None:
    """Create (or overwrite) ``ROOT/crops.json`` declaring the crop size."""
    write_text(os.path.join(root, MANIFEST),
               json.dumps({"format": FORMAT, "version": VERSION, "image_size": int(image_size)}, indent=1) + "\n")


def write_crop(root: str | os.PathLike, name: str, image, landmarks, confidence=None) -> None:
    """Write one item of a cached crop folder (image PNG, landmarks .npy, optional confidence .npy).

    image: [S, S, 3] float in [0, 1] or uint8; landmarks [68, 2] 0-based pixels; confidence [68].
    Every file is written atomically. Writes the manifest too if the folder has none.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"name: expected a plain file stem, got {name!r}")
    img = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
        raise ValueError(f"image: expected a square (S, S, 3) crop, got {img.shape}")
    lm = _as_f32(landmarks)
    _check_landmarks(lm, f"landmarks of {name!r}")
    os.makedirs(root, exist_ok=True)
    manifest = os.path.join(root, MANIFEST)
    if not os.path.exists(manifest):
        write_manifest(root, img.shape[0])
    write_png(os.path.join(root, name + ".png"), img)
    _save_npy(os.path.join(root, name + ".landmarks.npy"), lm)
    if confidence is not None:
        conf = _as_f32(confidence)
        _check_confidence(conf, f"confidence of {name!r}")
        _save_npy(os.path.join(root, name + ".confidence.npy"), conf)


def _as_f32(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)


def _save_npy(path: str, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


def _check_landmarks(lm: np.ndarray, what: str) -> None:
    if lm.shape != (N_LANDMARKS, 2):
        raise ValueError(f"{what}: expected shape ({N_LANDMARKS}, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError(f"{what}: contains NaN or inf values")


def _check_confidence(conf: np.ndarray, what: str) -> None:
    if conf.shape != (N_LANDMARKS,):
        raise ValueError(f"{what}: expected shape ({N_LANDMARKS},), got {conf.shape}")
    if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
        raise ValueError(f"{what}: confidences must be finite and lie in [0, 1]")


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{what}: cannot read {path!r} ({e})") from e


class CachedCropDataset(Dataset):
    """Items of a cached crop folder as dicts of tensors.

    Each item: ``image`` [S, S, 3] float32 in [0, 1], ``landmarks`` [68, 2] float32 (pixels),
    ``landmark_conf`` [68] float32, ``name`` (str). ``indices`` selects a subset (e.g. a
    train/validation split) of the sorted items.
    """

    def __init__(self, root: str | os.PathLike, image_size: int | None = None, indices=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"cached crop folder not found: {root!r}")
        self.root = root
        self.image_size = self._read_manifest(image_size)
        names = sorted(f[:-4] for f in os.listdir(root) if f.endswith(".png") and not f.startswith("."))
        if not names:
            raise ValueError(f"cached crop folder {root!r} holds no .png crops")
        self.names = names if indices is None else [names[i] for i in indices]
        # Landmarks are small: read and check them all now, so a bad file fails before training starts.
        self._landmarks, self._conf = [], []
        for name in self.names:
            lm, conf = self._read_landmarks(name)
            self._landmarks.append(torch.from_numpy(lm))
            self._conf.append(torch.from_numpy(conf))

    def _read_manifest(self, image_size: int | None) -> int:
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} not found: not a cached crop folder (run the preprocessing "
                                    "command first, or see fml_taichi.data.cached_dataset for the format)")
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path!r} is not valid JSON ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{path!r}: not a crop-folder manifest (format must be {FORMAT!r})")
        if manifest.get("version") != VERSION:
            raise ValueError(f"{path!r}: unsupported version {manifest.get('version')!r} (this code reads {VERSION})")
        size = manifest.get("image_size")
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"{path!r}: image_size must be a positive int, got {size!r}")
        if image_size is not None and size != image_size:
            raise ValueError(f"{self.root!r} holds {size}px crops but the config expects {image_size}px "
                             "(data.image_size)")
        return size

    def _read_landmarks(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        npy = os.path.join(self.root, name + ".landmarks.npy")
        pts = os.path.join(self.root, name + ".pts")
        conf = None
        if os.path.exists(npy):
            lm = _load_npy(npy, f"landmarks of {name!r}")
        elif os.path.exists(pts):
            lm, conf = read_pts(pts)
        else:
            raise FileNotFoundError(f"crop {name!r} in {self.root!r} has no landmarks "
                                    f"({name}.landmarks.npy or {name}.pts)")
        _check_landmarks(lm, f"landmarks of {name!r}")
        cpath = os.path.join(self.root, name + ".confidence.npy")
        if os.path.exists(cpath):
            conf = _load_npy(cpath, f"confidence of {name!r}")
            _check_confidence(conf, f"confidence of {name!r}")
        elif conf is None:
            conf = np.ones(N_LANDMARKS, np.float32)
        return lm.astype(np.float32), conf.astype(np.float32)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} crops")
        name = self.names[i]
        path = os.path.join(self.root, name + ".png")
        img = load_image(path)
        if img.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f"crop {path!r} is {img.shape[1]}x{img.shape[0]}, the manifest says "
                             f"{self.image_size}x{self.image_size}")
        return {"image": torch.from_numpy(img), "landmarks": self._landmarks[i].clone(),
                "landmark_conf": self._conf[i].clone(), "name": name}
