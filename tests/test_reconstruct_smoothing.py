"""Temporal smoothing (One-Euro) and the fixed video camera the video poses are smoothed in."""
import numpy as np
import pytest
import torch

from fml_taichi.recon.video import from_video_camera, matrix_to_euler, to_video_camera
from fml_taichi.recon.smoothing import OneEuroFilter, noise_scale, one_euro
from fml_taichi.data.crop import CropBox
from fml_taichi.reference.image_formation import euler_to_matrix

FPS = 30.0


def _track(seed, t=300, step_at=150, step=10.0, sd=1.0, channels=3):
    rng = np.random.default_rng(seed)
    truth = np.zeros((t, channels))
    truth[step_at:] = step * np.arange(1, channels + 1)  # channels in different units / sizes
    return truth, truth + rng.normal(0, sd, (t, channels)) * np.arange(1, channels + 1)


def test_one_euro_removes_jitter_but_follows_a_step():
    truth, noisy = _track(0)
    smooth = one_euro(noisy, FPS)
    still = np.r_[20:150, 190:300]
    raw_err = np.sqrt(((noisy - truth)[still] ** 2).mean(0))
    err = np.sqrt(((smooth - truth)[still] ** 2).mean(0))
    assert (err < 0.5 * raw_err).all()  # jitter at least halved in every channel
    # frame-to-frame jitter (second differences) drops even more
    assert (np.abs(np.diff(smooth[still], 2, 0)).mean(0) < 0.3 * np.abs(np.diff(noisy[still], 2, 0)).mean(0)).all()
    # the step of 10 noise SDs is followed: within 6 frames the output is past 80% of it, every channel
    reached = smooth[156] > 0.8 * truth[156]
    assert reached.all()
    # and a plain exponential filter of the same still-scene smoothing would lag far more
    alpha = 1.0 / (1.0 + FPS / (2 * np.pi * 1.0))
    ema = np.zeros_like(noisy)
    ema[0] = noisy[0]
    for t in range(1, len(noisy)):
        ema[t] = ema[t - 1] + alpha * (noisy[t] - ema[t - 1])
    assert (ema[156] < 0.8 * truth[156]).all()


def test_one_euro_knob_and_gaps():
    truth, noisy = _track(1)
    np.testing.assert_array_equal(one_euro(noisy, FPS, min_cutoff=0.0), noisy)  # 0 Hz: off
    steady = one_euro(noisy, FPS, min_cutoff=0.3)
    loose = one_euro(noisy, FPS, min_cutoff=5.0)
    still = slice(20, 150)
    assert np.abs(steady - truth)[still].mean() < np.abs(loose - truth)[still].mean()  # lower = steadier
    valid = np.ones(len(noisy), bool)
    valid[100:110] = False
    out = one_euro(noisy, FPS, valid=valid)
    np.testing.assert_array_equal(out[100:110], noisy[100:110])  # gaps keep their values
    np.testing.assert_array_equal(out[110], noisy[110])  # and the filter restarts after a gap


def test_filter_argument_errors():
    with pytest.raises(ValueError, match="fps"):
        OneEuroFilter(0.0)
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(30.0, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        OneEuroFilter(30.0)(np.array([np.nan]))
    with pytest.raises(ValueError, match="valid"):
        one_euro(np.zeros((5, 2)), 30.0, valid=np.ones(4, bool))


def test_noise_scale_ignores_steps():
    truth, noisy = _track(2, sd=0.5, channels=1)
    assert noise_scale(noisy)[0] == pytest.approx(0.5, rel=0.2)


def test_matrix_to_euler_inverts_the_convention():
    rot = torch.tensor([[0.3, -0.5, 0.2], [-0.1, 0.7, -1.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    back = matrix_to_euler(euler_to_matrix(rot).numpy())
    np.testing.assert_allclose(back, rot.numpy(), atol=1e-12)


def _poses():
    k_crop = np.array([600.0, 600.0, 119.5, 119.5])
    boxes = [CropBox(250.0, 200.0, 260.0), CropBox(1000.0, 500.0, 300.0), CropBox(660.0, 350.0, 240.0)]
    rotation = np.array([[0.1, 0.3, -0.05], [-0.2, -0.4, 0.1], [0.02, -0.05, 0.01]])
    translation = np.array([[5.0, -8.0, 520.0], [-10.0, 4.0, 480.0], [1.0, 2.0, 500.0]])
    k_img = np.array([b.image_intrinsics(k_crop) for b in boxes])
    cam = np.array([np.median(k_img[:, 0])] * 2 + [639.5, 359.5])  # a 1280 x 720 video
    return rotation, translation, k_img, cam


def _project(points, r, t, k):
    v = points @ euler_to_matrix(torch.as_tensor(r)[None])[0].numpy().T + t
    return k[:2] * v[:, :2] / v[:, 2:] + k[2:]


def test_video_camera_keeps_the_head_place_size_and_view():
    """Re-expressed in the video's fixed camera, each frame's head centre stays on its pixel at the
    same apparent size, and a face near the frame centre projects (nearly) where the frame showed it."""
    rotation, translation, k_img, cam = _poses()
    rot2, trans2 = to_video_camera(rotation, translation, k_img, cam)
    origin = np.zeros((1, 3))
    pts = np.random.default_rng(0).uniform([-75, -100, -60], [75, 100, 60], (200, 3))
    for i in range(3):
        np.testing.assert_allclose(_project(origin, rot2[i], trans2[i], cam),
                                   _project(origin, rotation[i], translation[i], k_img[i]), atol=1e-6)
        size_before = k_img[i, 0] / np.linalg.norm(translation[i])
        assert cam[0] / np.linalg.norm(trans2[i]) == pytest.approx(size_before, rel=1e-9)
    before = _project(pts, rotation[2], translation[2], k_img[2])
    after = _project(pts, rot2[2], trans2[2], cam)
    assert np.abs(after - before).max() < 0.01 * np.ptp(before, axis=0).max()


def test_from_video_camera_inverts_it_exactly():
    rotation, translation, k_img, cam = _poses()
    rot2, trans2 = to_video_camera(rotation, translation, k_img, cam)
    rot3, trans3 = from_video_camera(rot2, trans2, k_img, cam)
    np.testing.assert_allclose(rot3, rotation, atol=1e-10)
    np.testing.assert_allclose(trans3, translation, atol=1e-8)
