"""``fml-taichi ship-checkpoint SRC DST``: shrink a training checkpoint for the package
(:mod:`fml_taichi.nets.shipping`) and report what float16 storage costs on random crops."""
from __future__ import annotations

import argparse
import sys

from ..nets.checkpoint import CheckpointError
from ..nets.shipping import MIN_NUMEL, SIZE_LIMIT_MB, shrink_checkpoint
from ..recon.reconstructor import compare_checkpoints

HELP = "shrink a training checkpoint for shipping (no optimizer state, float16 weights)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="a training checkpoint (checkpoint.pt)")
    p.add_argument("dst", metavar="DST", help="where to write the shipping copy (e.g. fml_taichi/checkpoints/default.pt)")
    p.add_argument("--min-numel", type=int, default=MIN_NUMEL, metavar="N",
                   help=f"only tensors with at least N elements become float16 (default {MIN_NUMEL})")


def run(args) -> int:
    try:
        info = shrink_checkpoint(args.src, args.dst, min_numel=args.min_numel)
        diff = compare_checkpoints(args.src, args.dst)
    except (FileNotFoundError, CheckpointError, ValueError, OSError) as e:
        print(f"ship-checkpoint: error: {e}", file=sys.stderr)
        return 1
    mb = info["bytes_after"] / 2**20
    print(f"{args.src} ({info['bytes_before'] / 2**20:.1f} MB, step {info['step']}) -> {args.dst} ({mb:.1f} MB); "
          f"largest change on 8 test inputs: geometry {diff['geometry_mm']:.4f} mm, "
          f"reflectance {diff['reflectance']:.2e}, rotation {diff['rotation_rad']:.2e} rad")
    if mb > SIZE_LIMIT_MB:
        print(f"ship-checkpoint: error: {mb:.1f} MB exceeds the {SIZE_LIMIT_MB:g} MB limit for the repository; "
              "use fewer vertices or correctives (model.n_vertices, n_correctives_*)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fml-taichi ship-checkpoint", description=HELP)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
