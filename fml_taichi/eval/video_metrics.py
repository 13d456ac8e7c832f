"""Accuracy of a tracked video against per-frame truth: rotation error, landmark NME, jitter, lag, roll slope.

``score_track(arrays, truth)`` takes a ``*.params.npz`` of :mod:`fml_taichi.recon.stream` (one row per
frame and face) and a :class:`~fml_taichi.data.synthetic_clip.ClipTruth`, keeps the face id seen in the
most frames, and reports, over the frames where that face was found:

* ``rotation_error_deg_median``: median geodesic angle between estimated and true head rotation
  (smoothed; ``..._raw`` unsmoothed);
* ``nme`` / ``nme_raw_landmarks``: median per-frame landmark NME (mean point distance over the true
  outer-eye-corner distance) of the fit's projected landmarks, and of the landmark source's points;
* ``jitter_deg`` / ``jitter_raw_deg``: RMS over consecutive frame pairs of the difference between the
  estimated and the true frame-to-frame rotation (each the rotation vector of ``R_t R_{t-1}^T``),
  with and without smoothing: the part of the motion that is noise;
* ``lag_frames`` / ``lag_raw_frames``: the shift ``L`` (sub-frame, parabola through the best integer
  shift) that minimises the RMS between estimate(t) and truth(t - L) over the three Euler angles; the
  lag smoothing adds is their difference (``lag_added_frames``);
* ``roll_slope``, ``pitch_slope``, ``yaw_slope``: least-squares slope of the estimated on the true
  Euler angle (1 = followed in full; below 1, the estimate covers only that part of the true range);
* ``rotation_error_deg_median_within_30`` / ``..._beyond_30``: the median rotation error over the
  frames whose true yaw is within / beyond :data:`YAW_SPLIT_DEG` (30) degrees (NaN where none are).
"""
from __future__ import annotations

import numpy as np

__all__ = ["YAW_SPLIT_DEG", "geodesic_deg", "frame_rotations", "jitter_deg", "lag_frames", "landmark_nme",
           "angle_slopes", "score_track"]

#: Yaw (degrees) splitting near-frontal from turned frames in :func:`score_track`: beyond ~30 degrees
#: dlib's detector stops finding faces and its shape predictor's points degrade.
YAW_SPLIT_DEG = 30.0


def _matrices(euler: np.ndarray) -> np.ndarray:
    from ..recon.landmark_fit import euler_to_matrix_np

    return euler_to_matrix_np(np.asarray(euler, np.float64).reshape(-1, 3))


def geodesic_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of ``R(a) R(b)^T`` for Euler angle arrays [T, 3] (radians)."""
    ra, rb = _matrices(a), _matrices(b)
    c = np.einsum("bij,bij->b", ra, rb)
    return np.degrees(np.arccos(np.clip((c - 1) / 2, -1.0, 1.0)))


def _log(r: np.ndarray) -> np.ndarray:
    """Rotation vectors [T, 3] of rotation matrices [T, 3, 3] (angles below 180 degrees)."""
    c = np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(c)
    v = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], 1)
    s = np.sin(theta)
    scale = np.where(s > 1e-9, theta / np.maximum(2 * s, 1e-12), 0.5)
    return v * scale[:, None]


def frame_rotations(euler: np.ndarray) -> np.ndarray:
    """Frame-to-frame rotation vectors [T - 1, 3] (radians) of ``R_t R_{t-1}^T``."""
    r = _matrices(euler)
    return _log(r[1:] @ r[:-1].transpose(0, 2, 1))


def jitter_deg(estimate: np.ndarray, truth: np.ndarray, consecutive: np.ndarray | None = None) -> float:
    """RMS (degrees) of the estimated minus the true frame-to-frame rotation (module docstring).

    ``consecutive`` [T - 1] bool: which pairs (t - 1, t) count (default all)."""
    d = frame_rotations(estimate) - frame_rotations(truth)
    if consecutive is not None:
        d = d[np.asarray(consecutive, bool)]
    return float(np.degrees(np.sqrt((d ** 2).sum(1).mean()))) if len(d) else float("nan")


def lag_frames(estimate: np.ndarray, truth: np.ndarray, max_lag: int = 8) -> float:
    """The delay of ``estimate`` [T, C] behind ``truth`` [T, C] in frames (module docstring);
    positive = the estimate lags."""
    e = np.asarray(estimate, np.float64).reshape(len(estimate), -1)
    t = np.asarray(truth, np.float64).reshape(len(truth), -1)
    lags = np.arange(-max_lag, max_lag + 1)
    n = len(e)
    cost = []
    for lag in lags:  # estimate(t) against truth(t - lag)
        lo, hi = max(0, lag), min(n, n + lag)
        cost.append(np.mean((e[lo:hi] - t[lo - lag:hi - lag]) ** 2))
    cost = np.array(cost)
    i = int(np.argmin(cost))
    if 0 < i < len(cost) - 1:
        a, b, c = cost[i - 1], cost[i], cost[i + 1]
        denom = a - 2 * b + c
        return float(lags[i] + (0.5 * (a - c) / denom if denom > 0 else 0.0))
    return float(lags[i])


def landmark_nme(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame NME [T]: mean distance of 68 points over the true outer-eye-corner distance."""
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    return np.linalg.norm(points - truth, axis=-1).mean(1) / np.maximum(iod, 1e-9)


def angle_slopes(estimate: np.ndarray, truth: np.ndarray) -> dict:
    """Slopes of estimated on true Euler angles [T, 3] (rx pitch, ry yaw, rz roll): ``{"pitch_slope",
    "yaw_slope", "roll_slope"}`` (NaN for an angle whose truth does not vary)."""
    e, t = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    out = {}
    for i, name in ((0, "pitch"), (1, "yaw"), (2, "roll")):
        spread = t[:, i] - t[:, i].mean()
        denom = float((spread ** 2).sum())
        out[f"{name}_slope"] = float((spread * (e[:, i] - e[:, i].mean())).sum() / denom) if denom > 0 else float("nan")
    return out


def _median_or_nan(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def score_track(arrays, truth) -> dict:
    """Scores of the most-seen face of ``arrays`` against ``truth`` (module docstring)."""
    ids, counts = np.unique(arrays["face_id"], return_counts=True)
    if len(ids) == 0:
        return {"found": 0}
    rows = np.nonzero(arrays["face_id"] == ids[np.argmax(counts)])[0]
    frames = np.asarray(arrays["frame"])[rows]
    true_rot = truth.rotation[frames]
    est, raw = np.asarray(arrays["rotation"])[rows], np.asarray(arrays["rotation_raw"])[rows]
    consecutive = np.diff(frames) == int(arrays["every"])
    # Lag needs an unbroken run of frames: the longest one.
    breaks = np.r_[0, np.nonzero(~consecutive)[0] + 1, len(frames)]
    k = int(np.argmax(np.diff(breaks)))
    run = slice(breaks[k], breaks[k + 1])
    lag = lag_frames(est[run], true_rot[run])
    lag_raw = lag_frames(raw[run], true_rot[run])
    err = geodesic_deg(est, true_rot)
    turned = np.abs(np.degrees(true_rot[:, 1])) >= YAW_SPLIT_DEG
    slopes = angle_slopes(est, true_rot)
    return {
        "found": int(len(np.unique(arrays["frame"]))),
        "face_ids": int(len(ids)),
        "rotation_error_deg_median": float(np.median(err)),
        "rotation_error_deg_median_raw": float(np.median(geodesic_deg(raw, true_rot))),
        "rotation_error_deg_p90": float(np.percentile(err, 90)),
        "rotation_error_deg_median_within_30": _median_or_nan(err[~turned]),
        "rotation_error_deg_median_beyond_30": _median_or_nan(err[turned]),
        "nme": float(np.median(landmark_nme(np.asarray(arrays["fit_landmarks"])[rows], truth.landmarks[frames]))),
        "nme_raw_landmarks": float(np.median(landmark_nme(np.asarray(arrays["landmarks"])[rows],
                                                          truth.landmarks[frames]))),
        "jitter_deg": jitter_deg(est, true_rot, consecutive),
        "jitter_raw_deg": jitter_deg(raw, true_rot, consecutive),
        "lag_frames": lag, "lag_raw_frames": lag_raw, "lag_added_frames": lag - lag_raw,
        **slopes,
        "roll_slope_raw": angle_slopes(raw, true_rot)["roll_slope"],
    }
