"""Video reconstruction against truth: speed end to end, rotation error, NME, jitter, lag, roll slope.

Renders synthetic moving-face clips with known pose (:mod:`fml_taichi.data.synthetic_clip`: 300
frames, 640 x 480, roll +-30, yaw +-45, pitch +-10 degrees, translation, expression changes) in two
appearances (``--appearance``):

* ``photo`` (the default clip): a model head textured from the public-domain NASA portrait in
  ``tests/data`` (:func:`fml_taichi.eval.photo_head.photo_head`: dlib + landmark fit on the photo,
  projective texture, model reflectance where the photo does not see the head) over the same photo
  with the face cut out: a real face's texture, what dlib was trained on;
* ``model``: the earlier clip, one synthetic identity (model albedo, variation, painted brows),
  out of dlib's domain (its points sit ~0.1 inter-ocular distances off there).

Each clip's MP4 goes through the real CLI path (``fml-taichi reconstruct clip.mp4 --focal-px 800``,
the clip's known camera) in this process:

1. **dlib**: ``--landmarks dlib`` (detection, then dlib's shape predictor in tracked boxes, the
   tracker's defaults; the default path where MediaPipe is not installed);
2. **dlib, per-frame tracking**: the same stream with the tracker as first built (every landmark
   weighted alike, a face shape per frame, the 2 x 1 landmark fit, 8-frame smoothing): the baseline
   of the tracker changes, run through :func:`fml_taichi.recon.stream.reconstruct_stream`;
3. **mediapipe**: ``--landmarks mediapipe``, MediaPipe's face landmarker instead of dlib
   (:mod:`fml_taichi.data.mediapipe_landmarks`; run only when it is installed), and
   **dlib + mediapipe**: ``--landmarks dlib+mediapipe``, dlib's tracked poses corrected by
   MediaPipe's every 4th frame (:mod:`fml_taichi.recon.pose_anchor`; the default path, ``--landmarks
   auto``, where MediaPipe is installed);
4. **synthetic landmarks**: ``--detector pts`` with ``clip.landmarks.npz`` next to the video, the
   clip's true landmarks plus the documented synthetic detector noise (1.5 px SD): the tracking /
   fit / smoothing chain apart from dlib's accuracy;
5. **two-pass baseline** (photo clip, or the first clip run): ``--two-pass`` (detection + encoder every
   frame) on the first ``--baseline-frames`` frames, for the speed ratio.

Scores (:func:`fml_taichi.eval.video_metrics.score_track`). The JSON's top level holds the default
path's run (``default_landmarks``: dlib + mediapipe, or dlib without MediaPipe) on the default clip (``fps_end_to_end``: frames / seconds of the stream pass, model loading excluded;
``cpu_ms_per_frame``: the process's CPU time over the stream pass, all threads, per frame: less
dependent on the machine's load than the rate;
``rotation_error_deg_median``, ``jitter_deg``, ``jitter_raw_deg``, ``jitter_ratio``, ``lag_frames``
(lag added by smoothing), ``roll_slope``, ``pitch_slope``, ``yaw_slope``, the median error within and
beyond 30 degrees of yaw, ...); ``clips.<appearance>.{dlib, dlib_per_frame_tracking,
mediapipe, dlib_mediapipe, synthetic_landmarks}`` every run; ``baseline``; ``load_average`` before and after (the machine is shared:
rates scale with the load). Pictures: ``--plot`` (pose against time on the default clip),
``<plot stem>_model.png`` (the model clip), ``<plot stem>_frames.png`` (frames of each clip with dlib's
points in red and the true landmarks in green).

    python benchmarks/bench_video.py --json benchmarks/results/video.json --plot benchmarks/results/video_pose.png
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import numpy as np  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FOCAL_PX = 800.0
TARGETS = {"fps_end_to_end": (">=", 60.0), "rotation_error_deg_median": ("<=", 3.0),
           "roll_slope": ("in", (0.9, 1.1)), "jitter_ratio": (">=", 3.0), "lag_frames": ("<=", 1.0)}
KEYS = ("fps_end_to_end", "cpu_ms_per_frame", "fps_without_detection", "frames", "found", "rotation_error_deg_median",
        "rotation_error_deg_median_raw", "rotation_error_deg_p90", "rotation_error_deg_median_within_30",
        "rotation_error_deg_median_beyond_30", "nme", "nme_raw_landmarks", "jitter_deg", "jitter_raw_deg",
        "jitter_ratio", "lag_frames", "lag_frames_smoothed_vs_truth", "roll_slope", "pitch_slope", "yaw_slope",
        "face_ids", "detections")
RUNS = ("dlib", "dlib_per_frame_tracking", "mediapipe", "dlib_mediapipe", "synthetic_landmarks")


def _mediapipe_ready() -> bool:
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        return False
    from fml_taichi.data.detect import DetectorUnavailable
    from fml_taichi.data.mediapipe_landmarks import find_face_landmarker_task

    try:
        find_face_landmarker_task()
    except DetectorUnavailable:
        return False
    return True


def _cli(args: list[str]) -> dict:
    from fml_taichi.apps.cli import main

    rc = main(["reconstruct", *args, "--quiet"])
    out = args[args.index("--out") + 1]
    with open(os.path.join(out, "summary.json")) as f:
        rec = json.load(f)["inputs"][0]
    if rc != 0 or rec.get("status") != "ok":
        raise SystemExit(f"bench_video: the CLI failed (rc {rc}): {rec.get('error')}")
    return rec


def _per_frame_tracking(clip: str, out: str) -> dict:
    """Run 2 (module docstring): the stream with the tracker's first settings."""
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.stream import FAST_TRACK_FIT, reconstruct_stream
    from fml_taichi.recon.tracking import PER_FRAME_TRACKING, TrackerConfig

    pipe = FacePipeline.from_checkpoint(None)
    return reconstruct_stream(pipe, clip, out, "clip", back=8, tracker_config=TrackerConfig(**PER_FRAME_TRACKING),
                              fit_config=FAST_TRACK_FIT, focal_px=FOCAL_PX)


def _scored(rec: dict, npz: str, truth) -> tuple[dict, dict]:
    from fml_taichi.eval.video_metrics import score_track

    z = dict(np.load(npz))
    s = score_track(z, truth)
    s.update(fps_end_to_end=rec["fps_end_to_end"], fps_without_detection=rec["fps_without_detection"],
             frames=rec["frames"], detections=rec["detections"], seconds=rec["seconds"],
             detection_seconds=rec["detection_seconds"], encoder_seconds=rec["encoder_seconds"],
             cpu_ms_per_frame=1e3 * rec["cpu_seconds"] / max(rec["frames"], 1))
    s["lag_frames_smoothed_vs_truth"] = s["lag_frames"]
    s["lag_frames"] = s.pop("lag_added_frames")
    s["jitter_ratio"] = s["jitter_raw_deg"] / max(s["jitter_deg"], 1e-12)
    return s, z


def _plot(path: str, truth, z: dict, zp: dict, zs: dict, clip: str, zm: dict | None = None,
          za: dict | None = None) -> None:
    """Three panels (yaw, roll, pitch) stacked: truth, dlib raw and smoothed, the per-frame tracker
    smoothed, MediaPipe smoothed (when run), synthetic landmarks smoothed."""
    from fml_taichi.io.images import write_png
    from fml_taichi.io.plots import plot_curves

    t = np.arange(len(truth.rotation))
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in ((1, "yaw"), (2, "roll"), (0, "pitch")):
            series = {"truth": (t, np.degrees(truth.rotation[:, i])),
                      "dlib raw": (z["frame"], np.degrees(z["rotation_raw"][:, i])),
                      "dlib smoothed": (z["frame"], np.degrees(z["rotation"][:, i])),
                      "dlib, per-frame tracking, smoothed": (zp["frame"], np.degrees(zp["rotation"][:, i])),
                      "synthetic landmarks, smoothed": (zs["frame"], np.degrees(zs["rotation"][:, i]))}
            if zm is not None:
                series["mediapipe smoothed"] = (zm["frame"], np.degrees(zm["rotation"][:, i]))
            if za is not None:
                series["dlib + mediapipe every 4th, smoothed"] = (za["frame"], np.degrees(za["rotation"][:, i]))
            panels.append(plot_curves(os.path.join(tmp, f"{n}.png"), series, title=f"{clip} clip: {n} vs time",
                                      xlabel="frame", ylabel="degrees", size=(1000, 360)))
    write_png(path, np.concatenate(panels, 0))


def _frames_sheet(clip: str, truth, z: dict, picks=(0, 40, 90, 150, 190), zm: dict | None = None) -> np.ndarray:
    """A row of frames (uint8 RGB, half size) with dlib's tracked points (red), MediaPipe's (blue,
    when run) and the truth (green)."""
    import cv2

    cap = cv2.VideoCapture(clip)
    out, i = [], 0
    while len(out) < len(picks):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in picks:
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            for x, y in np.round(truth.landmarks[i]).astype(int):
                cv2.circle(img, (int(x), int(y)), 2, (40, 220, 40), -1)
            for r in np.nonzero(z["frame"] == i)[0]:
                for x, y in np.round(z["landmarks"][r]).astype(int):
                    cv2.circle(img, (int(x), int(y)), 2, (230, 30, 30), -1)
            for r in (np.nonzero(zm["frame"] == i)[0] if zm is not None else []):
                for x, y in np.round(zm["landmarks"][r]).astype(int):
                    cv2.circle(img, (int(x), int(y)), 2, (40, 120, 255), -1)
            yaw = np.degrees(truth.rotation[i, 1])
            cv2.putText(img, f"frame {i}  yaw {yaw:+.0f}", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
            out.append(cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA))
        i += 1
    cap.release()
    return np.concatenate(out, 1)


def _verdict(key: str, value: float) -> str:
    op, ref = TARGETS[key]
    ok = value >= ref if op == ">=" else value <= ref if op == "<=" else ref[0] <= value <= ref[1]
    return "meets" if ok else "MISSES"


def _clip(appearance: str, work: str, frames: int, focal_factor: float, face_model):
    """Render one clip; returns (mp4 path, truth, extra facts)."""
    from fml_taichi.data.synthetic_clip import ClipConfig, write_clip

    d = os.path.join(work, appearance)
    os.makedirs(d, exist_ok=True)
    facts, app = {}, None
    if appearance == "photo":
        from fml_taichi.eval.photo_head import default_photo, photo_head

        app = photo_head(default_photo(), face_model, focal_factor=focal_factor)
        facts.update(photo_fit_nme=app.fit_nme, photo_rotation_deg=np.degrees(app.photo_rotation).tolist(),
                     photo_focal_factor=focal_factor)
        cfg = ClipConfig(frames=frames, appearance="photo", background="photo")
    else:
        cfg = ClipConfig(frames=frames)
    clip = os.path.join(d, "clip.mp4")
    t0 = time.perf_counter()
    truth = write_clip(clip, cfg, face_model, app)
    facts["render_seconds"] = time.perf_counter() - t0
    truth.save(os.path.join(d, "truth.npz"))
    return clip, truth, facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=os.path.join(RESULTS, "video.json"))
    ap.add_argument("--plot", default=os.path.join(RESULTS, "video_pose.png"))
    ap.add_argument("--workdir", default=None, help="keep the clips and outputs here (default: a temp folder)")
    ap.add_argument("--appearance", choices=("photo", "model", "both"), default="both",
                    help="which clips (default both; the first listed is the headline)")
    ap.add_argument("--photo-focal-factor", type=float, default=None,
                    help="the photo camera's focal over its width (default: photo_head's portrait value)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--baseline-frames", type=int, default=60)
    args = ap.parse_args()
    if args.frames < 20 or args.baseline_frames < 1:
        print("bench_video: --frames must be >= 20 and --baseline-frames >= 1", file=sys.stderr)
        return 2
    from fml_taichi.common import runtime

    runtime.init()
    from fml_taichi.eval.photo_head import PORTRAIT_FOCAL_FACTOR
    from fml_taichi.io.images import write_png
    from fml_taichi.model import default_face_model

    focal_factor = args.photo_focal_factor or PORTRAIT_FOCAL_FACTOR
    appearances = ("photo", "model") if args.appearance == "both" else (args.appearance,)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_video_")
    os.makedirs(work, exist_ok=True)
    fm = default_face_model(4000)
    load_before = os.getloadavg()
    common = ["--focal-px", str(FOCAL_PX)]
    use_mediapipe = _mediapipe_ready()
    if not use_mediapipe:
        print("bench_video: mediapipe is not installed: no mediapipe row", file=sys.stderr)
    runs_shown = [r for r in RUNS if use_mediapipe or r != "mediapipe"]
    clips, sheets, base = {}, [], None
    for appearance in appearances:
        clip, truth, facts = _clip(appearance, work, args.frames, focal_factor, fm)
        d = os.path.dirname(clip)
        synth = os.path.join(d, "clip_synthetic.mp4")
        shutil.copyfile(clip, synth)
        np.savez(os.path.join(d, "clip_synthetic.landmarks.npz"), landmarks=truth.noisy_landmarks)
        rec = _cli([clip, "--out", os.path.join(d, "dlib"), "--landmarks", "dlib", *common])
        dlib, z = _scored(rec, os.path.join(d, "dlib", "clip.params.npz"), truth)
        rec_p = _per_frame_tracking(clip, os.path.join(d, "per_frame"))
        per_frame, zp = _scored(rec_p, os.path.join(d, "per_frame", "clip.params.npz"), truth)
        rec_s = _cli([synth, "--out", os.path.join(d, "synthetic"), "--detector", "pts", *common])
        syn, zs = _scored(rec_s, os.path.join(d, "synthetic", "clip_synthetic.params.npz"), truth)
        runs = {"dlib": dlib, "dlib_per_frame_tracking": per_frame, "synthetic_landmarks": syn}
        zm = za = None
        if use_mediapipe:
            rec_m = _cli([clip, "--out", os.path.join(d, "mediapipe"), "--landmarks", "mediapipe", *common])
            runs["mediapipe"], zm = _scored(rec_m, os.path.join(d, "mediapipe", "clip.params.npz"), truth)
            rec_a = _cli([clip, "--out", os.path.join(d, "dlib_mediapipe"), "--landmarks", "dlib+mediapipe", *common])
            runs["dlib_mediapipe"], za = _scored(rec_a, os.path.join(d, "dlib_mediapipe", "clip.params.npz"), truth)
        if base is None:
            rec_b = _cli([clip, "--out", os.path.join(d, "baseline"), "--two-pass", "--max-frames",
                          str(args.baseline_frames), *common])
            base = {"path": "--two-pass", "clip": appearance, "frames": rec_b["frames"],
                    "fps_end_to_end": rec_b["frames"] / rec_b["seconds"]}
        clips[appearance] = {**runs, **facts}
        stem, ext = os.path.splitext(args.plot)
        plot = args.plot if appearance == appearances[0] else f"{stem}_{appearance}{ext}"
        os.makedirs(os.path.dirname(os.path.abspath(plot)), exist_ok=True)
        _plot(plot, truth, z, zp, zs, appearance, zm, za)
        clips[appearance]["plot"] = os.path.relpath(plot)
        sheets.append(_frames_sheet(clip, truth, z, zm=zm))
    load_after = os.getloadavg()
    stem, ext = os.path.splitext(args.plot)
    frames_png = f"{stem}_frames{ext}"
    width = max(s.shape[1] for s in sheets)
    write_png(frames_png, np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in sheets], 0)
              .astype(np.float32) / 255.0)

    print(f"clips: {args.frames} frames 640x480; load average before {load_before[0]:.2f}, after "
          f"{load_after[0]:.2f} ({os.cpu_count()} cores)")
    for appearance, runs in clips.items():
        print(f"\n{appearance} clip" + (" (default)" if appearance == appearances[0] else ""))
        print(f"{'figure':36s} " + " ".join(f"{r:>24s}" for r in runs_shown) + "  target (dlib / mediapipe / dlib+mediapipe)")
        for k in KEYS:
            vals = " ".join(f"{runs[r][k]:24.3f}" for r in runs_shown)
            tgt = (f"{TARGETS[k][0]} {TARGETS[k][1]}: " + " / ".join(
                _verdict(k, runs[r][k]) for r in ("dlib", "mediapipe", "dlib_mediapipe") if r in runs)) if k in TARGETS else ""
            print(f"{k:36s} {vals}  {tgt}")
    default_run = "dlib_mediapipe" if use_mediapipe else "dlib"
    head = clips[appearances[0]][default_run]
    print(f"\nbaseline (--two-pass, {base['frames']} frames of the {base['clip']} clip): {base['fps_end_to_end']:.2f} "
          f"fps end to end; tracked path ({default_run}) {head['fps_end_to_end'] / base['fps_end_to_end']:.1f}x faster")
    result = {k: head[k] for k in ("fps_end_to_end", "fps_without_detection", "frames", "found",
                                   "rotation_error_deg_median", "nme", "jitter_deg", "jitter_raw_deg", "jitter_ratio",
                                   "lag_frames", "roll_slope", "pitch_slope", "yaw_slope",
                                   "rotation_error_deg_median_within_30", "rotation_error_deg_median_beyond_30")}
    result.update(default_clip=appearances[0], default_landmarks=default_run, clips=clips, baseline=base,
                  speedup_vs_baseline=head["fps_end_to_end"] / base["fps_end_to_end"],
                  targets={k: list(v) if isinstance(v, tuple) else v for k, v in TARGETS.items()},
                  load_average={"before": load_before, "after": load_after}, cores=os.cpu_count(),
                  focal_px=FOCAL_PX, plot=os.path.relpath(args.plot), frames_png=os.path.relpath(frames_png))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=float)
    os.replace(tmp, args.json)
    print(f"-> {args.json}, {args.plot}, {frames_png}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
