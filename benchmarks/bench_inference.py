"""Inference speed: encoder + multi-level model (final geometry and reflectance), torch vs ONNX Runtime.

What one "image" costs once its face is cropped: the 240 px crop through the encoder and the
multi-level model, up to the final mesh and reflectance (exactly what ``fml-taichi reconstruct``
calls per face). Measured in one process, same weights, same inputs: batch 1 (latency: median and best
of many calls; the best is the steadier figure on a shared machine) and batch 64 (throughput), for
eager torch and ONNX Runtime on the CPU, and torch on the GPU when one is available. Face detection
(dlib HOG + 68 landmarks on a 640 x 480 frame) and the crop are timed separately: they are the
per-frame cost in front of the network.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_inference.py [--checkpoint C] [--json PATH]
        [--threads 2] [--sweep]

Thread counts: each runner is timed with 1 thread and with all cores. At batch 1 this small network
gains little from a second thread and, on a machine shared with other work, loses a lot (a parallel
call waits for its slowest thread), so one thread is the default of the ONNX Runtime runner.

With a checkpoint, the default reconstruction (``init="landmarks"``) is timed too, detection
excluded: landmark fit + colour fit on the crop (the start), the aligned crop, encoder correctives
and the multi-level model, with the start's share of the call (JSON key ``landmark_start``).

``--sweep`` also times untrained encoders of other input sizes / widths (timing does not depend on
the weights) to show what would reach a target rate. ``--json`` writes ``{"device", "ms_batch1",
"hz_batch1", "hz_batch64", "runner"}`` for the fastest runner (by batch-1 median; its batch-64 rate at
its best thread count), plus the table.
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as fml_taichi.common.runtime sets it (numpy is imported first here)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402

TARGET_HZ = 250.0
EVAL_SEED = 10_000_077


def time_calls(fn, repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(median, best) milliseconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), min(samples)


def load_networks(checkpoint: str | None, input_size: int | None = None, width: float | None = None):
    """(encoder, multilevel, description): a checkpoint's networks, or untrained ones of configs/default.yaml
    (optionally with another encoder input size / width)."""
    from fml_taichi.nets.config import load_config
    from fml_taichi.nets.models import build_networks, face_model_from_spec, face_model_spec
    from fml_taichi.recon.reconstructor import Reconstructor

    if checkpoint and input_size is None and width is None:
        rec = Reconstructor.from_checkpoint(checkpoint)
        return rec.encoder, rec.multilevel, os.path.basename(checkpoint)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "default.yaml"))
    if input_size is not None:
        cfg.encoder.input_size = input_size
    if width is not None:
        cfg.encoder.width = width
    multilevel, encoder = build_networks(cfg, face_model_from_spec(face_model_spec(cfg.model)))
    for p in list(encoder.parameters()) + list(multilevel.parameters()):
        p.requires_grad_(False)
    return encoder.eval(), multilevel.eval(), f"untrained, input {cfg.encoder.input_size} px, width {cfg.encoder.width}"


def bench_runner(runner, size: int, batch: int, repeats: int, device: str = "cpu") -> tuple[float, float]:
    crops = torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(batch))
    if device != "cpu":
        crops = crops.to(device)

        def call():
            runner(crops)
            torch.cuda.synchronize()
        return time_calls(call, repeats)
    return time_calls(lambda: runner(crops), repeats)


def runners(encoder, multilevel, size: int, threads: int):
    from fml_taichi.recon.runners import OnnxRunner, TorchRunner, onnx_available

    out = {"torch": TorchRunner(encoder, multilevel)}
    if onnx_available():
        out["onnxruntime"] = OnnxRunner(encoder, multilevel, size=size, threads=threads, cache=False)
    else:
        print("onnxruntime / onnx not installed: ONNX Runtime rows skipped (pip install onnxruntime onnx)")
    return out


def gpu_runner(encoder, multilevel):
    """torch on CUDA: copies of the networks on the GPU (None without a GPU)."""
    if not torch.cuda.is_available():
        return None
    import copy

    from fml_taichi.recon.runners import TorchRunner

    enc, ml = copy.deepcopy(encoder).cuda(), copy.deepcopy(multilevel).cuda()
    return TorchRunner(enc, ml)


def bench_detection(repeats: int):
    """dlib detection + landmarks and the crop on a 640 x 480 frame holding one synthetic face."""
    try:
        from fml_taichi.data.crop import crop_box_from_landmarks, crop_image, mean_landmarks_3d
        from fml_taichi.data.detect import DetectorUnavailable, DlibDetector
        from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
    except ImportError as e:
        return None, str(e)
    r = SyntheticRenderer(n_vertices=4000, config=SyntheticConfig(yaw_deg=0, pitch_deg=0, roll_deg=0))
    frame = np.full((480, 640, 3), 0.35, np.float32)
    frame[120:360, 200:440] = r.render([6])["image"][0].numpy()
    x3 = mean_landmarks_3d(r.face_model)
    try:
        det = DlibDetector(landmarks_3d=x3, upsample=0)
    except DetectorUnavailable as e:
        return None, str(e)
    faces = det(frame)
    if not faces:
        return None, "dlib found no face in the test frame"
    d = faces[0]
    det_ms = time_calls(lambda: det(frame), repeats, warmup=2)
    crop_ms = time_calls(lambda: crop_image(frame, crop_box_from_landmarks(d.landmarks, x3)), repeats * 5)
    return {"detect_landmarks_ms": det_ms, "crop_ms": crop_ms}, None


def bench_landmark_start(checkpoint: str, repeats: int, threads: int = 1, solver: str = "joint",
                         overlap: bool = True):
    """Batch-1 reconstruction with the landmark start (the default ``init``), detection excluded: the
    landmark fit + colour fit on the crop, the aligned crop, encoder correctives + multi-level model.
    Returns per-part medians (ms) and the whole call's (median, best)."""
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.data.detect import PtsFileDetector
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer

    import dataclasses

    pipe = FacePipeline.from_checkpoint(checkpoint, detector="pts", threads=threads)
    fitter = pipe.start.landmarks
    if solver != fitter.config.solver:  # the alternation of eos, at its own defaults before the joint solver
        fitter.config = dataclasses.replace(fitter.config, solver=solver, iterations=4, pose_steps=2)
    pipe.overlap_encoder = overlap
    r = SyntheticRenderer(pipe.face_model, SyntheticConfig(yaw_deg=40, roll_deg=20))
    b = r.render([EVAL_SEED])
    frame = np.full((480, 640, 3), 0.35, np.float32)
    frame[120:360, 200:440] = b["image"][0].numpy()
    lm = b["landmarks"][0].numpy() + np.array([200.0, 120.0], np.float32)
    det = PtsFileDetector(pipe.landmarks_3d)._scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, float("inf"), "bench")
    box, crop = pipe.crop(frame, det)
    crops = crop[None]

    def call():
        pipe.reconstruct_landmarks(frame, [det], [box], crops)

    parts = {}
    for _ in range(5):
        call()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
        for k, v in pipe.last_timings.items():
            parts.setdefault(k, []).append(v * 1e3)
    med = {k: statistics.median(v) for k, v in parts.items()}
    return {"ms_batch1": statistics.median(samples), "best_ms_batch1": min(samples), "parts_ms": med,
            "runner": pipe.runner_name, "solver": solver, "overlap_encoder": overlap}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: packaged, else untrained default config)")
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                    help="comma-separated thread counts to time (torch and ONNX Runtime alike; default 1,all cores)")
    ap.add_argument("--repeats", type=int, default=300, help="batch-1 calls per measurement")
    ap.add_argument("--repeats64", type=int, default=8, help="batch-64 calls per measurement")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the fastest runner's figures as JSON")
    ap.add_argument("--sweep", action="store_true", help="also time untrained encoders of other sizes / widths")
    ap.add_argument("--no-detection", action="store_true", help="skip the detection timing")
    args = ap.parse_args()

    from fml_taichi.recon.pipeline import default_checkpoint

    runtime.init()
    thread_counts = sorted({int(t) for t in args.threads.split(",")})
    ckpt = args.checkpoint or default_checkpoint()
    encoder, multilevel, what = load_networks(ckpt)
    size = 240
    n_vert = multilevel.face_model.n_vertices
    device = runtime.device_name()
    print(f"device: {device}; threads: {thread_counts}; load average: {load_average()}")
    print(f"model: {what}; encoder input {encoder.input_size} px; {n_vert} vertices; "
          f"C = {multilevel.n_correctives_geometry}/{multilevel.n_correctives_reflectance}; crop {size} px")
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        runs = runners(encoder, multilevel, size, threads)
        if threads == thread_counts[-1]:
            gpu = gpu_runner(encoder, multilevel)
            if gpu is not None:
                runs["torch-cuda"] = gpu
        for name, run in runs.items():
            dev = "cuda" if name.endswith("cuda") else "cpu"
            med1, best1 = bench_runner(run, size, 1, args.repeats, dev)
            med64, best64 = bench_runner(run, size, 64, args.repeats64, dev)
            rows.append({"runner": name, "threads": threads, "ms_batch1": med1, "best_ms_batch1": best1,
                         "hz_batch1": 1e3 / med1, "ms_batch64": med64, "hz_batch64": 64e3 / med64,
                         "best_hz_batch64": 64e3 / best64})
    base = rows[0]  # torch, fewest threads: the baseline of the ratio columns
    print(f"\n{'runner':<12} {'threads':>7} {'ms b=1 (median)':>15} {'best':>7} {'Hz b=1':>8} {'Hz b=64':>9} "
          f"{'x base b=1':>11} {'x base b=64':>12}")
    for r in rows:
        print(f"{r['runner']:<12} {r['threads']:>7} {r['ms_batch1']:>15.3f} {r['best_ms_batch1']:>7.3f} "
              f"{r['hz_batch1']:>8.0f} {r['hz_batch64']:>9.0f} {base['ms_batch1'] / r['ms_batch1']:>11.2f} "
              f"{r['hz_batch64'] / base['hz_batch64']:>12.2f}")
    print(f"(base: {base['runner']} with {base['threads']} thread(s))")
    best = min(rows, key=lambda r: r["ms_batch1"])
    best64 = max(r["hz_batch64"] for r in rows if r["runner"] == best["runner"])
    verdict = "meets" if best["hz_batch1"] >= TARGET_HZ else "misses"
    print(f"\nfastest: {best['runner']} ({best['threads']} thread(s)), {best['hz_batch1']:.0f} Hz at batch 1 "
          f"(median; best call {1e3 / best['best_ms_batch1']:.0f} Hz): {verdict} the {TARGET_HZ:.0f} Hz target")

    start = bench_landmark_start(ckpt, args.repeats, threads=thread_counts[0]) if ckpt else None
    variants = []
    if start is not None:
        # The same call in this process, without the encoder overlap and with eos's alternating solver:
        # the baseline of the start's speed-up.
        for solver, overlap in (("alternating", False), ("joint", False), ("joint", True)):
            v = start if (solver, overlap) == ("joint", True) else bench_landmark_start(
                ckpt, args.repeats, threads=thread_counts[0], solver=solver, overlap=overlap)
            variants.append(v)
        base_ms = variants[0]["ms_batch1"]
        print("\nlandmark start variants (batch 1, median / best ms, x the alternating serial path):")
        for v in variants:
            v["x_baseline"] = base_ms / v["ms_batch1"]
            print(f"  solver {v['solver']:11s} encoder overlap {str(v['overlap_encoder']):5s}: {v['ms_batch1']:.2f} / "
                  f"{v['best_ms_batch1']:.2f} ms, {1e3 / v['ms_batch1']:.0f} Hz, x {v['x_baseline']:.2f}; "
                  + ", ".join(f"{k} {t:.2f}" for k, t in v["parts_ms"].items()))
        start["variants"] = [{k: v[k] for k in ("solver", "overlap_encoder", "ms_batch1", "best_ms_batch1",
                                                "parts_ms", "x_baseline")} for v in variants]
        torch.set_num_threads(thread_counts[0])
        p = start["parts_ms"]
        fit_ms = p["landmark_fit"] + p["colour_fit"]
        start["start_ms"] = fit_ms
        # With the encoder overlapped the start is on the critical path: its share of the call.
        start["start_share"] = fit_ms / start["ms_batch1"]
        start["hz_batch1"] = 1e3 / start["ms_batch1"]
        verdict = "meets" if start["hz_batch1"] >= TARGET_HZ else "misses"
        print(f"\nlandmark start (init=landmarks, {start['runner']}, {thread_counts[0]} thread(s)), batch 1, detection "
              f"excluded: {start['ms_batch1']:.2f} ms median ({start['best_ms_batch1']:.2f} best) = "
              f"{start['hz_batch1']:.0f} Hz ({1e3 / start['best_ms_batch1']:.0f} Hz best): {verdict} the "
              f"{TARGET_HZ:.0f} Hz target")
        print("  parts (median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in p.items())
              + f"; the start's fit (landmark + colour) {fit_ms:.2f} ms = {100 * start['start_share']:.0f}% of the call; "
              f"x encoder-only batch 1: {start['ms_batch1'] / best['ms_batch1']:.2f}")

    detection = None
    if not args.no_detection:
        detection, why = bench_detection(max(10, args.repeats // 10))
        if detection is None:
            print(f"detection not timed: {why}")
        else:
            (dm, db), (cm, _) = detection["detect_landmarks_ms"], detection["crop_ms"]
            print(f"detection (dlib HOG + 68 landmarks, 640x480, no upsampling): {dm:.1f} ms median ({db:.1f} best); "
                  f"crop: {cm:.2f} ms")

    sweep = []
    if args.sweep:
        print("\nsweep (untrained encoders, ONNX Runtime if installed, batch 1, median / best ms):")
        for input_size in (96, 112, 128, 160):
            for width in (0.75, 1.0):
                enc, ml, _ = load_networks(None, input_size, width)
                torch.set_num_threads(thread_counts[0])
                run = runners(enc, ml, size, thread_counts[0])
                name, r = list(run.items())[-1]
                med, bst = bench_runner(r, size, 1, args.repeats)
                sweep.append({"input_size": input_size, "width": width, "runner": name, "ms_batch1": med,
                              "best_ms_batch1": bst})
                print(f"  input {input_size:>3} px, width {width:<4}: {med:6.3f} / {bst:6.3f} ms "
                      f"({1e3 / med:5.0f} / {1e3 / bst:5.0f} Hz)")

    if args.json:
        from fml_taichi.common.atomic import write_text

        doc = {"device": device, "ms_batch1": round(best["ms_batch1"], 4), "hz_batch1": round(best["hz_batch1"], 1),
               "hz_batch64": round(best64, 1), "runner": best["runner"],
               "threads": best["threads"], "load_average": load_average(), "model": what,
               "rows": rows, "detection_ms": detection, "sweep": sweep, "landmark_start": start}
        write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
