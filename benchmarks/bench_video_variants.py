"""Tracker and fit settings against the photo clip's truth: what each one does to the rotation error.

The photo clip of ``benchmarks/bench_video.py`` (300 frames, 640 x 480, yaw +-45, roll +-30, pitch
+-10 degrees, camera focal 800 px) is rendered once (or reused from ``--workdir``), decoded from its
MP4 as the CLI would, and each variant runs the :class:`~fml_taichi.recon.tracking.FaceTracker` on
the decoded frames in this process, then the 16-frame window smoothing of the stream, then
:func:`fml_taichi.eval.video_metrics.score_track`. No overlay, encoder or file output: the
figures isolate the tracker + fit + smoothing (the end-to-end rate is ``bench_video.py``'s).

Variants (one change from the default each, unless named otherwise):

* tracker settings (:class:`~fml_taichi.recon.tracking.TrackerConfig`): jaw weight, the facing
  weights, the fixed identity, the per-frame tracker as first built (the baseline of the changes);
* landmark-fit settings (:class:`~fml_taichi.recon.landmark_fit.LandmarkFitConfig`): the expression
  prior's width, the detector-noise level that weighs the data against the prior, the fast fit;
* the landmark source: dlib's points averaged with those on the mirrored patch (test-time
  flipping), or over 9 boxes shifted by +-3 % of the side (test-time box jitter);
* the smoothing window (8 / 24 frames each side instead of 16), and a Huber-robust fit of the same
  local quadratic (:func:`huber_smooth_track`);
* the clip's true landmarks + the synthetic detector's noise (1.5 px SD) instead of dlib: the fit's floor.

Columns: median rotation error (smoothed; within / beyond 30 degrees of true yaw), p90, the slopes
of estimated on true pitch / yaw / roll, jitter raw -> smoothed and their ratio, lag added by
smoothing, frames found, and the tracker's seconds relative to the default run (same process, after
a warm-up run; the machine is shared, ``load_average`` is recorded). Outputs: ``--json`` (every figure), ``--plot``
(bars of the median errors) and ``<plot stem>_pitch.png`` (estimated against true pitch).

    python benchmarks/bench_video_variants.py --json benchmarks/results/video_variants.json \\
        --plot benchmarks/results/video_variants.png
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import numpy as np  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FOCAL_PX = 800.0
#: dlib's 68 points of a horizontally mirrored face, in the original face's order.
MIRROR_68 = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                  54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
COLUMNS = ("rotation_error_deg_median", "rotation_error_deg_median_within_30", "rotation_error_deg_median_beyond_30",
           "rotation_error_deg_p90", "pitch_slope", "yaw_slope", "roll_slope", "jitter_raw_deg", "jitter_deg",
           "jitter_ratio", "lag_added_frames", "found", "seconds_vs_default")


def mirrored_average(landmarks_in_boxes):
    """``(image, boxes) -> points``: the mean of the predictor's points and those it finds on the
    mirrored image, mirrored back (:data:`MIRROR_68` renumbers them)."""
    def run(image, boxes):
        w = image.shape[1]
        direct = landmarks_in_boxes(image, boxes)
        flipped = landmarks_in_boxes(np.ascontiguousarray(image[:, ::-1]),
                                     [np.array([w - b[2], b[1], w - b[0], b[3]]) for b in boxes])
        out = []
        for a, b in zip(direct, flipped):
            if a is None or b is None:
                out.append(a if b is None else None)
                continue
            back = np.asarray(b, np.float64)[MIRROR_68].copy()
            back[:, 0] = w - 1 - back[:, 0]
            out.append((np.asarray(a, np.float64) + back) / 2)
        return out
    return run


def box_jitter_average(landmarks_in_boxes, shift=0.03):
    """``(image, boxes) -> points``: the mean of the predictor's points over 9 boxes shifted by
    ``-shift, 0, +shift`` sides in x and y."""
    def run(image, boxes):
        out = []
        for b in boxes:
            side = b[2] - b[0]
            shifted = [np.asarray(b, np.float64) + side * np.array([dx, dy, dx, dy])
                       for dx in (-shift, 0.0, shift) for dy in (-shift, 0.0, shift)]
            pts = [p for p in landmarks_in_boxes(image, shifted) if p is not None]
            out.append(np.mean(pts, 0) if pts else None)
        return out
    return run


def huber_smooth_track(track, half_window=16, c=1.5, iterations=3, floor_deg=0.5) -> np.ndarray:
    """The window smoothing's local quadratic, fitted by iteratively reweighted least squares with
    Huber weights (residual scale: 1.4826 x the window's median residual, at least ``floor_deg``):
    a robust variant against single bad frames."""
    x = np.asarray(track, np.float64)
    out = np.empty_like(x)
    for t in range(len(x)):
        lo, hi = max(0, t - half_window), min(len(x), t + half_window + 1)
        dt = np.arange(lo, hi, dtype=np.float64) - t
        design = np.stack([dt ** d for d in range(3 if len(dt) >= 4 else 2)], 1)
        w = np.ones(len(dt))
        for _ in range(iterations):
            sw = np.sqrt(w)[:, None]
            beta = np.linalg.lstsq(design * sw, x[lo:hi] * sw, rcond=None)[0]
            r = np.linalg.norm(x[lo:hi] - design @ beta, axis=1)
            scale = max(1.4826 * float(np.median(r)), np.radians(floor_deg))
            w = np.minimum(1.0, c * scale / np.maximum(r, 1e-12))
        out[t] = beta[0]
    return out


def _decode(path: str) -> list:
    """Every frame of ``path`` as uint8 grey (the library's reader, exact back to 8 bits)."""
    import cv2

    from fml_taichi.data.video import VideoReader

    with VideoReader(path) as reader:
        return [cv2.cvtColor((f * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY) for f in reader]


def _photo_clip(work: str, frames: int, face_model):
    """(mp4 path, truth): the photo clip of bench_video, rendered unless ``work`` already holds it."""
    from fml_taichi.data.synthetic_clip import ClipConfig, ClipTruth, write_clip
    from fml_taichi.eval.photo_head import PORTRAIT_FOCAL_FACTOR, default_photo, photo_head

    clip, truth_path = os.path.join(work, "clip.mp4"), os.path.join(work, "truth.npz")
    if os.path.exists(clip) and os.path.exists(truth_path):
        truth = ClipTruth.load(truth_path)
        if len(truth.rotation) == frames:
            return clip, truth
    app = photo_head(default_photo(), face_model, focal_factor=PORTRAIT_FOCAL_FACTOR)
    truth = write_clip(clip, ClipConfig(frames=frames, appearance="photo", background="photo"), face_model, app)
    truth.save(truth_path)
    return clip, truth


class _Annotated:
    """The clip's noisy true landmarks as detector and shape predictor (frame index set per call)."""

    def __init__(self, landmarks):
        from fml_taichi.recon.tracking import landmark_box

        self.landmarks, self.index, self._box = landmarks, 0, landmark_box

    def detect(self, image):
        from types import SimpleNamespace

        lm = self.landmarks[self.index]
        return [SimpleNamespace(box=self._box(lm), landmarks=lm, score=float("inf"))]

    def __call__(self, image, boxes):
        return [self.landmarks[self.index] for _ in boxes]


PER_FRAME_NAME = "per-frame tracker (first built: all points alike, a shape per frame, fast fit, 8-frame window)"
#: Bar labels of the variants (the chart has ~100 px per group).
SHORT = {"default": "default", "jaw weight 0": "jaw 0", "jaw weight 0.1": "jaw 0.1", "jaw weight 1": "jaw 1",
         "no facing weights": "no facing", "no fixed identity": "no identity", "fast fit (2 rounds)": "fast fit",
         "expression prior 1x (not widened)": "expr 1x", "expression prior 4x": "expr 4x",
         "detector noise 0.0125 IOD (data weighs 4x)": "noise /2", "detector noise 0.05 IOD (data weighs 1/4)": "noise x2",
         "points: mirrored-patch average": "mirror avg", "points: 9-box average": "9-box avg",
         "smoothing 8 frames each side": "smooth 8", "smoothing 24 frames each side": "smooth 24",
         "smoothing: Huber-robust local quadratic, 16 frames": "Huber smooth",
         "truth + noise landmarks (the fit's floor)": "truth+noise", PER_FRAME_NAME: "per-frame"}


def _variants():
    """(name, tracker kwargs, fit config kwargs or None for TRACK_FIT, landmark wrapper, smoothing half
    window, use the truth + noise landmarks)."""
    from fml_taichi.recon.tracking import PER_FRAME_TRACKING

    return [
        ("default", {}, None, None, 16, False),
        (PER_FRAME_NAME, dict(PER_FRAME_TRACKING), dict(iterations=2, pose_steps=1), None, 8, False),
        ("jaw weight 0", {"jaw_weight": 0.0}, None, None, 16, False),
        ("jaw weight 0.1", {"jaw_weight": 0.1}, None, None, 16, False),
        ("jaw weight 1", {"jaw_weight": 1.0}, None, None, 16, False),
        ("no facing weights", {"facing_weights": False}, None, None, 16, False),
        ("no fixed identity", {"identity_frames": 0}, None, None, 16, False),
        ("expression prior 1x (not widened)", {}, dict(expression_scale=1.0), None, 16, False),
        ("expression prior 4x", {}, dict(expression_scale=4.0), None, 16, False),
        ("detector noise 0.0125 IOD (data weighs 4x)", {}, dict(expression_scale=2.0, sigma_nme=0.0125), None, 16,
         False),
        ("detector noise 0.05 IOD (data weighs 1/4)", {}, dict(expression_scale=2.0, sigma_nme=0.05), None, 16, False),
        ("fast fit (2 rounds)", {}, dict(expression_scale=2.0, iterations=2), None, 16, False),
        ("points: mirrored-patch average", {}, None, mirrored_average, 16, False),
        ("points: 9-box average", {}, None, box_jitter_average, 16, False),
        ("smoothing 8 frames each side", {}, None, None, 8, False),
        ("smoothing 24 frames each side", {}, None, None, 24, False),
        ("smoothing: Huber-robust local quadratic, 16 frames", {}, None, None, "huber", False),
        ("truth + noise landmarks (the fit's floor)", {}, None, None, 16, True),
    ]


def run_variant(pipe, frames, truth, k, tracker_kw, fit_kw, wrapper, half_window, annotated):
    """Track, smooth and score one variant; returns (scores, tracker seconds, per-frame arrays)."""
    from fml_taichi.eval.video_metrics import score_track
    from fml_taichi.recon.landmark_fit import LandmarkFitConfig, LandmarkFitter
    from fml_taichi.recon.stream import DETECT_MAX_SIDE, TRACK_FIT
    from fml_taichi.recon.tracking import FaceTracker, TrackerConfig
    from fml_taichi.recon.window_smoothing import smooth_track

    fitter = LandmarkFitter(pipe.face_model, LandmarkFitConfig(**fit_kw) if fit_kw else TRACK_FIT)
    det = copy.copy(pipe.detector)  # as the stream does: the same predictor, detection on shrunk frames
    det.max_side = min(det.max_side, DETECT_MAX_SIDE)
    source = None
    if annotated:
        source = _Annotated(truth.noisy_landmarks)
        detect, in_boxes, tracker_kw = source.detect, source, {**tracker_kw, "upright": False}
    else:
        def detect(image):
            faces = [d for d in det(image) if d.confidence >= pipe.min_confidence]
            return sorted(faces, key=lambda d: -d.confidence)
        in_boxes = det.landmarks_in_boxes if wrapper is None else wrapper(det.landmarks_in_boxes)
    tracker = FaceTracker(detect, in_boxes, fitter, k, TrackerConfig(**tracker_kw))
    rows = []
    t0 = time.perf_counter()
    for i, grey in enumerate(frames):
        if source is not None:
            source.index = i
        rows.extend((i, f) for f in tracker(grey))
    seconds = time.perf_counter() - t0
    ids = np.array([f.face_id for _, f in rows])
    main = np.bincount(ids).argmax()
    kept = [(i, f) for i, f in rows if f.face_id == main]
    raw = np.stack([f.rotation for _, f in kept])
    arrays = {"face_id": np.zeros(len(kept), np.int64), "frame": np.array([i for i, _ in kept]), "every": 1,
              "rotation_raw": raw, "rotation": (huber_smooth_track(np.unwrap(raw, axis=0)) if half_window == "huber"
                                                else smooth_track(np.unwrap(raw, axis=0), half_window, half_window)),
              "fit_landmarks": np.stack([f.fit_landmarks for _, f in kept]),
              "landmarks": np.stack([f.landmarks for _, f in kept])}
    s = score_track(arrays, truth)
    s["jitter_ratio"] = s["jitter_raw_deg"] / max(s["jitter_deg"], 1e-12)
    s["detections"] = tracker.n_detections
    return s, seconds, arrays


def _pitch_plot(path, truth, runs: dict) -> None:
    """Estimated (smoothed) against true pitch, each run's frames sorted by true pitch, and y = x."""
    from fml_taichi.io.plots import plot_curves

    lo, hi = np.degrees(truth.rotation[:, 0].min()), np.degrees(truth.rotation[:, 0].max())
    series = {"estimate = truth": (np.array([lo, hi]), np.array([lo, hi]))}
    edges = np.linspace(lo, hi + 1e-9, 11)  # ten bins of true pitch: the median estimate in each
    for name, a in runs.items():
        tp, ep = np.degrees(truth.rotation[a["frame"], 0]), np.degrees(a["rotation"][:, 0])
        which = np.digitize(tp, edges) - 1
        full = [b for b in range(10) if (which == b).any()]
        series[name] = (np.array([np.median(tp[which == b]) for b in full]),
                        np.array([np.median(ep[which == b]) for b in full]))
    plot_curves(path, series, title="photo clip: estimated vs true pitch (smoothed; median per tenth of the range)", xlabel="true pitch (degrees)",
                ylabel="estimated pitch (degrees)", size=(900, 520))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=os.path.join(RESULTS, "video_variants.json"))
    ap.add_argument("--plot", default=os.path.join(RESULTS, "video_variants.png"))
    ap.add_argument("--workdir", default=None, help="keep (and reuse) the rendered clip here")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--only", default=None, help="run only variants whose name contains this (plus the default)")
    args = ap.parse_args()
    if args.frames < 40:
        print("bench_video_variants: --frames must be >= 40", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    from fml_taichi.common import runtime

    runtime.init()
    from fml_taichi.io.plots import plot_bars
    from fml_taichi.model import default_face_model
    from fml_taichi.recon.pipeline import FacePipeline

    work = args.workdir or tempfile.mkdtemp(prefix="bench_video_variants_")
    os.makedirs(work, exist_ok=True)
    load_before = os.getloadavg()
    clip, truth = _photo_clip(work, args.frames, default_face_model(4000))
    frames = _decode(clip)
    pipe = FacePipeline.from_checkpoint(None)
    h, w = frames[0].shape[:2]
    k = np.array([FOCAL_PX, FOCAL_PX, (w - 1) / 2, (h - 1) / 2])
    variants = [v for v in _variants() if args.only is None or v[0] == "default" or args.only in v[0]]
    run_variant(pipe, frames[:40], truth, k, {}, None, None, 16, False)  # warm-up: the seconds compare like with like
    results, arrays, base_seconds = {}, {}, None
    for i, (name, tkw, fkw, wrapper, half, annotated) in enumerate(variants):
        s, seconds, a = run_variant(pipe, frames, truth, k, tkw, fkw, wrapper, half, annotated)
        base_seconds = base_seconds or seconds
        s.update(seconds=seconds, seconds_vs_default=seconds / base_seconds, smoothing_half_window=half)
        results[name], arrays[name] = s, a
        print(f"[{i + 1}/{len(variants)}] {name}: median {s['rotation_error_deg_median']:.2f} deg, pitch slope "
              f"{s['pitch_slope']:.2f}", flush=True)
    load_after = os.getloadavg()

    print(f"\nphoto clip, {len(frames)} frames; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)")
    short = ("median", "<30", ">=30", "p90", "pitch k", "yaw k", "roll k", "jit raw", "jit sm", "ratio", "lag",
             "found", "time x")
    print(f"{'variant':60s} " + " ".join(f"{c:>7s}" for c in short))
    for name, s in results.items():
        print(f"{name[:60]:60s} " + " ".join(f"{s[c]:7.2f}" for c in COLUMNS))

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    stem, ext = os.path.splitext(args.plot)
    plot_bars(args.plot, {SHORT.get(n, n[:14]): {"median": s["rotation_error_deg_median"],
                                                   "within 30 yaw": s["rotation_error_deg_median_within_30"],
                                                   "beyond 30 yaw": s["rotation_error_deg_median_beyond_30"]}
                          for n, s in results.items()},
              title="photo clip: median rotation error (deg, smoothed) per variant", ylabel="degrees",
              size=(max(900, 120 * len(results)), 480))
    pitch_png = f"{stem}_pitch{ext}"
    picks = [n for n in ("default", "jaw weight 1", "no fixed identity", "points: mirrored-patch average",
                         "truth + noise landmarks (the fit's floor)") if n in arrays]
    _pitch_plot(pitch_png, truth, {n: arrays[n] for n in picks})
    out = {"clip": "photo", "frames": len(frames), "focal_px": FOCAL_PX, "variants": results,
           "load_average": {"before": load_before, "after": load_after}, "cores": os.cpu_count(),
           "plot": os.path.relpath(args.plot), "pitch_plot": os.path.relpath(pitch_png)}
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1, default=float)
    os.replace(tmp, args.json)
    print(f"-> {args.json}, {args.plot}, {pitch_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
