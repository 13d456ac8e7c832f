"""A user's face photos -> the cached crop folder training reads (:mod:`fml_taichi.data.cached_dataset`).

For every image under ``in_dir`` (recursive: CelebA's flat folder, LFW's one folder per person, ...):

1. read it (:func:`fml_taichi.io.images.load_image`); unreadable or truncated files are *errors*;
2. detect faces and their 68 landmarks (:class:`fml_taichi.data.detect.DlibDetector`) and keep the most
   confident face (data sets of portraits hold one subject per image; a bystander is less confident
   or smaller, and would only add a near-duplicate crop);
3. drop it when its confidence (detector score x landmark-fit plausibility, defined in
   :mod:`fml_taichi.data.detect`) is below ``min_confidence``;
4. crop it with the rule reconstruction uses (:func:`fml_taichi.data.crop.crop_box_from_landmarks`:
   framed like the synthetic training faces) and write ``NAME.png``, ``NAME.landmarks.npy`` (crop
   pixels) and ``NAME.confidence.npy`` (the face's confidence for all 68 points).

``NAME`` is the image's path relative to ``in_dir`` without extension, with ``/`` written as ``__``
(the crop folder is flat): ``George_W_Bush/George_W_Bush_0001.jpg`` -> ``George_W_Bush__George_W_Bush_0001``.
Existing crops are kept (a re-run only processes new images) unless ``overwrite``. The folder also
gets ``preprocess_report.json``: settings, counts, and every dropped or failed image with its reason.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..common.atomic import write_text
from ..io.images import load_image
from .cached_dataset import MANIFEST, write_crop, write_manifest
from .crop import CROP_SIZE, crop_box_from_landmarks, crop_image
from .inputs import list_images

__all__ = ["PreprocessSummary", "crop_name", "preprocess_folder", "REPORT"]

REPORT = "preprocess_report.json"


@dataclass
class PreprocessSummary:
    """kept / skipped (already cached) counts, ``dropped`` reasons -> count, ``errors`` [(path, message)]."""

    total: int = 0
    kept: int = 0
    skipped: int = 0
    dropped: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)
    details: list = field(default_factory=list)

    def line(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"{self.total} image(s): kept {self.kept}, already cached {self.skipped}, "
                f"dropped {sum(self.dropped.values())} ({drops}), unreadable {len(self.errors)}")


def crop_name(path: str, in_dir: str) -> str:
    """The flat crop name of an image (module docstring)."""
    rel = os.path.splitext(os.path.relpath(path, in_dir))[0]
    return rel.replace(os.sep, "__").replace("/", "__").lstrip(".") or "image"


def _process(path: str, name: str, out_dir: str, detector, landmarks_3d, size: int, min_confidence: float):
    """One image -> ("kept", info) or ("dropped", reason); raises for an unreadable file."""
    image = load_image(path)
    faces = detector(image, path)
    if not faces:
        return "dropped", "no face"
    face = max(faces, key=lambda d: d.confidence)
    if face.confidence < min_confidence:
        return "dropped", "low confidence"
    box = crop_box_from_landmarks(face.landmarks, landmarks_3d)
    crop = crop_image(image, box, size)
    landmarks = box.to_crop(face.landmarks, size).astype(np.float32)
    write_crop(out_dir, name, crop, landmarks, face.landmark_conf)
    return "kept", {"confidence": round(face.confidence, 4), "faces": len(faces)}


def preprocess_folder(in_dir, out_dir, detector, landmarks_3d, size: int = CROP_SIZE, min_confidence: float = 0.5,
                      overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """Run the module's steps over ``in_dir`` into ``out_dir``; returns a :class:`PreprocessSummary`.

    Args:
        detector: callable ``(image, path) -> list[Detection]`` (e.g. ``DlibDetector()``).
        landmarks_3d: [68, 3] mean-face landmarks of the model being trained (the crop rule's reference).
        size: crop side (the training config's ``data.image_size``). min_confidence: in [0, 1].

    Raises:
        FileNotFoundError: ``in_dir`` is missing. ValueError: it holds no images. OSError: ``out_dir``
        cannot be written.
    """
    in_dir, out_dir = os.fspath(in_dir), os.fspath(out_dir)
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise ValueError(f"min_confidence: expected a value in [0, 1], got {min_confidence!r}")
    images = list_images(in_dir)
    if not images:
        raise ValueError(f"no images found under {in_dir!r} (looked for common image extensions, recursively)")
    os.makedirs(out_dir, exist_ok=True)
    _check_existing(out_dir, size)
    write_manifest(out_dir, size)
    summary = PreprocessSummary(total=len(images))
    used: set = set()
    bar = tqdm(images, desc="preprocess", unit="img", disable=not progress)
    for path in bar:
        name = crop_name(path, in_dir)
        while name in used:  # "a.jpg" and "a.png" side by side
            name += "_"
        used.add(name)
        if not overwrite and os.path.exists(os.path.join(out_dir, name + ".png")):
            summary.skipped += 1
            continue
        try:
            status, info = _process(path, name, out_dir, detector, landmarks_3d, size, min_confidence)
        except (ValueError, OSError) as e:
            summary.errors.append((path, str(e)))
            summary.details.append({"image": path, "status": "unreadable", "reason": str(e)})
            continue
        if status == "kept":
            summary.kept += 1
            summary.details.append({"image": path, "status": "kept", "name": name, **info})
        else:
            summary.dropped[info] += 1
            summary.details.append({"image": path, "status": "dropped", "reason": info})
        bar.set_postfix(kept=summary.kept, dropped=sum(summary.dropped.values()))
    _write_report(out_dir, summary, min_confidence, size)
    return summary


def _check_existing(out_dir: str, size: int) -> None:
    """Refuse to mix crop sizes in one folder (training would reject it later, less clearly)."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f).get("image_size")
    except (OSError, ValueError, AttributeError):
        return  # unreadable manifest: rewritten below
    if old != size:
        raise ValueError(f"{out_dir!r} already holds {old}px crops; preprocess into a new folder for {size}px crops")


def _write_report(out_dir: str, s: PreprocessSummary, min_confidence: float, size: int) -> None:
    doc = {"min_confidence": min_confidence, "image_size": size, "total": s.total, "kept": s.kept,
           "already_cached": s.skipped, "dropped": dict(s.dropped), "unreadable": len(s.errors),
           "confidence": "dlib HOG score x landmark-fit plausibility (fml_taichi.data.detect)",
           "images": s.details}
    write_text(os.path.join(out_dir, REPORT), json.dumps(doc, indent=1) + "\n")
