"""Helpers of benchmarks/bench_video_variants.py: the mirrored-point renumbering and the landmark-source
wrappers (a wrong renumbering would make the mirrored-patch measurement meaningless)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_video_variants import MIRROR_68, box_jitter_average, huber_smooth_track, mirrored_average  # noqa: E402

from fml_taichi.data.crop import mean_landmarks_3d  # noqa: E402
from fml_taichi.model import default_face_model  # noqa: E402


def test_mirror_numbering_pairs_symmetric_points_of_the_mean_face():
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    assert (MIRROR_68[MIRROR_68] == np.arange(68)).all()  # mirroring twice is the identity
    lm = np.asarray(mean_landmarks_3d(default_face_model(2000)), np.float64)  # [68, 3], frontal mean face
    mid = lm[27:31, 0].mean()  # the nose bridge lies on the midline
    iod = np.linalg.norm(lm[36] - lm[45])
    mirrored = lm[MIRROR_68].copy()
    mirrored[:, 0] = 2 * mid - mirrored[:, 0]
    assert np.abs(mirrored[:, :2] - lm[:, :2]).max() < 0.05 * iod


def _scene(w=200):
    rng = np.random.default_rng(1)
    pts = rng.uniform(20, 180, (68, 2))
    image = np.zeros((100, w), np.uint8)
    image[0, 0] = 255  # tells the fake predictor whether it sees the mirrored image

    def predictor(img, boxes, err=np.array([1.5, -0.5])):
        if img[0, 0] == 255:
            return [pts + err for _ in boxes]
        out = pts[MIRROR_68].copy()  # what a mirror-equivariant predictor finds on the flipped image
        out[:, 0] = w - 1 - out[:, 0]
        return [out + np.array([0.5, 0.5]) for _ in boxes]
    return image, pts, predictor


def test_mirrored_average_maps_the_flipped_points_back():
    image, pts, predictor = _scene()
    got = mirrored_average(predictor)(image, [np.array([10.0, 10, 90, 90])])[0]
    # direct error (1.5, -0.5); the flipped error (0.5, 0.5) comes back as (-0.5, 0.5): mean (0.5, 0)
    np.testing.assert_allclose(got, pts + np.array([0.5, 0.0]), atol=1e-9)


def test_box_jitter_average_runs_nine_boxes_and_averages():
    seen = []

    def predictor(img, boxes):
        seen.extend(boxes)
        return [np.full((68, 2), b[0]) for b in boxes]
    got = box_jitter_average(predictor, shift=0.1)(np.zeros((10, 10), np.uint8), [np.array([0.0, 0, 100, 100])])[0]
    assert len(seen) == 9 and sorted({round(b[0], 6) for b in seen}) == [-10.0, 0.0, 10.0]
    np.testing.assert_allclose(got, 0.0, atol=1e-9)  # shifts cancel in the mean


def test_huber_smoothing_ignores_a_single_bad_frame_the_plain_fit_follows():
    t = np.arange(60, dtype=np.float64)
    track = np.stack([np.radians(20) * np.sin(2 * np.pi * t / 50)] * 3, 1)
    noisy = track.copy()
    noisy[30] += np.radians(15)
    robust = huber_smooth_track(noisy, 8)
    from fml_taichi.recon.window_smoothing import smooth_track

    plain = smooth_track(noisy, 8, 8)
    assert np.degrees(np.abs(robust[30] - track[30]).max()) < 0.5 * np.degrees(np.abs(plain[30] - track[30]).max())
    # on clean motion it stays within 0.05 degrees of the plain local quadratic
    assert np.degrees(np.abs(huber_smooth_track(track, 8) - smooth_track(track, 8, 8)).max()) < 0.05
