"""Synthetic-face throughput: can the renderer feed training on the fly?

For several face-model sizes and batch sizes, renders batches of 240 x 240 synthetic faces (the
full pipeline: draws, base model + out-of-space variation, shading, z-buffer rasterisation, simulated
landmark detector, backgrounds, compositing, sensor blur/noise) and reports images/s (median over
repeats after a warm-up that also compiles the kernels), the time share of each stage, and the
ratio to the 100 img/s target. A second table compares the fused Taichi compositing used by the
renderer with the generic ``ops.rasterize.shade_image`` on the same raster (the reason the
renderer has its own).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_synthetic.py [--sizes 2000 8000 20000] [--batches 8 32]
        [--repeats 5] [--out benchmarks/results/bench_synthetic.md]

CPU numbers on shared machines swing with other load: compare rows of one run, not across runs.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.data import SyntheticConfig, SyntheticRenderer  # noqa: E402
from fml_taichi.ops.composite import composite  # noqa: E402
from fml_taichi.common.atomic import write_text  # noqa: E402
from fml_taichi.ops.rasterize import rasterize, shade_image  # noqa: E402
from fml_taichi.model import default_face_model  # noqa: E402

TARGET = 100.0  # img/s: enough to keep a ~40-50 img/s CPU training step from waiting on data


def bench_renderer(renderer: SyntheticRenderer, batch: int, repeats: int, seed0: int) -> tuple[float, dict]:
    """(median images/s, mean seconds per image of each stage)."""
    renderer.render(list(range(seed0, seed0 + batch)))  # warm-up / compile
    rates, stages = [], {}
    for r in range(repeats):
        seeds = list(range(seed0 + (r + 1) * batch, seed0 + (r + 2) * batch))
        t = {}
        t0 = time.perf_counter()
        renderer.render(seeds, timings=t)
        rates.append(batch / (time.perf_counter() - t0))
        for k, v in t.items():
            stages[k] = stages.get(k, 0.0) + v / (repeats * batch)
    return statistics.median(rates), stages


def bench_composite(renderer: SyntheticRenderer, batch: int, repeats: int) -> tuple[float, float]:
    """(ms per batch of the fused compositing, ms of shade_image) on one rendered raster."""
    out = renderer.render(list(range(batch)))
    fm = renderer.face_model
    size = renderer.config.image_size
    from fml_taichi.reference.image_formation import euler_to_matrix

    p = out["gt_params"]
    rot = euler_to_matrix(p.rotation)
    v_cam = (torch.bmm(out["gt_vertices"], rot.transpose(1, 2)) + p.translation.unsqueeze(1)).contiguous()
    raster = rasterize(v_cam, fm.triangles, renderer.intrinsics, size, size, cull_backfaces=True)
    colours = out["gt_reflectance"].contiguous()
    bg = out["image"]

    def ms(fn):
        fn()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples)

    fused = ms(lambda: composite(raster, fm.triangles, colours, bg))
    return fused, ms(lambda: shade_image(raster, fm.triangles, colours, bg))


def write_sample_grid(path: str, renderer: SyntheticRenderer, seeds: list[int]) -> None:
    """A labelled grid of samples with their noisy landmarks (jaw red, inner face green)."""
    import cv2
    import numpy as np

    from fml_taichi.io.figures import compose_figure
    from fml_taichi.io.images import write_png

    out = renderer.render(seeds)
    panels = []
    for i, s in enumerate(seeds):
        img = np.ascontiguousarray((out["image"][i].numpy() * 255).astype(np.uint8))
        for k, (x, y) in enumerate(out["landmarks"][i].numpy()):
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (255, 0, 0) if k < 17 else (0, 255, 0), -1)
        deg = np.degrees(out["gt_params"].rotation[i].numpy())
        panels.append((f"seed {s} yaw {deg[1]:+.0f}", img))
    write_png(path, compose_figure(panels, columns=8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000], help="model vertex counts")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_synthetic.md"))
    args = ap.parse_args()
    runtime.init()
    load0 = os.getloadavg()[0]
    lines = [f"# Synthetic faces: throughput at 240 x 240 ({runtime.device_name()}, torch threads "
             f"{torch.get_num_threads()})", "",
             "| vertices | batch | img/s | x target (100 img/s) | slowest stages (ms/img) |",
             "|---:|---:|---:|---:|---|"]
    comp_rows = []
    jobs = [(n, b) for n in args.sizes for b in args.batches]
    renderers = {}
    for n, b in tqdm(jobs, desc="bench", unit="config"):
        if n not in renderers:
            renderers[n] = SyntheticRenderer(default_face_model(n), SyntheticConfig())
        rate, stages = bench_renderer(renderers[n], b, args.repeats, seed0=1000)
        top = sorted(stages.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"| {renderers[n].face_model.n_vertices} | {b} | {rate:.1f} | {rate / TARGET:.2f} | "
                     + ", ".join(f"{k} {v * 1000:.2f}" for k, v in top) + " |")
        if b == max(args.batches):
            fused, generic = bench_composite(renderers[n], b, args.repeats)
            comp_rows.append(f"| {renderers[n].face_model.n_vertices} | {b} | {fused:.1f} | {generic:.1f} | "
                             f"{generic / fused:.1f}x |")
    lines += ["", f"1-minute load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
              "(other processes share these cores; rows of one run are comparable, runs are not)."]
    lines += ["", "Compositing one batch (ms): fused Taichi kernel vs generic `shade_image`", "",
              "| vertices | batch | fused | shade_image | speed-up |", "|---:|---:|---:|---:|---:|"] + comp_rows
    grid = os.path.join(os.path.dirname(args.out), "synthetic_samples.png")
    write_sample_grid(grid, renderers[max(renderers)], list(range(16)))
    lines += ["", f"Samples: `{os.path.basename(grid)}` (seeds 0-15, training range; noisy landmarks drawn)."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
