"""``fml-taichi eval``: geometric, photometric and landmark error of a reconstruction method, base and
final level side by side (paper Sec. 7.2, Tab. 1, Fig. 11).

Examples::

    fml-taichi eval --method fit --n 20                       # per-image fitting, no training needed
    fml-taichi eval --checkpoint runs/default/checkpoint.pt --n 200 --json results.json
    fml-taichi eval --checkpoint C --images my_faces/         # user images with same-stem .pts files

Prints a table, writes ``<out>/eval_summary.png`` (bar charts) and ``<out>/eval_examples.png`` (input,
base, final and per-vertex error maps), and with ``--json PATH`` the summary as JSON (keys ``n,
geom_mm_base, geom_mm_final, geom_sd_base, geom_sd_final, photo_base, photo_final, nme_base,
nme_final``; null where a metric cannot be measured, e.g. geometry on user images) plus
``per_image`` records and the settings used.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

HELP = "evaluate a reconstruction method on held-out synthetic faces or annotated images"


def _synthetic_config(method, image_size: int):
    """Held-out faces drawn as a checkpoint was trained (its ``data.synthetic``: the same variation
    families, other seeds); the default generator for the other methods."""
    from ..data.synthetic import SyntheticConfig
    from ..nets.config import synthetic_config

    cfg = getattr(getattr(method, "reconstructor", None), "config", None)
    if cfg is None or cfg.data.kind != "synthetic":
        return SyntheticConfig(image_size=image_size)
    return dataclasses.replace(synthetic_config(cfg), image_size=image_size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="C", help="a training checkpoint to evaluate")
    src.add_argument("--method", choices=("fit", "mean"), help="'fit': per-image fitting with the losses; "
                     "'mean': the mean-face baseline (default: fit when no --checkpoint)")
    parser.add_argument("--n", type=int, default=20, help="number of held-out synthetic faces (default 20)")
    parser.add_argument("--seed-start", type=int, default=None,
                        help="first synthetic seed (default: the evaluation range, 10,000,000)")
    parser.add_argument("--heldout", choices=("heldout", "heldout_alt"), default="heldout",
                        help="synthetic held-out set: the training distribution (default) or 'heldout_alt', "
                        "geometry from another region-field family on its own seeds (as in metrics.json)")
    parser.add_argument("--images", metavar="DIR", help="evaluate on images in DIR with same-stem .pts files "
                        "(68 iBUG points) instead of synthetic faces")
    parser.add_argument("--out", default="eval_out", help="folder for the PNG figures (default eval_out)")
    parser.add_argument("--json", metavar="PATH", help="write the summary as JSON to PATH")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=240, help="crop size in pixels (default 240)")
    parser.add_argument("--n-vertices", type=int, default=8000,
                        help="fit/mean: decimate the default face model to about this many vertices (default "
                        "8000; 0 = the full model); a checkpoint brings its own model")
    parser.add_argument("--base-iterations", type=int, default=150, help="fit: Adam steps for the base level")
    parser.add_argument("--final-iterations", type=int, default=60, help="fit: Adam steps for the final level")
    parser.add_argument("--impl", choices=("taichi", "torch"), default="taichi", help="fit: loss implementation (Taichi kernels or their torch references)")
    parser.add_argument("--examples", type=int, default=3, help="example rows in eval_examples.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_method(args):
    """The method the arguments name (checkpoint, fit or mean)."""
    from ..eval.methods import CheckpointMethod, FitMethod, MeanFaceMethod

    if args.checkpoint:
        return CheckpointMethod(args.checkpoint)
    from ..model import default_face_model

    face_model = default_face_model(args.n_vertices or None)
    if args.method == "mean":
        return MeanFaceMethod(face_model)
    return FitMethod(face_model, base_iterations=args.base_iterations, final_iterations=args.final_iterations,
                     impl=args.impl, progress=not args.no_progress)


def _check_args(args) -> None:
    for name in ("n", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    for name in ("base_iterations", "final_iterations", "examples"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}: expected a non-negative integer, got {getattr(args, name)}")
    if args.n_vertices and args.n_vertices < 500:
        raise ValueError(f"--n-vertices: need 0 (full model) or at least 500, got {args.n_vertices}")


def run(args) -> int:
    from ..data.synthetic import EVAL_SEED_START
    from ..eval import harness
    from ..common.atomic import write_text

    try:
        _check_args(args)
        method = build_method(args)
        if args.images:
            result = harness.evaluate_images(method, args.images, image_size=args.image_size,
                                             batch_size=args.batch_size, n_examples=args.examples,
                                             progress=not args.no_progress)
            source = f"images in {args.images}"
        else:
            config, seed_start = harness.heldout_config(args.heldout, _synthetic_config(method, args.image_size))
            if args.seed_start is not None:
                seed_start = args.seed_start
            result = harness.evaluate(method, n=args.n, seed_start=seed_start, batch_size=args.batch_size,
                                      config=config, n_examples=args.examples, progress=not args.no_progress)
            source = f"{args.n} held-out synthetic faces (seeds {seed_start}..{seed_start + args.n - 1})"
    except (ValueError, FileNotFoundError) as e:
        print(f"fml-taichi eval: error: {e}", file=sys.stderr)
        return 2
    print(harness.format_table(result.summary, title=f"{method.name} on {source}"))
    os.makedirs(args.out, exist_ok=True)
    summary_png = os.path.join(args.out, "eval_summary.png")
    harness.write_summary_plot(summary_png, result.summary, title=f"{method.name}: {source}")
    examples_png = os.path.join(args.out, "eval_examples.png")
    wrote = harness.write_examples(examples_png, result) is not None
    print(f"wrote {summary_png}" + (f" and {examples_png}" if wrote else ""))
    if args.json:
        payload = {k: result.summary.get(k) for k in harness.SUMMARY_KEYS}
        payload.update({k: v for k, v in result.summary.items() if k not in payload})
        payload["method"] = method.name
        payload["source"] = source
        payload["per_image"] = result.records
        write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
