"""``fml-taichi preprocess IN_DIR --out CACHE_DIR``: face photos -> the cached crop folder training reads.

Detects the face of every image under IN_DIR (recursively; CelebA, LFW and similar layouts), finds
its 68 landmarks with dlib, drops doubtful detections by confidence, crops 240 x 240 framed like the
synthetic training faces and caches crop + landmarks + confidence (:mod:`fml_taichi.data.preprocess`).
Train on the result with ``data: {kind: folder, root: CACHE_DIR}``.

Exit code: 0 when the run finished and kept at least one face, 1 when some files were unreadable or
nothing was kept, 2 when it could not start (no detector, no images, an unwritable output folder).
"""
from __future__ import annotations

import argparse
import sys

HELP = "detect, landmark and crop face photos into a cached crop folder for training"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of face images (searched recursively)")
    p.add_argument("--out", required=True, metavar="CACHE_DIR", help="the cached crop folder to write")
    p.add_argument("--min-confidence", type=float, default=0.5, metavar="C",
                   help="drop faces whose confidence (dlib score x landmark-fit plausibility, 0-1) is below C "
                        "(default 0.5)")
    p.add_argument("--size", type=int, default=240, metavar="PX", help="crop side (default 240, the paper's)")
    p.add_argument("--landmark-model", metavar="FILE", default=None,
                   help="dlib shape_predictor_68_face_landmarks.dat (default: found automatically)")
    p.add_argument("--n-vertices", type=int, default=4000, metavar="N",
                   help="vertex count of the default face model whose mean landmarks frame the crop (default 4000)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose crop already exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _error(msg: str) -> None:
    print(f"fml-taichi preprocess: error: {msg}", file=sys.stderr)


def run(args) -> int:
    from ..data.crop import mean_landmarks_3d
    from ..data.detect import DetectorUnavailable, DlibDetector
    from ..data.preprocess import REPORT, preprocess_folder
    from ..model import default_face_model

    if not 0 <= args.min_confidence <= 1:
        _error(f"--min-confidence: expected a value in [0, 1], got {args.min_confidence}")
        return 2
    if args.size < 16:
        _error(f"--size: expected at least 16 px, got {args.size}")
        return 2
    try:
        landmarks_3d = mean_landmarks_3d(default_face_model(args.n_vertices))
        detector = DlibDetector(args.landmark_model, landmarks_3d=landmarks_3d)
        summary = preprocess_folder(args.in_dir, args.out, detector, landmarks_3d, args.size, args.min_confidence,
                                    args.overwrite, progress=not args.quiet)
    except (DetectorUnavailable, FileNotFoundError, ValueError, OSError) as e:
        _error(str(e))
        return 2
    for path, msg in summary.errors:
        prefix = "" if path in msg else f"{path}: "
        _error(f"{prefix}{msg}")
    print(f"preprocess: {summary.line()} -> {args.out} (details: {REPORT})")
    if summary.kept + summary.skipped == 0:
        _error(f"no face kept from {args.in_dir!r}; lower --min-confidence or check the images")
        return 1
    return 1 if summary.errors else 0
