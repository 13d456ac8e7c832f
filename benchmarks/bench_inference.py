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

With a checkpoint, the default reconstruction (``init="landmarks"``, ``FacePipeline.reconstruct_landmarks``)
is timed too, detection excluded: the aligned warp, landmark fit + colour fit (the start), the
encoder and the multi-level model, with the start's share of the call (JSON key ``landmark_start``,
its ``variants``): the path before the encoder split (whole encoder + model graph on the worker
thread) as the baseline, the split encoder serial and overlapped, and an ``image+start`` encoder of
the same backbone (the retrained architecture; zero heads) serial and overlapped, and that path
with the reflectance fit through the torch functions (``FacePipeline.reflectance_fit_impl = "torch"``,
the path before the numpy fitter: the shipped default's baseline). The variants take turns in
blocks of calls, so a shared machine's changing load falls on all alike.

With a checkpoint, the start's two fits and the reflectance fit (numpy and torch) are also timed
alone, back to back with warm caches (JSON key ``fits_alone``): what the fits' own code costs,
against their parts inside the pipeline, where the encoder and the model decode run in between.

``--sweep`` also times the landmark path's backbone graph for untrained encoders of input size
96 / 112 / 128 px and width 0.75 / 1.0 (timing does not depend on the weights; JSON key ``sweep``). ``--json`` writes ``{"device", "ms_batch1",
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


def start_encoder_reconstructor(rec):
    """A Reconstructor like ``rec`` whose encoder reads the landmark start (``encoder.input:
    image+start``, the retrained architecture): ``rec``'s backbone, zero heads (timing does not
    depend on the heads' weights; zero heads return the start)."""
    import copy

    from fml_taichi.nets.encoder import EncoderConfig, FaceEncoder
    from fml_taichi.nets.models import FaceAutoencoder
    from fml_taichi.recon.reconstructor import Reconstructor

    enc = rec.encoder
    bb = enc.backbone
    cfg = EncoderConfig(input_size=enc.input_size, width=1.0, n_features=bb.n_features, pool=bb.pool, input="image+start")
    new = FaceEncoder(copy.deepcopy(enc.codec), cfg.input_size, 1.0, cfg.n_features, cfg.pool, cfg.input)
    new.backbone = copy.deepcopy(bb)
    return Reconstructor(FaceAutoencoder(new.eval(), rec.multilevel), rec.image_size, rec.config)


def landmark_scene(pipe):
    """One synthetic face (yaw 40, roll 20) in a 640 x 480 frame: (frame, detection, box, crops [1, S, S, 3])."""
    from fml_taichi.data.detect import PtsFileDetector
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer

    r = SyntheticRenderer(pipe.face_model, SyntheticConfig(yaw_deg=40, roll_deg=20))
    b = r.render([EVAL_SEED])
    frame = np.full((480, 640, 3), 0.35, np.float32)
    frame[120:360, 200:440] = b["image"][0].numpy()
    lm = b["landmarks"][0].numpy() + np.array([200.0, 120.0], np.float32)
    det = PtsFileDetector(pipe.landmarks_3d)._scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, float("inf"), "bench")
    box, crop = pipe.crop(frame, det)
    return frame, det, box, crop[None]


#: The landmark-start variants timed (name, encoder input, split encoder, overlap); the first is the
#: baseline of the ratios: the path before the encoder split (the whole encoder + multi-level model
#: graph on the aligned crop, on the worker thread).
START_VARIANTS = (
    ("before the split: full graph on the worker (baseline)", "image", False, True),
    ("split encoder, serial", "image", True, False),
    ("split encoder, overlapped (default)", "image", True, True),
    ("split encoder, auto", "image", True, "auto"),
    ("image+start encoder, serial", "image+start", True, False),
    ("image+start encoder, overlapped (default)", "image+start", True, True),
    ("image+start encoder, auto", "image+start", True, "auto"),
    ("image+start encoder, serial, torch reflectance fit (before)", "image+start", True, False),
    ("image+start encoder, overlapped, torch reflectance fit (before)", "image+start", True, True),
    ("image+start encoder, overlapped, numpy fits (before the compiled fits)", "image+start", True, True),
)
#: Variants run as before the compiled fits: the landmark, colour and reflectance fits in numpy
#: (``impl="numpy"``), the reflectance fit at every 3rd vertex and nothing done before the features.
NUMPY_FITS = tuple(v for v in START_VARIANTS if "before the compiled fits" in v[0])
#: Variants whose reflectance fit runs through the torch functions (``FacePipeline.reflectance_fit_impl
#: = "torch"``: the path before the numpy fitter, the shipped default's baseline); all others numpy.
TORCH_REFLECTANCE_FIT = tuple(v for v in START_VARIANTS if "torch reflectance fit" in v[0])
#: Also timed: the same default paths through ``reconstruct_detections`` (FaceResult packaging:
#: landmarks projected into the photo, per-face outputs).
DETECTION_VARIANTS = (
    ("split encoder, overlapped, + FaceResults", "image", True, True),
    ("image+start encoder, overlapped, + FaceResults", "image+start", True, True),
)


def bench_landmark_start(checkpoint: str, repeats: int, threads: int = 1, rounds: int = 20) -> list[dict]:
    """Batch-1 reconstruction with the landmark start (``FacePipeline.reconstruct_landmarks``, the
    default ``init``), detection excluded: aligned warp, landmark fit + colour fit, encoder, heads
    and the multi-level model, for each of :data:`START_VARIANTS`. The variants take turns in
    ``rounds`` blocks of calls, so that the machine's changing load falls on all of them alike.
    Returns per variant the call's median / best ms and the per-part medians (``last_timings``)."""
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.reconstructor import Reconstructor

    from fml_taichi.recon.pipeline import default_checkpoint

    rec = Reconstructor.from_checkpoint(checkpoint)
    if rec.encoder.takes_start:  # the shipped default: the image rows take the paper's image-only checkpoint
        recs = {"image": Reconstructor.from_checkpoint(default_checkpoint("encoder")), "image+start": rec}
    else:
        recs = {"image": rec, "image+start": start_encoder_reconstructor(rec)}
    pipes, scene = {}, None
    for name, kind, split, overlap in START_VARIANTS:
        if kind not in pipes:
            pipes[kind] = FacePipeline(recs[kind], detector="pts", threads=threads)
        scene = scene or landmark_scene(pipes[kind])
    frame, det, box, crops = scene
    fit_sets = {kind: {False: _compiled_fits(pipe), True: _numpy_fits(pipe)} for kind, pipe in pipes.items()}
    variants = START_VARIANTS + DETECTION_VARIANTS
    samples = {v[0]: [] for v in variants}
    cpu = {v[0]: [] for v in variants}
    parts = {v[0]: {} for v in variants}
    per_round = max(1, repeats // rounds)
    for r in range(rounds + 1):
        for name, kind, split, overlap in variants:
            pipe = pipes[kind]
            pipe.split_encoder, pipe.overlap_encoder = split, overlap
            pipe.reflectance_fit_impl = "torch" if (name, kind, split, overlap) in TORCH_REFLECTANCE_FIT else "numpy"
            _use_fits(pipe, fit_sets[kind][(name, kind, split, overlap) in NUMPY_FITS])
            call = (pipe.reconstruct_detections if (name, kind, split, overlap) in DETECTION_VARIANTS
                    else pipe.reconstruct_landmarks)
            for i in range(per_round):
                t0, c0 = time.perf_counter(), time.thread_time()
                call(frame, [det], [box], crops)
                dt, dc = (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
                if r == 0:
                    continue  # the first round warms up (graphs loaded, caches filled)
                samples[name].append(dt)
                cpu[name].append(dc)
                for k, v in pipe.last_timings.items():
                    parts[name].setdefault(k, []).append(v * 1e3)
    out = []
    for name, kind, split, overlap in variants:
        med = {k: statistics.median(v) for k, v in parts[name].items()}
        out.append({"variant": name, "encoder_input": kind, "split_encoder": split, "overlap_encoder": overlap,
                    "reflectance_fit_impl": "torch" if (name, kind, split, overlap) in TORCH_REFLECTANCE_FIT else "numpy",
                    "fits": "numpy" if (name, kind, split, overlap) in NUMPY_FITS else "default",
                    "call": "reconstruct_detections" if (name, kind, split, overlap) in DETECTION_VARIANTS
                    else "reconstruct_landmarks",
                    "ms_batch1": statistics.median(samples[name]), "best_ms_batch1": min(samples[name]),
                    "p90_ms_batch1": float(np.percentile(samples[name], 90)), "parts_ms": med,
                    "caller_cpu_ms": statistics.median(cpu[name]), "best_caller_cpu_ms": min(cpu[name]),
                    "runner": pipes[kind].runner_name, "calls": len(samples[name])})
    return out


def _compiled_fits(pipe) -> dict:
    """The pipeline's own fits (compiled when numba is installed) and settings, to restore."""
    if pipe.fits_reflectance:
        pipe._numpy_reflectance_fitter()
    return {"landmarks": pipe.start.landmarks, "colour": pipe.start.colour, "stride": pipe.reflectance_fit_stride,
            "fitter": pipe._reflectance_fitter, "before_features": type(pipe)._before_features.__get__(pipe)}


def _numpy_fits(pipe) -> dict:
    """The fits as before the compiled ones (:data:`NUMPY_FITS`)."""
    import dataclasses

    from fml_taichi.recon.colour_fit import ColourFitter
    from fml_taichi.recon.corrective_fit import ReflectanceCoefficientFitter
    from fml_taichi.recon.landmark_fit import LandmarkFitter

    fm, st = pipe.face_model, pipe.start
    corrective, prior = pipe.multilevel.reflectance_corrective, pipe.reconstructor.reflectance_prior
    fitter = ReflectanceCoefficientFitter(fm, corrective, 3, prior, impl="numpy") if prior is not None else None
    return {"landmarks": LandmarkFitter(fm, dataclasses.replace(st.landmarks.config, impl="numpy")),
            "colour": ColourFitter(fm, st.colour.config, impl="numpy"), "stride": 3, "fitter": fitter,
            "before_features": lambda *a: None}


def _use_fits(pipe, fits: dict) -> None:
    pipe.start.landmarks, pipe.start.colour = fits["landmarks"], fits["colour"]
    pipe.reflectance_fit_stride, pipe._reflectance_fitter = fits["stride"], fits["fitter"]
    pipe._before_features = fits["before_features"]


def bench_backbone_sweep(repeats: int, threads: int, size: int = 240) -> list[dict]:
    """The landmark path's network (the backbone graph, 240 px crop in, features out; ONNX Runtime
    when installed) for untrained encoders of other input sizes and widths (timing does not depend
    on the weights), in turns as in :func:`bench_landmark_start`."""
    from fml_taichi.recon.runners import OnnxRunner, TorchRunner, onnx_available

    nets = {}
    for input_size in (96, 112, 128):
        for width in (0.75, 1.0):
            enc, ml, _ = load_networks(None, input_size, width)
            run = (OnnxRunner(enc, ml, size=size, threads=threads, cache=False, graphs=("features",))
                   if onnx_available() else TorchRunner(enc, ml))
            nets[(input_size, width)] = run
    crops = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    times = {k: [] for k in nets}
    rounds = 10
    for r in range(rounds + 1):
        for k, run in nets.items():
            for _ in range(max(1, repeats // rounds)):
                t0 = time.perf_counter()
                run.features(crops)
                if r:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return [{"input_size": k[0], "width": k[1], "runner": nets[k].name, "ms_batch1": statistics.median(v),
             "best_ms_batch1": min(v)} for k, v in times.items()]


def bench_fits_alone(checkpoint: str, repeats: int) -> dict:
    """The start's two fits and the reflectance fit called alone, back to back on the benchmark scene
    (caches warm: the figure the fits' own code sets, against the pipeline's parts above, where the
    encoder and the model decode run in between): median / best ms each, in turns in this process:
    the colour fit numba (the default, also ``colour_fit``: the start's own fitter) and numpy, the
    reflectance fit numba (default), numpy and torch (the path before), its two halves (numba:
    ``prepare`` without the base reflectance, ``solve`` given it), and its offsets from the fitter's
    Theta and from the corrective module."""
    import functools

    from fml_taichi.recon.align import warp_aligned
    from fml_taichi.recon.colour_fit import ColourFitter
    from fml_taichi.recon.corrective_fit import ReflectanceCoefficientFitter, fitted_reflectance_coefficients
    from fml_taichi.recon.pipeline import FIT_VERTEX_STRIDE, FacePipeline

    pipe = FacePipeline.from_checkpoint(checkpoint, detector="pts", threads=1)
    frame, det, box, crops = landmark_scene(pipe)
    params, out = pipe.reconstruct_landmarks(frame, [det], [box], crops)
    aligned = pipe._align([det], [box], pipe.crop_cameras([box], frame.shape))
    lm = np.stack([al.to_crop(det.landmarks) for al in aligned])
    k_al = np.stack([al.intrinsics for al in aligned])
    warped = np.stack([warp_aligned(frame, al) for al in aligned])
    st = pipe.start
    fit = st.landmarks(lm, k_al)
    geo = st.colour_geometry(pipe.last_start.params.shape, pipe.last_start.params.expression)
    colour = {impl: ColourFitter(pipe.face_model, st.colour.config, impl=impl) for impl in ("numba", "numpy")}
    calls = {"landmark_fit": lambda: st.landmarks(lm, k_al),
             "colour_fit": lambda: st.colour(warped, geo, fit.matrix, fit.translation, k_al)}
    for impl, fitter in colour.items():
        calls[f"colour_fit_{impl}"] = functools.partial(fitter, warped, geo, fit.matrix, fit.translation, k_al)
    prior = pipe.reconstructor.reflectance_prior
    if prior is not None and hasattr(pipe.multilevel.reflectance_corrective, "theta"):
        ml = pipe.multilevel
        k_crop = pipe.crop_cameras([box], frame.shape)
        fitters = {impl: ReflectanceCoefficientFitter(pipe.face_model, ml.reflectance_corrective, FIT_VERTEX_STRIDE,
                                                      prior, impl=impl) for impl in ("numba", "numpy")}
        images, k_t = torch.from_numpy(np.ascontiguousarray(crops, np.float32)), torch.as_tensor(k_crop, dtype=torch.float32)
        for impl, fitter in fitters.items():
            calls[f"reflectance_fit_{impl}"] = functools.partial(
                fitter, out.final_geometry, out.base_reflectance, params.rotation, params.translation, params.light,
                crops, k_crop)
        pose = (out.final_geometry, params.rotation, params.translation, params.light, crops, k_crop)
        calls["reflectance_prepare_numba"] = functools.partial(fitters["numba"].prepare, *pose)
        prepared = fitters["numba"].prepare(*pose)
        calls["reflectance_solve_numba"] = functools.partial(prepared.solve, out.base_reflectance)
        calls["reflectance_fit_torch"] = lambda: fitted_reflectance_coefficients(ml, params, out, images, k_t, prior,
                                                                                 FIT_VERTEX_STRIDE)
        # The fitted coefficients' offsets Theta_r delta over all vertices: the fitter's copy of Theta
        # (the pipeline's path) against the corrective module's forward (the path before).
        fitter = fitters["numpy"]
        delta = fitter(out.final_geometry, out.base_reflectance, params.rotation, params.translation, params.light,
                       crops, k_crop)
        delta_t = torch.from_numpy(delta)
        calls["reflectance_offsets_numpy"] = lambda: fitter.offsets(delta)
        calls["reflectance_offsets_torch"] = lambda: ml.reflectance_corrective(delta_t)
    times = {k: [] for k in calls}
    rounds = 10
    for r in range(rounds + 1):
        for k, fn in calls.items():
            for _ in range(max(1, repeats // rounds)):
                t0 = time.perf_counter()
                fn()
                if r:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"ms": statistics.median(v), "best_ms": min(v)} for k, v in times.items()}


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
    if encoder.takes_start:  # the one-call encoder + model graph needs an image-only encoder: the paper's
        encoder, multilevel, what = load_networks(default_checkpoint("encoder"))
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

    torch.set_num_threads(thread_counts[0])
    variants = bench_landmark_start(ckpt, args.repeats, threads=thread_counts[0]) if ckpt else []
    start = None
    if variants:
        base_ms = variants[0]["ms_batch1"]
        print(f"\nlandmark start, batch 1, detection excluded ({variants[0]['runner']}, {thread_counts[0]} thread(s); "
              f"load average {load_average()}): median / best / p90 ms, x the first (baseline)")
        for v in variants:
            v["x_baseline"] = base_ms / v["ms_batch1"]
            v["hz_batch1"] = 1e3 / v["ms_batch1"]
            p = v["parts_ms"]
            v["start_ms"] = p["landmark_fit"] + p["colour_fit"]
            # With the encoder overlapped the start is on the critical path: its share of the call.
            v["start_share"] = v["start_ms"] / v["ms_batch1"]
            print(f"  {v['variant']:<52s} {v['ms_batch1']:6.2f} / {v['best_ms_batch1']:5.2f} / {v['p90_ms_batch1']:5.2f} ms "
                  f"{v['hz_batch1']:5.0f} Hz (best {1e3 / v['best_ms_batch1']:4.0f})  x {v['x_baseline']:.2f}; "
                  f"start {100 * v['start_share']:.0f}%; caller CPU {v['caller_cpu_ms']:.2f} (best {v['best_caller_cpu_ms']:.2f}); "
                  + ", ".join(f"{k} {t:.2f}" for k, t in p.items()))
        image_row = next(v for v in variants if v["encoder_input"] == "image" and v["split_encoder"]
                         and v["overlap_encoder"] is True)
        start_enc = next(v for v in variants if v["encoder_input"] == "image+start" and v["overlap_encoder"] is True
                         and v["reflectance_fit_impl"] == "numpy" and v["call"] == "reconstruct_landmarks"
                         and v["fits"] == "default")
        numpy_fits = next((v for v in variants if v["fits"] == "numpy"), None)
        before = next((v for v in variants if v["encoder_input"] == "image+start" and v["overlap_encoder"] is True
                       and v["reflectance_fit_impl"] == "torch"), None)
        # The headline row (JSON "landmark_start") is the checkpoint's own path: the shipped default's
        # image+start encoder, or the image encoder's split, overlapped path for an image-only checkpoint.
        shipped_takes_start = load_networks(ckpt)[0].takes_start
        start = dict(start_enc if shipped_takes_start else image_row)
        start["variants"] = variants
        verdict = "meets" if start["hz_batch1"] >= TARGET_HZ else "misses"
        print(f"\ncheckpoint's default path ({start['variant']}): {start['ms_batch1']:.2f} ms median "
              f"({start['best_ms_batch1']:.2f} best) = {start['hz_batch1']:.0f} Hz ({1e3 / start['best_ms_batch1']:.0f} Hz "
              f"best): {verdict} the {TARGET_HZ:.0f} Hz target; the start's fit {start['start_ms']:.2f} ms = "
              f"{100 * start['start_share']:.0f}% of the call")
        for row in (image_row, start_enc):
            print(f"  {row['variant']}: {row['ms_batch1']:.2f} ms median ({row['best_ms_batch1']:.2f} best) = "
                  f"{row['hz_batch1']:.0f} Hz; the start's fit {100 * row['start_share']:.0f}% of the call")
        if before is not None:
            print(f"  x {before['ms_batch1'] / start_enc['ms_batch1']:.2f} median, x "
                  f"{before['best_ms_batch1'] / start_enc['best_ms_batch1']:.2f} best against the torch reflectance fit "
                  f"({before['ms_batch1']:.2f} / {before['best_ms_batch1']:.2f} ms); reflectance fit "
                  f"{before['parts_ms'].get('reflectance_fit', 0.0):.2f} -> "
                  f"{start_enc['parts_ms'].get('reflectance_fit', 0.0):.2f} ms median")
        if numpy_fits is not None:
            print(f"  x {numpy_fits['ms_batch1'] / start_enc['ms_batch1']:.2f} median, x "
                  f"{numpy_fits['best_ms_batch1'] / start_enc['best_ms_batch1']:.2f} best against the numpy fits "
                  f"({numpy_fits['ms_batch1']:.2f} / {numpy_fits['best_ms_batch1']:.2f} ms)")
        start["before_numpy_reflectance_fit"] = before["variant"] if before else None
        start["before_compiled_fits"] = numpy_fits["variant"] if numpy_fits else None

    fits_alone = None
    if ckpt:
        fits_alone = bench_fits_alone(ckpt, args.repeats)
        print(f"\nfits alone, caches warm (load average {load_average()}), median / best ms: "
              + "; ".join(f"{k} {v['ms']:.3f} / {v['best_ms']:.3f}" for k, v in fits_alone.items()))

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
        print("\nsweep: the landmark path's backbone graph (240 px crop -> features), untrained, batch 1, "
              "median / best ms:")
        sweep = bench_backbone_sweep(args.repeats, thread_counts[0])
        for r in sweep:
            print(f"  input {r['input_size']:>3} px, width {r['width']:<4}: {r['ms_batch1']:6.3f} / "
                  f"{r['best_ms_batch1']:6.3f} ms ({1e3 / r['ms_batch1']:5.0f} / {1e3 / r['best_ms_batch1']:5.0f} Hz)")

    if args.json:
        from fml_taichi.common.atomic import write_text

        doc = {"device": device, "ms_batch1": round(best["ms_batch1"], 4), "hz_batch1": round(best["hz_batch1"], 1),
               "hz_batch64": round(best64, 1), "runner": best["runner"],
               "threads": best["threads"], "load_average": load_average(), "model": what,
               "rows": rows, "detection_ms": detection, "sweep": sweep, "landmark_start": start,
               "fits_alone": fits_alone}
        write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
