"""Crop rule and detection: coordinate maps, resampling, framing like training, confidences, detectors."""
import numpy as np
import pytest

from fml_taichi.data.crop import (FACE_FRACTION, CropBox, crop_box_from_landmarks, crop_image,
                                  fit_affine_camera)
from fml_taichi.data.detect import (DetectorUnavailable, PtsFileDetector, detector_confidence, find_dlib_predictor,
                                    fit_confidence, landmark_fit_error)
from fml_taichi.io.pts import write_pts
from reconstruct_fixtures import dlib_ready, mean_landmarks, paste, synthetic_faces

SEEDS = tuple(range(12))


# ---- crop box maths ------------------------------------------------------------------------------


def test_crop_box_maps_are_inverse_and_match_the_affine():
    box = CropBox(cx=310.3, cy=205.7, side=187.0)
    pts = np.random.default_rng(0).uniform(-50, 500, (20, 2))
    crop = box.to_crop(pts, 240)
    np.testing.assert_allclose(box.to_image(crop, 240), pts, atol=1e-9)
    a = box.affine(240)
    np.testing.assert_allclose(pts @ a[:, :2].T + a[:, 2], crop, atol=1e-9)
    # the crop's corner pixel edges are the box's edges
    np.testing.assert_allclose(box.to_image([[-0.5, -0.5], [239.5, 239.5]], 240), [box.as_list()[:2], box.as_list()[2:]])


def test_image_intrinsics_project_like_crop_then_map():
    box = CropBox(cx=412.0, cy=133.5, side=320.0)
    k_crop = np.array([600.0, 600.0, 119.5, 119.5])
    pts = np.random.default_rng(1).uniform([-60, -60, 450], [60, 60, 560], (30, 3))
    uv_crop = k_crop[:2] * pts[:, :2] / pts[:, 2:] + k_crop[2:]
    k_img = box.image_intrinsics(k_crop, 240)
    uv_img = k_img[:2] * pts[:, :2] / pts[:, 2:] + k_img[2:]
    np.testing.assert_allclose(uv_img, box.to_image(uv_crop, 240), atol=1e-9)


@pytest.mark.parametrize("side", [150.0, 1100.0])  # bilinear only, and the area pre-shrink path
def test_crop_image_samples_the_box(side):
    # A linear ramp: value = image x / 2000 (red) and y / 2000 (green), so any linear resampling of it
    # returns the sampled position exactly (away from the border).
    h, w = 1500, 1800
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / 2000, y / 2000, np.full_like(x, 0.5)], -1)
    box = CropBox(cx=900.3, cy=700.8, side=side)
    crop = crop_image(img, box, 240)
    assert crop.shape == (240, 240, 3) and crop.dtype == np.float32
    v, u = np.mgrid[0:240, 0:240]
    want = box.to_image(np.stack([u, v], -1).astype(np.float64), 240) / 2000
    np.testing.assert_allclose(crop[..., :2], want, atol=2e-4)


def test_crop_outside_the_image_repeats_the_border():
    img = np.zeros((50, 60, 3), np.float32)
    img[:, -1] = 1.0  # white right column
    crop = crop_image(img, CropBox(cx=70.0, cy=25.0, side=40.0), 40)
    assert np.allclose(crop[:, -5:], 1.0)


def test_crop_rejects_bad_input():
    with pytest.raises(ValueError, match="image"):
        crop_image(np.zeros((10, 10)), CropBox(5, 5, 10))
    with pytest.raises(ValueError, match="crop box"):
        CropBox(1.0, 2.0, -3.0)


# ---- the crop rule frames real faces like the synthetic training faces ----------------------------


def test_face_fraction_is_the_middle_of_the_training_range():
    from fml_taichi.data.synthetic import SyntheticConfig

    lo, hi = SyntheticConfig().face_fraction
    assert FACE_FRACTION == pytest.approx((lo + hi) / 2)


def test_crop_rule_recovers_the_synthetic_framing():
    """On rendered faces the rule's square is the image the renderer framed (scaled to the mean
    fraction): centre near the image centre (jitter <= 8 px), side = 240 * fraction / FACE_FRACTION."""
    from fml_taichi.data.synthetic import SyntheticRenderer
    from fml_taichi.reference.image_formation import euler_to_matrix

    r = SyntheticRenderer(n_vertices=2000)  # the full pose range of training
    x3 = mean_landmarks()
    batch = r.render(list(range(100, 112)))
    for i in range(12):
        p = batch["gt_params"].index(i)
        centre = euler_to_matrix(p.rotation)[0] @ r.tables.centre + p.translation[0]
        fraction = 600.0 * r.tables.width_mm / (float(centre[2]) * 240)
        box = crop_box_from_landmarks(batch["gt_landmarks"][i].numpy(), x3)
        assert box.side == pytest.approx(240 * fraction / FACE_FRACTION, rel=0.12)
        proj = 600.0 * centre[:2].numpy() / float(centre[2]) + 119.5
        assert np.hypot(box.cx - proj[0], box.cy - proj[1]) < 8.0


def test_crop_rule_is_equivariant_to_moving_and_scaling_the_photo():
    x3 = mean_landmarks()
    lm = synthetic_faces(SEEDS)["landmarks"][0].astype(np.float64)
    a = crop_box_from_landmarks(lm, x3)
    b = crop_box_from_landmarks(lm * 3.0 + [100.0, 40.0], x3)
    assert b.side == pytest.approx(3.0 * a.side, rel=1e-6)
    assert (b.cx, b.cy) == pytest.approx((3.0 * a.cx + 100.0, 3.0 * a.cy + 40.0), rel=1e-6)


def test_degenerate_landmarks_are_rejected():
    with pytest.raises(ValueError, match="landmarks_2d"):
        crop_box_from_landmarks(np.zeros((68, 2)), mean_landmarks())
    with pytest.raises(ValueError, match="landmarks_2d"):
        crop_box_from_landmarks(np.zeros((5, 2)), mean_landmarks())
    with pytest.raises(ValueError, match="NaN"):
        fit_affine_camera(np.full((68, 2), np.nan), mean_landmarks())


# ---- confidence ------------------------------------------------------------------------------------


def test_confidence_parts_follow_their_documented_values():
    assert detector_confidence(-1.0) == 0.0
    assert detector_confidence(0.5) == pytest.approx(1 - np.exp(-1), abs=1e-9)
    assert detector_confidence(0.2) < detector_confidence(1.0) < detector_confidence(3.0) < 1.0
    assert fit_confidence(0.0) == 1.0
    assert fit_confidence(0.12) == pytest.approx(np.exp(-1))
    assert fit_confidence(0.05) > fit_confidence(0.1) > fit_confidence(0.2)


def test_fit_error_separates_faces_from_scattered_points():
    x3 = mean_landmarks()
    faces = synthetic_faces(SEEDS)["landmarks"]
    errs = [landmark_fit_error(lm, x3) for lm in faces]
    assert max(errs) < 0.06
    rng = np.random.default_rng(0)
    scattered = [landmark_fit_error(rng.uniform(0, 200, (68, 2)), x3) for _ in range(5)]
    assert min(scattered) > 0.3
    assert landmark_fit_error(np.zeros((68, 2)), x3) == float("inf")


# ---- detectors --------------------------------------------------------------------------------------


def test_pts_detector_reads_landmarks_next_to_the_image(tmp_path):
    lm = synthetic_faces(SEEDS)["landmarks"][0]
    write_pts(tmp_path / "face.pts", lm)
    det = PtsFileDetector(landmarks_3d=mean_landmarks())
    (d,) = det(None, str(tmp_path / "face.png"))
    np.testing.assert_allclose(d.landmarks, lm, atol=1e-3)
    assert d.source == "pts" and 0.8 < d.confidence <= 1.0
    np.testing.assert_allclose(d.box, np.concatenate([lm.min(0), lm.max(0)]), atol=1e-3)
    assert det(None, str(tmp_path / "other.png")) == []


def test_missing_detector_parts_name_the_install_command(monkeypatch, tmp_path):
    with pytest.raises(DetectorUnavailable, match="not found"):
        find_dlib_predictor(str(tmp_path / "nope.dat"))
    monkeypatch.setenv("FML_TAICHI_DLIB_PREDICTOR", str(tmp_path / "missing.dat"))
    with pytest.raises(DetectorUnavailable, match="FML_TAICHI_DLIB_PREDICTOR"):
        find_dlib_predictor()
    monkeypatch.delenv("FML_TAICHI_DLIB_PREDICTOR")
    import fml_taichi.data.detect as detect

    monkeypatch.setattr(detect, "_DEBIAN_PREDICTOR", str(tmp_path / "absent.dat"))
    monkeypatch.setattr(detect.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DetectorUnavailable, match="apt-get install libdlib-data"):
        find_dlib_predictor()
    import builtins

    real_import = builtins.__import__

    def no_dlib(name, *a, **k):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(DetectorUnavailable, match="pip install dlib-bin"):
        detect.DlibDetector(landmarks_3d=mean_landmarks())


@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1] or "dlib ready")
def test_dlib_finds_synthetic_faces_with_accurate_landmarks():
    from fml_taichi.data.detect import DlibDetector

    det = DlibDetector(landmarks_3d=mean_landmarks())
    faces = synthetic_faces(SEEDS)
    found = 0
    for img, lm in zip(faces["image"], faces["landmarks"]):
        ds = det(paste(img[None], [(80, 30)]))
        if not ds:
            continue
        found += 1
        d = ds[0]
        assert 0.0 <= d.confidence <= 1.0 and d.source == "dlib"
        iod = np.linalg.norm(lm[36] - lm[45])
        nme = np.linalg.norm(d.landmarks - (lm + [80, 30]), axis=1).mean() / iod
        assert nme < 0.2
        x0, y0, x1, y1 = d.box
        cx, cy = (lm + [80, 30]).mean(0)
        assert x0 < cx < x1 and y0 < cy < y1
    assert found >= 2  # the HOG detector finds some rendered faces, not all
    assert det(np.full((200, 300, 3), 0.4, np.float32)) == []
