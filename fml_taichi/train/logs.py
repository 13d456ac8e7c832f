"""Training logs: the loss and validation history as CSV + JSON, and PNG curves.

The history lives in memory (and in each checkpoint, so a resumed run continues it without
duplicated or missing rows); the files are rewritten atomically from it, so they always match the
last checkpoint or a later state, never a half-written one.

Files in the run folder:
    train_log.csv / train_log.json   step, stage, images/s and every loss term, every ``log.every`` steps
    val_log.csv / val_log.json       step, stage and the validation metrics (base vs final level)
    curves_loss.png                  total and data terms over steps (log scale)
    curves_val_photo.png             validation photometric error, base vs final
    curves_val_geometry.png          validation geometric error (mm), base vs final (synthetic data)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os

from ..common.atomic import write_text
from ..io.plots import plot_curves


class History:
    """Rows of training and validation records (plain dicts of str -> number)."""

    def __init__(self, train: list[dict] | None = None, val: list[dict] | None = None):
        self.train = list(train or [])
        self.val = list(val or [])

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    @classmethod
    def from_dict(cls, d: dict | None) -> "History":
        d = d or {}
        return cls(d.get("train"), d.get("val"))

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run redoes them)."""
        self.train = [r for r in self.train if r["step"] <= step]
        self.val = [r for r in self.val if r["step"] <= step]


def _csv_text(rows: list[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in keys})
    return buf.getvalue()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_logs(out_dir: str, history: History) -> None:
    """(Re)write the CSV/JSON logs and the PNG curves of ``history`` into ``out_dir``."""
    for name, rows in (("train_log", history.train), ("val_log", history.val)):
        if not rows:
            continue
        write_text(os.path.join(out_dir, name + ".csv"), _csv_text(rows))
        write_text(os.path.join(out_dir, name + ".json"),
                   json.dumps([{k: _json_safe(v) for k, v in r.items()} for r in rows], indent=1) + "\n")
    write_curves(out_dir, history)


def _series(rows: list[dict], key: str):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None


def write_curves(out_dir: str, history: History) -> list[str]:
    """PNG curves of the history; returns the paths written (curves with no data are skipped)."""
    written = []
    specs = [
        ("curves_loss.png", history.train, ("total", "sparse", "photo_base", "photo_final"),
         "training loss", "loss", True),
        ("curves_val_photo.png", history.val, ("photo_base", "photo_final"),
         "validation: photometric error (RGB distance)", "error", False),
        ("curves_val_geometry.png", history.val, ("geom_mm_base", "geom_mm_final"),
         "validation: geometric error", "mm", False),
    ]
    for fname, rows, keys, title, ylabel, log_y in specs:
        series = {k: s for k in keys if (s := _series(rows, k)) is not None}
        if log_y:
            series = {k: s for k, s in series.items() if any(v > 0 for v in s[1])}
        if not series:
            continue
        path = os.path.join(out_dir, fname)
        plot_curves(path, series, title=title, xlabel="step", ylabel=ylabel, log_y=log_y)
        written.append(path)
    return written
