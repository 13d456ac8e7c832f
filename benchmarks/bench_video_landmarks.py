"""Landmark sources on single frames: dlib's and MediaPipe's full detections against the clips' truth.

Every 10th frame of both clips of ``benchmarks/bench_video.py`` (photo and model, 300 frames, 640 x
480, yaw +-45, roll +-30, pitch +-10 degrees) goes through each detector as a single image (no
tracking, no box from a previous frame): how many frames each finds, and the median NME (mean
point distance over the true outer-eye-corner distance) of its 68 points against the true
landmarks, all 68 and the inner 51, over the frames it found and over the frames both found. Also
MediaPipe's points against dlib's on the real portrait in ``tests/data`` (no truth there).

    python benchmarks/bench_video_landmarks.py --json benchmarks/results/video_single_images.json \\
        --workdir /tmp/bench_video   # reuses bench_video's rendered clips when that folder holds them
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
STEP = 10


def _frames(path: str) -> list:
    """Every frame of ``path`` as uint8 RGB (the library's reader, exact back to 8 bits)."""
    from fml_taichi.data.video import VideoReader

    with VideoReader(path) as reader:
        return [(f * 255.0 + 0.5).astype(np.uint8) for f in reader]


def _clip(work: str, appearance: str, face_model):
    """(mp4, truth) of one bench_video clip, rendered unless ``work/appearance`` already holds it."""
    from bench_video import _clip as render

    from fml_taichi.data.synthetic_clip import ClipTruth
    from fml_taichi.eval.photo_head import PORTRAIT_FOCAL_FACTOR

    d = os.path.join(work, appearance)
    if os.path.exists(os.path.join(d, "clip.mp4")) and os.path.exists(os.path.join(d, "truth.npz")):
        return os.path.join(d, "clip.mp4"), ClipTruth.load(os.path.join(d, "truth.npz"))
    clip, truth, _ = render(appearance, work, 300, PORTRAIT_FOCAL_FACTOR, face_model)
    return clip, truth


def score(detectors: dict, frames: list, truth) -> dict:
    """Per detector: frames found, median NME (all 68 / inner 51) over its frames and over those all found."""
    errors = {}
    for name, det in detectors.items():
        errors[name] = {}
        for i in range(0, len(frames), STEP):
            found = det(frames[i])
            if not found:
                continue
            t = truth.landmarks[i]
            e = np.linalg.norm(found[0].landmarks - t, axis=1) / np.linalg.norm(t[36] - t[45])
            errors[name][i] = (float(e.mean()), float(e[17:].mean()))
    common = sorted(set.intersection(*(set(v) for v in errors.values())))
    out = {}
    for name, per in errors.items():
        v = np.array(list(per.values())).reshape(-1, 2)
        c = np.array([per[i] for i in common]).reshape(-1, 2)
        out[name] = {"found": len(per), "of": len(range(0, len(frames), STEP)), "frames_all_found": len(common),
                     "nme_median": float(np.median(v[:, 0])) if len(v) else float("nan"),
                     "inner_nme_median": float(np.median(v[:, 1])) if len(v) else float("nan"),
                     "nme_median_common": float(np.median(c[:, 0])) if len(c) else float("nan"),
                     "inner_nme_median_common": float(np.median(c[:, 1])) if len(c) else float("nan")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=os.path.join(RESULTS, "video_single_images.json"))
    ap.add_argument("--workdir", default=None, help="bench_video's --workdir (clips reused; rendered when absent)")
    args = ap.parse_args()
    from fml_taichi.common import runtime

    runtime.init()
    import imageio.v3 as iio

    from fml_taichi.data.detect import DetectorUnavailable, DlibDetector
    from fml_taichi.data.mediapipe_landmarks import MediaPipeDetector
    from fml_taichi.model import default_face_model

    try:
        detectors = {"dlib": DlibDetector(), "mediapipe": MediaPipeDetector()}
    except DetectorUnavailable as e:
        print(f"bench_video_landmarks: {e}", file=sys.stderr)
        return 2
    work = args.workdir or tempfile.mkdtemp(prefix="bench_video_landmarks_")
    os.makedirs(work, exist_ok=True)
    fm = default_face_model(4000)
    result = {"step": STEP, "load_average_before": os.getloadavg()}
    for appearance in ("photo", "model"):
        clip, truth = _clip(work, appearance, fm)
        result[appearance] = score(detectors, _frames(clip), truth)
    photo = iio.imread(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "astronaut.jpg"))
    a, b = detectors["dlib"](photo)[0].landmarks, detectors["mediapipe"](photo)[0].landmarks
    e = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a[36] - a[45])
    result["portrait_mediapipe_vs_dlib"] = {"nme": float(e.mean()), "inner_nme": float(e[17:].mean())}
    print(f"{'clip':8s} {'source':10s} {'found':>8s} {'NME':>7s} {'inner':>7s} {'NME (common)':>13s} {'inner (common)':>15s}")
    for appearance in ("photo", "model"):
        for name, s in result[appearance].items():
            print(f"{appearance:8s} {name:10s} {s['found']:4d}/{s['of']:<3d} {s['nme_median']:7.3f} {s['inner_nme_median']:7.3f} "
                  f"{s['nme_median_common']:13.3f} {s['inner_nme_median_common']:15.3f}  ({s['frames_all_found']} common)")
    print(f"portrait: MediaPipe vs dlib NME {e.mean():.3f} (inner {e[17:].mean():.3f})")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.json)
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
