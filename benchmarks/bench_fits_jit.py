"""The reconstruction's fits alone, numba against numpy: colour fit and reflectance coefficient fit.

``bench_inference.bench_fits_alone`` on the packaged checkpoint's benchmark scene (batch 1, caches
warm, the compiled functions loaded from numba's cache before timing), without the rest of that
benchmark: median / best ms of each call, the variants in turns in one process, and the ratios
numpy / numba of each fit (the baseline is the numpy path, run in the same rounds).

    python benchmarks/bench_fits_jit.py [--checkpoint C] [--repeats 300] [--json PATH]
"""
import argparse
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inference import bench_fits_alone, load_average  # noqa: E402

import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402

PAIRS = (("colour_fit", "colour_fit_numpy", "colour_fit_numba"),
         ("reflectance_fit", "reflectance_fit_numpy", "reflectance_fit_numba"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: the packaged one)")
    ap.add_argument("--repeats", type=int, default=300, help="calls per variant (in 10 rounds)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the table as JSON")
    args = ap.parse_args()
    from fml_taichi.recon.pipeline import default_checkpoint

    runtime.init()
    torch.set_num_threads(1)
    ckpt = args.checkpoint or default_checkpoint()
    if ckpt is None:
        print("error: no checkpoint (the fits need the shipped model)", file=sys.stderr)
        return 2
    load_before = load_average()
    table = bench_fits_alone(ckpt, args.repeats)
    print(f"fits alone, batch 1, 1 thread; load average {load_before} -> {load_average()}")
    print(f"{'call':<28} {'median ms':>10} {'best ms':>9}")
    for k, v in table.items():
        print(f"{k:<28} {v['ms']:>10.3f} {v['best_ms']:>9.3f}")
    ratios = {}
    for name, base, new in PAIRS:
        if base in table and new in table:
            ratios[name] = {"x_median": table[base]["ms"] / table[new]["ms"],
                            "x_best": table[base]["best_ms"] / table[new]["best_ms"]}
            print(f"{name}: numba x {ratios[name]['x_median']:.2f} faster than numpy (median), "
                  f"x {ratios[name]['x_best']:.2f} (best)")
    if args.json:
        out = {"checkpoint": os.path.basename(ckpt), "threads": 1, "repeats": args.repeats,
               "load_average": [load_before, load_average()], "fits_alone": table, "numba_speedup": ratios}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
