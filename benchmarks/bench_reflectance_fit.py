"""The photo pipeline's reflectance fit, numpy (default) against the torch functions (the path before):
photometric error of the final level (``fml-taichi reconstruct --report``'s "photo f",
:func:`fml_taichi.recon.quality.face_quality`) and the fitted coefficients, on synthetic faces in a
640 x 480 frame (given landmarks) and tests/data/astronaut.jpg (dlib), with the shipped checkpoint;
and the photo and its greyscale copy with ``FacePipeline.grey_photo_reflectance`` off and on (JSON key
``grey_photo``: final photometric error and final reflectance chroma).

    python benchmarks/bench_reflectance_fit.py [--json benchmarks/results/reflectance_fit.json]
"""
import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np, torch
torch.set_num_threads(1)
from fml_taichi.recon.pipeline import FacePipeline
from fml_taichi.recon.quality import face_quality
from fml_taichi.data.detect import PtsFileDetector
from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
from fml_taichi.io.images import load_image
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--json", default=None, metavar="PATH", help="write the table and summary as JSON")
args = ap.parse_args()
pipe = FacePipeline.from_checkpoint(detector="pts", threads=1)
scorer = PtsFileDetector(pipe.landmarks_3d)._scorer
rows = []
def run(frame, det, name):
    box, crop = pipe.crop(frame, det)
    out = {}
    for impl in ("torch", "numpy"):
        pipe.reflectance_fit_impl = impl
        r = pipe.reconstruct_detections(frame, [det], [box], crop[None])[0]
        q = face_quality(r, pipe.face_model.triangles)
        out[impl] = (q["photo_error_base"], q["photo_error_final"], r.params.delta_reflectance.numpy()[0])
    d = np.abs(out["numpy"][2] - out["torch"][2]).max() / np.abs(out["torch"][2]).max()
    rows.append((name, out["torch"][1], out["numpy"][1], float(d), out["torch"][0]))
    print(f"{name:12s} base {out['torch'][0]:.5f}  final torch {out['torch'][1]:.5f} numpy {out['numpy'][1]:.5f}  rel {out['numpy'][1] / out['torch'][1] - 1:+.2e}  max|d delta|/max|delta| {d:.1e}")
for i, (yaw, roll) in enumerate([(0, 0), (20, 5), (40, 20), (30, 10), (60, 0), (50, 15), (10, 25), (30, 30)]):
    r = SyntheticRenderer(pipe.face_model, SyntheticConfig(yaw_deg=yaw, roll_deg=roll))
    b = r.render([10_000_100 + i])
    frame = np.full((480, 640, 3), 0.35, np.float32)
    frame[120:360, 200:440] = b["image"][0].numpy()
    lm = b["landmarks"][0].numpy() + np.array([200.0, 120.0], np.float32)
    det = scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, float("inf"), "synthetic")
    run(frame, det, f"syn y{yaw} r{roll}")
pipe2 = FacePipeline.from_checkpoint(threads=1)
img = load_image("tests/data/astronaut.jpg")
det = pipe2.detect(img, "astronaut")[0]
pipe = pipe2
run(img, det, "astronaut")
# The greyscale copy (FacePipeline.grey_photo_reflectance off: fitted in colour, the paper's path; on:
# over grey offsets, final level grey) and the colour photo both ways (must not change).
grey_img = np.repeat(img.mean(-1, keepdims=True), 3, -1).astype(np.float32)
grey_rows = []
for name, im in (("astronaut", img), ("astronaut grey", grey_img)):
    d = pipe.detect(im, name)[0]
    box, crop = pipe.crop(im, d)
    rec = {"face": name}
    for flag in (False, True):
        pipe.reflectance_fit_impl, pipe.grey_photo_reflectance = "numpy", flag
        r = pipe.reconstruct_detections(im, [d], [box], crop[None])[0]
        q = face_quality(r, pipe.face_model.triangles)
        refl = r.output.final_reflectance[0].clamp(0, 1).numpy()
        key = "grey_fit" if flag else "colour_fit"
        rec[key] = {"photo_error_base": q["photo_error_base"], "photo_error_final": q["photo_error_final"],
                    "final_chroma": float(np.abs(refl - refl.mean(-1, keepdims=True)).mean())}
    grey_rows.append(rec)
    print(f"{name:14s} grey_photo_reflectance off: photo f {rec['colour_fit']['photo_error_final']:.5f} chroma "
          f"{rec['colour_fit']['final_chroma']:.4f}; on: photo f {rec['grey_fit']['photo_error_final']:.5f} chroma "
          f"{rec['grey_fit']['final_chroma']:.4f}")
t = np.array([r[1] for r in rows]); n = np.array([r[2] for r in rows])
summary = {"faces": len(rows), "mean_final_torch": float(t.mean()), "mean_final_numpy": float(n.mean()),
           "max_relative_change": float(np.abs(n / t - 1).max()), "max_coefficient_rel_diff": float(max(r[3] for r in rows))}
print(json.dumps(summary))
if args.json:
    from fml_taichi.common.atomic import write_text

    table = [{"face": r[0], "photo_error_base": r[4], "photo_error_final_torch": r[1], "photo_error_final_numpy": r[2],
              "coefficient_max_rel_diff": r[3]} for r in rows]
    write_text(args.json, json.dumps({"summary": summary, "faces": table, "grey_photo": grey_rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
