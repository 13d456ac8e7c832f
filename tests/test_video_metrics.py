"""The pose-following scores of score_track: slopes of estimated on true angles, error split by yaw."""
from types import SimpleNamespace

import numpy as np
import pytest

from fml_taichi.eval.video_metrics import YAW_SPLIT_DEG, angle_slopes, geodesic_deg, score_track


def _clip_truth(n=120):
    t = np.arange(n)
    rot = np.radians(np.stack([10 * np.sin(2 * np.pi * t / 60), 45 * np.sin(2 * np.pi * t / 90),
                               30 * np.sin(2 * np.pi * t / 75)], 1))
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(200, 400, (n, 68, 2))
    landmarks[:, 36], landmarks[:, 45] = (250, 300), (350, 300)  # IOD 100 px
    return SimpleNamespace(rotation=rot, landmarks=landmarks)


def _arrays(estimate, truth):
    n = len(estimate)
    return {"face_id": np.zeros(n, int), "frame": np.arange(n), "every": 1, "rotation": estimate,
            "rotation_raw": estimate, "fit_landmarks": truth.landmarks, "landmarks": truth.landmarks}


def test_angle_slopes_read_a_compressed_pitch_and_ignore_offsets():
    truth = _clip_truth()
    est = truth.rotation * np.array([0.6, 0.9, 1.0]) + np.radians([2.0, -1.5, 0.5])
    s = angle_slopes(est, truth.rotation)
    assert s["pitch_slope"] == pytest.approx(0.6, abs=1e-9)
    assert s["yaw_slope"] == pytest.approx(0.9, abs=1e-9)
    assert s["roll_slope"] == pytest.approx(1.0, abs=1e-9)
    assert np.isnan(angle_slopes(est, np.zeros_like(est))["yaw_slope"])  # no true motion: no slope


def test_score_track_reports_slopes_and_splits_the_error_at_30_degrees_of_yaw():
    truth = _clip_truth()
    est = truth.rotation.copy()
    turned = np.abs(np.degrees(truth.rotation[:, 1])) >= YAW_SPLIT_DEG
    est[turned, 0] += np.radians(6.0)  # a 6 degree pitch error only where the head is turned
    est[~turned, 0] += np.radians(1.0)
    s = score_track(_arrays(est, truth), truth)
    assert s["rotation_error_deg_median_beyond_30"] == pytest.approx(6.0, abs=1e-6)
    assert s["rotation_error_deg_median_within_30"] == pytest.approx(1.0, abs=1e-6)
    assert s["rotation_error_deg_median"] == pytest.approx(float(np.median(geodesic_deg(est, truth.rotation))))
    assert s["yaw_slope"] == pytest.approx(1.0, abs=1e-9) and s["roll_slope"] == pytest.approx(1.0, abs=1e-9)
    assert s["nme"] == pytest.approx(0.0) and s["found"] == len(est)


def test_score_track_without_turned_frames_gives_nan_beyond_30():
    truth = _clip_truth()
    truth.rotation[:, 1] *= 0.5  # yaw within +-22.5 degrees
    s = score_track(_arrays(truth.rotation.copy(), truth), truth)
    assert np.isnan(s["rotation_error_deg_median_beyond_30"])
    assert s["rotation_error_deg_median_within_30"] == pytest.approx(0.0, abs=1e-5)
