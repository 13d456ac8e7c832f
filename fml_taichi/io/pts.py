"""iBUG 300-W ``.pts`` landmark files: read and write (68 points).

The format (as distributed with 300-W / iBUG, and written by most annotation tools)::

    version: 1
    n_points: 68
    {
    x y
    ...
    }

Coordinates on disk are **1-based** pixels (the top-left pixel's centre is (1, 1)), whereas the
project's convention (``docs/conventions.md``) is 0-based with pixel centres at integer coordinates.
:func:`read_pts` therefore subtracts 1 and :func:`write_pts` adds 1, so a round trip is exact and a
file annotated on an image lines up with that image in our frame.

The format carries no confidences: :func:`read_pts` returns confidence 1 for every point (a human
or detector put it there), except points written as negative coordinates, which some tools use for
"missing"; those get confidence 0.
"""
from __future__ import annotations

import os

import numpy as np

from ..common.atomic import write_text

N_POINTS = 68
# On-disk pixel coordinates are 1-based; ours are 0-based.
PTS_OFFSET = 1.0


def _parse_header(lines: list[str], path: str) -> tuple[int, int]:
    """Return (n_points, index of the first coordinate line). Header keys may come in any order."""
    n_points = None
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, sep, value = lines[i].partition(":")
        if not sep:
            raise ValueError(f"{path}: line {i + 1}: expected 'key: value' header or '{{', got {lines[i]!r}")
        if key.strip().lower() == "n_points":
            try:
                n_points = int(value)
            except ValueError:
                raise ValueError(f"{path}: line {i + 1}: n_points is not an integer: {value.strip()!r}") from None
        i += 1
    if i == len(lines):
        raise ValueError(f"{path}: no '{{' opening the point list (not a .pts file?)")
    if n_points is None:
        raise ValueError(f"{path}: missing 'n_points:' header line")
    return n_points, i + 1


def read_pts(path: str | os.PathLike, n_expected: int | None = N_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.pts`` file into 0-based pixel coordinates.

    Args:
        path: the file.
        n_expected: required number of points (68 by default); ``None`` accepts any count.

    Returns:
        ``(points [n, 2] float32, confidence [n] float32)``: 0-based (x, y) pixels; confidence 1,
        or 0 for points stored with a negative coordinate (tools' "missing" marker).

    Raises:
        FileNotFoundError if the file does not exist; ValueError naming the file and line for a
        malformed header, a wrong point count, a non-numeric coordinate or a missing closing brace.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"landmark file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.strip() for ln in f.read().splitlines()]
    lines = [ln for ln in lines if ln]  # blank lines carry nothing
    n_points, start = _parse_header(lines, path)
    if n_expected is not None and n_points != n_expected:
        raise ValueError(f"{path}: n_points is {n_points}, expected {n_expected}")
    end = start + n_points
    if len(lines) <= end or lines[end] != "}":
        got = max(0, min(len(lines), end) - start)
        raise ValueError(f"{path}: expected {n_points} coordinate lines followed by '}}' "
                         f"(found {got} lines before the end)")
    pts = np.empty((n_points, 2), np.float64)
    for k in range(n_points):
        parts = lines[start + k].split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts[k] = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{path}: point {k + 1}: expected two numbers 'x y', got {lines[start + k]!r}") from None
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: contains non-finite coordinates")
    conf = np.where((pts < 0).any(axis=1), 0.0, 1.0).astype(np.float32)
    return (pts - PTS_OFFSET).astype(np.float32), conf


def write_pts(path: str | os.PathLike, points) -> None:
    """Write 0-based (x, y) pixel points ``[n, 2]`` as a 1-based ``.pts`` file (atomically).

    Accepts numpy arrays or torch tensors. Raises ValueError for a wrong shape or non-finite values.
    """
    pts = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"points: expected shape (n, 2) with n >= 1, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points: contains NaN or inf values")
    body = "\n".join(f"{x + PTS_OFFSET:.3f} {y + PTS_OFFSET:.3f}" for x, y in pts)
    write_text(path, f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")
