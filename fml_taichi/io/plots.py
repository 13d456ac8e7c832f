"""Simple line and bar charts drawn with OpenCV into PNGs (training curves, base-vs-final errors).

No matplotlib: the project keeps its dependencies small. Charts have a title, axes with "nice"
1-2-5 ticks, axis labels and a legend; they are meant to be readable, not configurable.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .images import write_png

__all__ = ["plot_curves", "plot_bars", "nice_ticks"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Distinguishable colours (RGB, 0-255), the widely used "tab10" palette order.
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 80, 20, 40, 55


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks: range must be finite, got [{lo}, {hi}]")
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.6g}"


def _text(img, s, org, scale=0.45, colour=(0, 0, 0), anchor="left", thick=1):
    (tw, th), _ = cv2.getTextSize(s, _FONT, scale, thick)
    x, y = org
    if anchor == "center":
        x -= tw // 2
    elif anchor == "right":
        x -= tw
    cv2.putText(img, s, (int(x), int(y + th // 2)), _FONT, scale, colour[::-1], thick, cv2.LINE_AA)


def _canvas(size, title, xlabel, ylabel):
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)  # BGR while drawing
    _text(img, title, (w // 2, 18), 0.6, anchor="center", thick=1)
    _text(img, xlabel, (_MARGIN_L + (w - _MARGIN_L - _MARGIN_R) // 2, h - 12), 0.5, anchor="center")
    # The y label reads bottom-to-top: draw it horizontally, then rotate the strip.
    (tw, th), _ = cv2.getTextSize(ylabel, _FONT, 0.5, 1)
    strip = np.full((th + 8, tw + 4, 3), 255, np.uint8)
    cv2.putText(strip, ylabel, (2, th + 2), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = max(0, _MARGIN_T + (h - _MARGIN_T - _MARGIN_B - strip.shape[0]) // 2)
    hh = min(strip.shape[0], h - y0)
    img[y0:y0 + hh, 4:4 + strip.shape[1]] = strip[:hh]
    return img


def _axes(img, x_ticks, y_ticks, x_range, y_range, x_labels=None):
    """Frame, grid and tick labels; returns data -> pixel mapping functions."""
    h, w = img.shape[:2]
    x0, x1, y0, y1 = _MARGIN_L, w - _MARGIN_R, h - _MARGIN_B, _MARGIN_T
    (xa, xb), (ya, yb) = x_range, y_range
    px = lambda x: x0 + (x - xa) / (xb - xa) * (x1 - x0)  # noqa: E731
    py = lambda y: y0 - (y - ya) / (yb - ya) * (y0 - y1)  # noqa: E731
    for t in y_ticks:
        yy = int(round(py(t)))
        cv2.line(img, (x0, yy), (x1, yy), (225, 225, 225), 1)
        cv2.line(img, (x0 - 4, yy), (x0, yy), (0, 0, 0), 1)
        _text(img, _fmt(t), (x0 - 7, yy), 0.4, anchor="right")
    for i, t in enumerate(x_ticks):
        xx = int(round(px(t)))
        cv2.line(img, (xx, y0), (xx, y0 + 4), (0, 0, 0), 1)
        _text(img, x_labels[i] if x_labels else _fmt(t), (xx, y0 + 14), 0.4, anchor="center")
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    return px, py


def _legend(img, names, kind="line"):
    h, w = img.shape[:2]
    widths = [cv2.getTextSize(n, _FONT, 0.42, 1)[0][0] for n in names]
    bw, bh = max(widths) + 40, 18 * len(names) + 8
    x, y = w - _MARGIN_R - bw - 8, _MARGIN_T + 8
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (255, 255, 255), -1)
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (160, 160, 160), 1)
    for i, n in enumerate(names):
        c = _PALETTE[i % len(_PALETTE)][::-1]
        yy = y + 13 + 18 * i
        if kind == "line":
            cv2.line(img, (x + 6, yy), (x + 28, yy), c, 2, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x + 10, yy - 5), (x + 24, yy + 5), c, -1)
        _text(img, n, (x + 34, yy), 0.42)


def _series_xy(name, s):
    """A list of y values (x = 0, 1, ...) or an (x, y) pair -> finite float arrays."""
    if isinstance(s, tuple) and len(s) == 2:
        x, y = np.asarray(s[0], np.float64).ravel(), np.asarray(s[1], np.float64).ravel()
    else:
        y = np.asarray(s, np.float64).ravel()
        x = np.arange(len(y), dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"series[{name!r}]: x has {len(x)} values, y has {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)  # a diverged step (NaN loss) is dropped, not fatal
    return x[keep], y[keep]


def plot_curves(path, series: dict, title: str = "", xlabel: str = "step", ylabel: str = "",
                size: tuple[int, int] = (720, 440), log_y: bool = False) -> np.ndarray:
    """Line chart of named series to ``path`` (PNG); returns the image (float32 [H, W, 3]).

    ``series``: ``{name: [y0, y1, ...]}`` (x = index) or ``{name: (xs, ys)}``; non-finite points are
    skipped. ``log_y`` plots log10 of positive values (ticks show the values themselves as 1e-k).
    """
    if not isinstance(series, dict) or not series:
        raise ValueError("series: expected a non-empty dict of name -> values or (x, y)")
    data = {n: _series_xy(n, s) for n, s in series.items()}
    if log_y:
        data = {n: (x[y > 0], np.log10(y[y > 0])) for n, (x, y) in data.items()}
    if not any(len(x) for x, _ in data.values()):
        raise ValueError("series: no finite points to plot")
    xs = np.concatenate([x for x, _ in data.values()])
    ys = np.concatenate([y for _, y in data.values()])
    xt, yt = nice_ticks(xs.min(), xs.max(), 6), nice_ticks(ys.min(), ys.max(), 5)
    img = _canvas(size, title, xlabel, ylabel + (" (log10)" if log_y else ""))
    px, py = _axes(img, xt, yt, (xt[0], xt[-1]), (yt[0], yt[-1]))
    for i, (x, y) in enumerate(data.values()):
        if not len(x):
            continue
        pts = np.stack([px(x), py(y)], -1).round().astype(np.int32)
        c = _PALETTE[i % len(_PALETTE)][::-1]
        if len(pts) == 1:
            cv2.circle(img, tuple(int(v) for v in pts[0]), 3, c, -1, cv2.LINE_AA)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, c, 2, cv2.LINE_AA)
    _legend(img, list(data))
    out = img[:, :, ::-1].astype(np.float32) / 255.0
    write_png(path, out)
    return out


def plot_bars(path, groups: dict, title: str = "", ylabel: str = "",
              size: tuple[int, int] = (720, 440)) -> np.ndarray:
    """Grouped bar chart to ``path`` (PNG); returns the image (float32 [H, W, 3]).

    ``groups``: ``{group: {series: value}}``, e.g. ``{"geometry (mm)": {"base": 2.1, "final": 1.6}}``;
    each group is a cluster of bars, one colour per series name (legend), values printed on the bars.
    """
    if not isinstance(groups, dict) or not groups or not all(isinstance(g, dict) for g in groups.values()):
        raise ValueError("groups: expected a non-empty dict of group -> {series: value}")
    names = list(dict.fromkeys(n for g in groups.values() for n in g))
    if not names:
        raise ValueError("groups: every group is empty")
    values = [float(v) for g in groups.values() for v in g.values()]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("groups: values must be finite numbers")
    yt = nice_ticks(min(0.0, min(values)), max(0.0, max(values)) * 1.1 or 1.0, 5)
    img = _canvas(size, title, "", ylabel)
    n_g = len(groups)
    centres = list(range(n_g))
    px, py = _axes(img, centres, yt, (-0.6, n_g - 0.4), (yt[0], yt[-1]), x_labels=list(groups))
    slot = 0.8 / len(names)
    for gi, g in enumerate(groups.values()):
        for si, n in enumerate(names):
            if n not in g:
                continue
            v = float(g[n])
            xa, xb = gi - 0.4 + si * slot, gi - 0.4 + (si + 1) * slot
            c = _PALETTE[si % len(_PALETTE)][::-1]
            cv2.rectangle(img, (int(px(xa)) + 1, int(py(v))), (int(px(xb)) - 1, int(py(0.0))), c, -1)
            _text(img, _fmt(round(v, 4)), (int(px((xa + xb) / 2)), int(py(v)) - (8 if v >= 0 else -8)), 0.38,
                  anchor="center")
    _legend(img, names, kind="bar")
    out = img[:, :, ::-1].astype(np.float32) / 255.0
    write_png(path, out)
    return out
