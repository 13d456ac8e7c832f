"""``fml-taichi train``: self-supervised two-stage training (also ``python examples/train_fml.py``).

Examples::

    fml-taichi train                                   # configs/default.yaml -> runs/default (CPU, <10 min)
    fml-taichi train --config configs/gpu_long.yaml --out runs/long
    fml-taichi train --out runs/default --resume       # continue from runs/default/checkpoint.pt
    fml-taichi train --out runs/default --force        # delete the run in runs/default and start over

An OUT that already holds a run is refused unless ``--resume`` or ``--force`` says what to do with it.
    torchrun --standalone --nproc_per_node=4 examples/train_fml.py --config configs/gpu_long.yaml

The run folder receives ``checkpoint.pt``, ``checkpoint_stage1.pt``, ``config.yaml``, the logs
(``train_log.csv/json``, ``val_log.csv/json``), PNG curves, ``run_info.json`` (timings, images/s)
and ``metrics.json`` (held-out evaluation: base vs final level).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "train the encoder and the multi-level face model (self-supervised, two stages)"
DEFAULT_CONFIG = os.path.join("configs", "default.yaml")
DEFAULT_OUT = os.path.join("runs", "default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help=f"training config YAML (default: {DEFAULT_CONFIG}; ignored with --resume, which "
                             "uses the checkpoint's own config)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"run folder (default: {DEFAULT_OUT})")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue a run exactly (optimizer, step, RNG); default checkpoint: OUT/checkpoint.pt")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in OUT even if it holds one (deletes that run's checkpoints and logs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")


def _config_path(arg: str | None) -> str:
    if arg:
        return arg
    if os.path.isfile(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    # Run from elsewhere: the repository's configs/ next to the package.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(here, DEFAULT_CONFIG)


def run(args: argparse.Namespace) -> int:
    from ..train import distributed as D

    info = D.setup()  # before Taichi starts: pins the GPU of this rank when launched by torchrun
    try:
        from ..nets.checkpoint import CheckpointError
        from ..nets.config import ConfigError, load_config
        from ..train.run_folder import RunExists, clear_run, refuse_existing_run
        from ..train.trainer import CHECKPOINT, Trainer, TrainingDiverged, trainer_from_checkpoint

        progress = not args.no_progress
        try:
            if args.resume is not None and args.force:
                raise ValueError("--resume continues the run in OUT and --force deletes it: choose one")
            if args.resume is None:
                # Checked before anything is loaded: a wrong --out must not cost the old run.
                if not args.force:
                    refuse_existing_run(args.out)
                elif info.is_main:
                    clear_run(args.out)
            if args.resume is not None:
                path = args.resume or os.path.join(args.out, CHECKPOINT)
                trainer = trainer_from_checkpoint(path, args.out, progress=progress, dist_info=info)
                if info.is_main:
                    print(f"resuming {path} at step {trainer.state.step}", file=sys.stderr)
            else:
                trainer = Trainer(load_config(_config_path(args.config)), args.out, progress=progress, dist_info=info)
            metrics = trainer.run()
        except (FileNotFoundError, ConfigError, CheckpointError, RunExists, TrainingDiverged, ValueError) as e:
            print(f"fml-taichi train: error: {e}", file=sys.stderr)
            return 1
        if info.is_main and metrics:
            print(json.dumps(metrics, indent=1))
            print(f"run folder: {os.path.abspath(args.out)}", file=sys.stderr)
        return 0
    finally:
        D.teardown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_fml", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
