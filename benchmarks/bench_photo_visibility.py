"""Which vertex visibility should E_photo use: the backface test (the paper) or the z-buffer?

Per-image fitting (``FitMethod``: base level, then free per-vertex correctives) with the same losses
except ``photo_visibility``, on the same held-out synthetic faces, in one process. The faces turn
up to ``--yaw`` degrees, where the backface test keeps the cheek behind the nose (it faces the
camera but is hidden) and so scores colours the image does not show there.

    python benchmarks/bench_photo_visibility.py --n 8 --json benchmarks/results/photo_visibility.json

Prints geometric error (mm, face region, after similarity alignment), photometric error and NME per
level for each choice, and the ratio z-buffer / backface (< 1: the z-buffer is better).
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fml_taichi.common.atomic import write_text  # noqa: E402
from fml_taichi.data.synthetic import SyntheticConfig  # noqa: E402
from fml_taichi.eval.harness import evaluate  # noqa: E402
from fml_taichi.eval.methods import FitMethod  # noqa: E402
from fml_taichi.losses import default_weights  # noqa: E402
from fml_taichi.model import default_face_model  # noqa: E402

KEYS = ("geom_mm_base", "geom_mm_final", "photo_base", "photo_final", "nme_base", "nme_final")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="held-out faces (default 8)")
    ap.add_argument("--yaw", type=float, default=45.0, help="largest head turn in degrees (default 45)")
    ap.add_argument("--n-vertices", type=int, default=8000)
    ap.add_argument("--base-iterations", type=int, default=150)
    ap.add_argument("--final-iterations", type=int, default=60)
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON (atomically)")
    args = ap.parse_args(argv)

    fm = default_face_model(n_vertices=args.n_vertices)
    cfg = SyntheticConfig(image_size=240, yaw_deg=args.yaw)
    rows = {}
    for vis in ("backface", "zbuffer"):
        weights = default_weights().replace(photo_visibility=vis)
        method = FitMethod(fm, args.base_iterations, args.final_iterations, weights=weights, progress=False)
        t0 = time.perf_counter()
        summary = evaluate(method, n=args.n, config=cfg, n_examples=0, progress=False).summary
        rows[vis] = {k: summary[k] for k in KEYS}
        rows[vis]["seconds"] = round(time.perf_counter() - t0, 1)
    ratio = {k: rows["zbuffer"][k] / rows["backface"][k] for k in KEYS}
    print(f"{args.n} held-out faces, yaw up to {args.yaw:g} deg, {fm.n_vertices} vertices, "
          f"fit {args.base_iterations}+{args.final_iterations} steps")
    print(f"{'visibility':<10} " + " ".join(f"{k:>14}" for k in KEYS) + f" {'s':>7}")
    for vis, r in rows.items():
        print(f"{vis:<10} " + " ".join(f"{r[k]:>14.4f}" for k in KEYS) + f" {r['seconds']:>7.1f}")
    print(f"{'ratio z/b':<10} " + " ".join(f"{ratio[k]:>14.3f}" for k in KEYS))
    if args.json:
        write_text(args.json, json.dumps({"n": args.n, "yaw_deg": args.yaw, "n_vertices": fm.n_vertices,
                                          "rows": rows, "ratio_zbuffer_over_backface": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
