"""Temporal smoothing of per-frame parameters (video reconstruction): a One-Euro filter with one knob.

Per-frame regression jitters: each frame is reconstructed on its own, from a detector box that moves
by a pixel or two. The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order
low-pass whose cutoff rises with the signal's speed: still heads are smoothed hard, fast turns follow
with little lag. Per sample, with ``a(fc) = 1 / (1 + fps / (2 pi fc))``::

    dx  = (x_t - y_{t-1}) * fps,  d_t = d_{t-1} + a(D_CUTOFF) (dx - d_{t-1})      (speed, smoothed)
    fc  = min_cutoff + BETA |d_t|,  y_t = y_{t-1} + a(fc) (x_t - y_{t-1})

**The knob**: ``min_cutoff`` in Hz (the ``--smooth`` option), the cutoff for a still signal. Lower is
steadier and lags more on slow motion; 0 turns smoothing off. 1 Hz (the default) removes most
frame-to-frame jitter at 25-30 fps while a fast head turn still follows within a few frames.

**Why no second knob**: the speed term needs a scale, and parameters come in radians, millimetres and
basis units. Each channel is therefore measured in units of its own frame-to-frame noise
(:func:`noise_scale`: a robust SD from first differences, which jumps and steps barely affect), so
one fixed ``BETA`` suits every channel and every video: a move of a few noise SDs per frame opens the
filter, jitter of one SD does not.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["BETA", "D_CUTOFF", "DEFAULT_MIN_CUTOFF", "noise_scale", "one_euro", "OneEuroFilter"]

DEFAULT_MIN_CUTOFF = 1.0
#: Cutoff increase (Hz) per (noise SD per second) of speed.
BETA = 0.02
#: Cutoff (Hz) of the speed estimate.
D_CUTOFF = 1.0


def _alpha(cutoff, fps: float):
    return 1.0 / (1.0 + fps / (2.0 * math.pi * cutoff))


def noise_scale(x: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """Per-channel noise SD of a track ``x`` [T, D]: ``1.4826 MAD(diff x) / sqrt(2)`` (at least ``floor``).

    The median of the absolute first differences ignores the few large ones a step or a real move
    makes; for white noise of SD s the differences have SD s sqrt(2).
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return np.full(x.shape[1:], 1.0)
    d = np.abs(np.diff(x, axis=0))
    return np.maximum(1.4826 * np.median(d, axis=0) / math.sqrt(2.0), floor)


class OneEuroFilter:
    """Streaming One-Euro filter over vectors (module docstring).

    Args:
        fps: sample rate (frames per second), > 0.
        min_cutoff: the knob, Hz (>= 0; 0 passes samples through unchanged).
        scale: per-channel noise SD (same shape as a sample) that expresses speeds in noise units;
            None: 1 (use :func:`one_euro` to estimate it from a whole track).
    """

    def __init__(self, fps: float, min_cutoff: float = DEFAULT_MIN_CUTOFF, scale=None):
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        if not (isinstance(min_cutoff, (int, float)) and math.isfinite(min_cutoff) and min_cutoff >= 0):
            raise ValueError(f"min_cutoff: expected a number >= 0 (Hz), got {min_cutoff!r}")
        self.fps, self.min_cutoff = float(fps), float(min_cutoff)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        if self.scale is not None and (not np.isfinite(self.scale).all() or (self.scale <= 0).any()):
            raise ValueError("scale: expected finite positive noise SDs")
        self._y = None
        self._d = None

    def reset(self) -> None:
        """Forget the state (e.g. after a cut or a lost track)."""
        self._y = self._d = None

    def __call__(self, x) -> np.ndarray:
        """Filter one sample (a vector); returns the smoothed sample."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("x: sample contains NaN or inf values")
        if self.min_cutoff == 0.0:
            return x.copy()
        s = 1.0 if self.scale is None else self.scale
        xn = x / s
        if self._y is None:
            self._y, self._d = xn, np.zeros_like(xn)
            return x.copy()
        speed = (xn - self._y) * self.fps
        self._d = self._d + _alpha(D_CUTOFF, self.fps) * (speed - self._d)
        a = _alpha(self.min_cutoff + BETA * np.abs(self._d), self.fps)
        self._y = self._y + a * (xn - self._y)
        return self._y * s


def one_euro(track, fps: float, min_cutoff: float = DEFAULT_MIN_CUTOFF, valid=None) -> np.ndarray:
    """Smooth a whole track ``[T, D]`` (or ``[T]``) with per-channel noise scales from the track itself.

    ``valid``: optional [T] bool; invalid samples (e.g. frames without a face) are skipped: they keep
    their values and restart the filter at the next valid one. Returns the same shape, float64.
    """
    x = np.asarray(track, dtype=np.float64)
    flat = x.reshape(len(x), -1) if x.ndim > 1 else x[:, None]
    ok = np.ones(len(x), bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != (len(x),):
        raise ValueError(f"valid: expected shape ({len(x)},), got {ok.shape}")
    out = flat.copy()
    f = OneEuroFilter(fps, min_cutoff, noise_scale(flat[ok]) if ok.sum() >= 3 else None)
    for t in range(len(flat)):
        if not ok[t]:
            f.reset()
            continue
        out[t] = f(flat[t])
    return out.reshape(x.shape)
