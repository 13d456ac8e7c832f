"""Rasteriser speed: Taichi kernel vs the vectorised torch reference, same process, same inputs.

A face-sized workload: a bumpy grid surface (~60k triangles) filling ~180 px of a 240x240 image
0.5 m in front of the default camera, for batch sizes 1 and 8 (and 8 with backface culling). Prints
ms per call (median and best of repeats after a warm-up that also compiles the kernels), the speed-up of
Taichi over torch, and the fraction of pixels where both pick the same triangle.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_rasterize.py [--grid 174] [--repeats 10]
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.common.camera import default_intrinsics  # noqa: E402
from fml_taichi.ops.rasterize import rasterize  # noqa: E402
from fml_taichi.reference.rasterize import rasterize as rasterize_reference  # noqa: E402


def grid_mesh(n: int, batch: int, seed: int = 0):
    """An n x n vertex heightfield (2 (n-1)^2 triangles), 150 mm wide at z ~ 500 mm, per-image jitter."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-75.0, 75.0, n)
    y, x = torch.meshgrid(t, t, indexing="ij")
    z = 500.0 - 40.0 * torch.exp(-(x ** 2 + y ** 2) / 3000.0)  # a bump towards the camera
    v = torch.stack([x, y, z], -1).reshape(1, -1, 3).repeat(batch, 1, 1)
    v = v + 0.5 * torch.randn(v.shape, generator=g)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    tris = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    return v.contiguous(), tris.to(torch.int32).contiguous()


def time_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, best) milliseconds; the best is the steadier figure on a shared machine."""
    fn()  # warm-up (and kernel compilation)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), min(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=174, help="vertices per side (174 -> 59,858 triangles)")
    ap.add_argument("--size", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    runtime.init()
    intr = default_intrinsics(args.size)
    print(f"device: {runtime.device_name()}, torch threads: {torch.get_num_threads()}")
    print(f"{'B':>3} {'cull':>5} {'triangles':>10} {'pixels':>9} {'taichi ms':>10} {'torch ms':>9} {'speed-up':>9} "
          f"{'best ti':>8} {'best torch':>10} {'agree':>7}")
    for batch, cull in ((1, False), (8, False), (8, True)):
        v, tris = grid_mesh(args.grid, batch)
        run_ti = lambda: rasterize(v, tris, intr, args.size, args.size, cull)  # noqa: E731
        run_ref = lambda: rasterize_reference(v, tris, intr, args.size, args.size, cull)  # noqa: E731
        t_ti, t_ref = time_ms(run_ti, args.repeats), time_ms(run_ref, args.repeats)
        a, r = run_ti(), run_ref()
        agree = (a.triangle_id == r.triangle_id).float().mean().item()
        pixels = int(a.mask.sum()) // batch
        print(f"{batch:>3} {str(cull):>5} {tris.shape[0]:>10,} {pixels:>9,} {t_ti[0]:>10.2f} {t_ref[0]:>9.2f} "
              f"{t_ref[0] / t_ti[0]:>8.1f}x {t_ti[1]:>8.2f} {t_ref[1]:>10.2f} {agree:>7.2%}")


if __name__ == "__main__":
    main()
