"""Benchmark the fused Taichi image-formation layer against the plain-torch reference, same process.

Scene: a closed UV sphere of about N vertices (~2N triangles, radius 80 mm) at 500 mm in front of the
default 240 px camera (so ~half the vertices are visible), small random rotations per image, random
reflectance, ambient + random SH light, random 240x240 images. Gradients w.r.t. vertices,
reflectance, rotation, translation and light (not the image, as in training).

Timed: "fwd" = the layer's forward with inputs that require grad (the autograd graph is built, as in
training); "fwd_bwd" = forward + ``loss.sum().backward()``. Median of --runs runs after --warmup runs;
Taichi and torch runs alternate, so load from other processes skews both alike.
Prints a table; ``--json PATH`` also writes the figures (atomically).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_image_formation.py --json benchmarks/results/image_formation.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its pool (see fml_taichi.common.runtime)

import torch  # noqa: E402

import fml_taichi.ops as K  # noqa: E402
import fml_taichi.reference as R  # noqa: E402
from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.common.camera import default_intrinsics  # noqa: E402
from fml_taichi.common.atomic import atomic_path  # noqa: E402
from fml_taichi.reference.image_formation import SH_C0  # noqa: E402
from fml_taichi.reference.meshes import sphere_with_n_vertices  # noqa: E402


def make_scene(n: int, b: int, size: int, dtype: torch.dtype, seed: int = 0):
    """Inputs of image_formation for ``b`` images of a sphere with about ``n`` vertices."""
    g = torch.Generator().manual_seed(seed)
    dev = runtime.torch_device()
    verts, tris = sphere_with_n_vertices(n, radius=80.0, dtype=dtype)
    vertices = (verts.expand(b, -1, -1) + 0.5 * torch.randn(b, verts.shape[0], 3, generator=g, dtype=dtype))
    reflectance = 0.3 + 0.5 * torch.rand(b, verts.shape[0], 3, generator=g, dtype=dtype)
    rotation = 0.2 * torch.randn(b, 3, generator=g, dtype=dtype)
    translation = torch.tensor([0.0, 0.0, 500.0], dtype=dtype).repeat(b, 1)
    light = 0.1 * torch.randn(b, 9, 3, generator=g, dtype=dtype)
    light[:, 0] += 0.8 / SH_C0  # ambient: irradiance 0.8
    image = torch.rand(b, size, size, 3, generator=g, dtype=dtype)
    diff = [t.to(dev).contiguous().requires_grad_() for t in (vertices, reflectance, rotation, translation, light)]
    return diff, tris.to(dev), default_intrinsics(size, dtype=dtype, device=dev), image.to(dev)


def closures(impl, scene):
    """(forward, forward+backward) callables of ``impl`` (kernels or reference) on ``scene``."""
    (v, r, rot, t, light), tris, k, image = scene

    def fwd():
        return impl.image_formation(v, r, tris, rot, t, k, light, image)

    def fwd_bwd():
        fwd().loss.sum().backward()
        for x in (v, r, rot, t, light):
            x.grad = None

    return fwd, fwd_bwd


def median_ms_interleaved(fns, runs: int, warmup: int) -> list[tuple[float, float]]:
    """(wall, process CPU) median milliseconds of each callable.

    Runs alternate between the callables, so load from other processes on a shared machine hits
    every contender alike and the ratios stay meaningful; the CPU time (all threads of this process)
    is a second, load-robust view of the same work.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(runs):
        for fn, ws, cs in zip(fns, wall, cpu):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            ws.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
    return [(1e3 * statistics.median(ws), 1e3 * statistics.median(cs)) for ws, cs in zip(wall, cpu)]


def check_agreement(scene) -> float:
    """Largest relative difference of the two implementations' losses (a sanity check, not a test)."""
    (v, r, rot, t, light), tris, k, image = scene
    with torch.no_grad():
        a = K.image_formation(v, r, tris, rot, t, k, light, image).loss
        b = R.image_formation(v, r, tris, rot, t, k, light, image).loss
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[30000, 50000], help="approximate vertex counts")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--image-size", type=int, default=240)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--float64", action="store_true", help="time float64 instead of float32")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON (atomically)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")

    runtime.init()
    dtype = torch.float64 if args.float64 else torch.float32
    device = runtime.device_name()
    print(f"device: {device}; dtype {str(dtype).replace('torch.', '')}; torch threads {torch.get_num_threads()}; "
          f"image {args.image_size}x{args.image_size}; median of {args.runs} runs after {args.warmup} warm-up")
    header = (f"{'N':>7} {'B':>3} {'F':>7} | {'taichi fwd':>10} {'taichi f+b':>10} | {'torch fwd':>10} "
              f"{'torch f+b':>10} | {'x fwd':>6} {'x f+b':>6} | {'ti f+b cpu':>9} {'th f+b cpu':>9} "
              f"{'x cpu':>6} | {'loss diff':>8}")
    print(header)
    print("-" * len(header))
    cases = []
    for n in args.sizes:
        for b in args.batches:
            scene = make_scene(n, b, args.image_size, dtype)
            n_true, f = scene[0][0].shape[1], scene[1].shape[0]
            agree = check_agreement(scene)
            (ti_f, th_f), (ti_fb, th_fb) = (
                median_ms_interleaved([closures(K, scene)[j], closures(R, scene)[j]], args.runs, args.warmup)
                for j in (0, 1))
            case = {"n": n_true, "b": b, "f": f,
                    "taichi_fwd_ms": round(ti_f[0], 3), "taichi_fwd_bwd_ms": round(ti_fb[0], 3),
                    "torch_fwd_ms": round(th_f[0], 3), "torch_fwd_bwd_ms": round(th_fb[0], 3),
                    "speedup_fwd": round(th_f[0] / ti_f[0], 2), "speedup_fwd_bwd": round(th_fb[0] / ti_fb[0], 2),
                    "taichi_fwd_bwd_cpu_ms": round(ti_fb[1], 3), "torch_fwd_bwd_cpu_ms": round(th_fb[1], 3),
                    "speedup_fwd_bwd_cpu": round(th_fb[1] / ti_fb[1], 2), "loss_rel_diff": agree}
            cases.append(case)
            print(f"{n_true:>7} {b:>3} {f:>7} | {ti_f[0]:>10.2f} {ti_fb[0]:>10.2f} | {th_f[0]:>10.2f} "
                  f"{th_fb[0]:>10.2f} | {case['speedup_fwd']:>6.2f} {case['speedup_fwd_bwd']:>6.2f} | "
                  f"{ti_fb[1]:>9.2f} {th_fb[1]:>9.2f} {case['speedup_fwd_bwd_cpu']:>6.2f} | {agree:>8.1e}", flush=True)
    print("wall-clock medians in ms; 'cpu' = process CPU time (all threads) of forward+backward; "
          "x = torch / taichi; loss diff = max relative difference of the two losses")
    if args.json:
        out = {"device": device, "dtype": str(dtype).replace("torch.", ""), "image_size": args.image_size,
               "runs": args.runs, "warmup": args.warmup, "torch_threads": torch.get_num_threads(),
               "load_average_1min": os.getloadavg()[0], "cases": cases}
        with atomic_path(args.json) as tmp:
            with open(tmp, "w") as fh:
                json.dump(out, fh, indent=2)
                fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
