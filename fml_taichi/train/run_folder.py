"""What a training run folder holds, and the checks that keep one run from overwriting another.

The trainer owns a run folder: it writes the files named in :data:`RUN_FILES` (checkpoints, config,
logs, curves, metrics) and nothing else, each through a temp file + rename
(:mod:`fml_taichi.common.atomic`). A process killed mid-write leaves such a temp file behind (never a
half-written target); :func:`remove_stale_temps` deletes them when a run starts or resumes.
"""
from __future__ import annotations

import contextlib
import os

from ..common.atomic import TEMP_PREFIX

CHECKPOINT = "checkpoint.pt"
STAGE1_CHECKPOINT = "checkpoint_stage1.pt"
#: Every file the trainer writes into its run folder (fml_taichi.train.trainer, .logs).
RUN_FILES = (CHECKPOINT, STAGE1_CHECKPOINT, "config.yaml", "train_log.csv", "train_log.json", "val_log.csv",
             "val_log.json", "curves_loss.png", "curves_val_photo.png", "curves_val_geometry.png",
             "metrics.json", "run_info.json")
#: Files whose presence means "a run lives here" (a folder with only a config is not a run yet).
_RUN_MARKERS = (CHECKPOINT, STAGE1_CHECKPOINT, "train_log.csv", "metrics.json")


class RunExists(ValueError):
    """The output folder already holds a training run and neither resume nor force was asked for."""


def existing_run_files(out_dir: str) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``out_dir`` when it holds a run (else ``[]``)."""
    if not os.path.isdir(out_dir) or not any(os.path.exists(os.path.join(out_dir, m)) for m in _RUN_MARKERS):
        return []
    return [n for n in RUN_FILES if os.path.exists(os.path.join(out_dir, n))]


def refuse_existing_run(out_dir: str) -> None:
    """Raise :class:`RunExists` (naming ``--resume`` and ``--force``) when ``out_dir`` holds a run."""
    found = existing_run_files(out_dir)
    if found:
        raise RunExists(f"{out_dir!r} already holds a training run ({', '.join(found[:4])}"
                        f"{', ...' if len(found) > 4 else ''}): pass --resume to continue it, or --force to "
                        "delete it and start over")


def clear_run(out_dir: str) -> list[str]:
    """Delete the trainer's files (and stale temps) from ``out_dir``; other files are left alone."""
    removed = []
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed + remove_stale_temps(out_dir)


def _is_run_temp(name: str) -> bool:
    if not name.startswith(TEMP_PREFIX):
        return False
    rest = name[len(TEMP_PREFIX):]
    return any(rest.startswith(target + "-") for target in RUN_FILES)


def remove_stale_temps(out_dir: str) -> list[str]:
    """Delete temp files of the trainer's atomic writes that a killed process left in ``out_dir``.

    Only call this while no other process writes into the folder (one trainer per run folder).
    """
    if not os.path.isdir(out_dir):
        return []
    removed = []
    for name in sorted(os.listdir(out_dir)):
        if _is_run_temp(name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
                removed.append(name)
    return removed
