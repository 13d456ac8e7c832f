"""Benchmark: training throughput (images/s) per stage, and where a step's time goes.

One training step = encoder forward -> multi-level model -> the stage's loss -> backward -> optimizer
step, on a fixed batch of synthetic faces, with the networks and loss settings of a training config
(default ``configs/default.yaml``). Reported per stage: images/s and the split of a step into
encoder forward, loss (image formation and every term) forward, backward and optimizer step. Also:
the encoder's batch-1 inference latency in eager torch (the ONNX Runtime figure lives in
``benchmarks/bench_inference.py``), and the cost of rendering synthetic training faces.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --config configs/default.yaml --json benchmarks/results/train_step.json

The machine is shared: the load average at start and end is part of the report.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.common.camera import default_intrinsics  # noqa: E402
from fml_taichi.common.atomic import write_text  # noqa: E402
from fml_taichi.nets.config import load_config  # noqa: E402
from fml_taichi.nets.models import FaceAutoencoder, build_networks, face_model_from_spec, face_model_spec  # noqa: E402
from fml_taichi.train.objective import stage_loss  # noqa: E402
from fml_taichi.train.trainer import Trainer, make_optimizer  # noqa: E402


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _time_stage(stage, cfg, model, face_model, batch, weights, intrinsics, repeats, warmup):
    scfg = cfg.stage1 if stage == 1 else cfg.stage2
    opt = make_optimizer(scfg, model)
    parts = {"encoder_forward": [], "loss_forward": [], "backward": [], "optimizer": [], "step": []}
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        params, out = model(batch["image"])
        t1 = time.perf_counter()
        losses = stage_loss(stage, out, params, face_model, batch, intrinsics, weights, cfg.losses.impl,
                            cfg.losses.final_landmarks)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= warmup:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[k].append(v)
    med = {k: statistics.median(v) * 1000 for k, v in parts.items()}
    b = batch["image"].shape[0]
    return {"batch": b, "images_per_s": round(b / (med["step"] / 1000), 2),
            **{f"{k}_ms": round(v, 2) for k, v in med.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join("configs", "default.yaml"))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here (atomically)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    runtime.init()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    load_start = _load()
    face_model = face_model_from_spec(face_model_spec(cfg.model))
    multilevel, encoder = build_networks(cfg, face_model)
    model = FaceAutoencoder(encoder, multilevel).train()
    trainer = Trainer.__new__(Trainer)  # only for its loss-weight and synthetic-config helpers
    trainer.cfg, trainer.face_model = cfg, face_model
    weights = trainer._loss_weights()
    intrinsics = default_intrinsics(cfg.data.image_size)

    faces = trainer._synthetic(2 * cfg.stage1.batch_size, "train")
    half = cfg.stage1.batch_size
    items = faces.__getitems__(list(range(half)))  # also compiles the rasteriser kernels
    t0 = time.perf_counter()
    faces.__getitems__(list(range(half, 2 * half)))
    render_s = (time.perf_counter() - t0) / half
    batch = {k: torch.stack([it[k] for it in items]).contiguous() for k in ("image", "landmarks", "landmark_conf")}

    result = {"config": args.config, "device": runtime.device_name(), "threads": torch.get_num_threads(),
              "n_vertices": face_model.n_vertices, "encoder_input": cfg.encoder.input_size,
              "render_ms_per_image": round(render_s * 1000, 2)}
    for stage in (1, 2):
        result[f"stage{stage}"] = _time_stage(stage, cfg, model, face_model, batch, weights, intrinsics,
                                              args.repeats, args.warmup)
    model.eval()
    x = batch["image"][:1].permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        for _ in range(args.warmup):
            encoder.forward_flat(x)
        times = []
        for _ in range(args.repeats * 3):
            t = time.perf_counter()
            encoder.forward_flat(x)
            times.append(time.perf_counter() - t)
    result["encoder_inference_batch1_ms_torch"] = round(statistics.median(times) * 1000, 2)
    result["load_average"] = {"start": load_start, "end": _load()}
    print(json.dumps(result, indent=1))
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
