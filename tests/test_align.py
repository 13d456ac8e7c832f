"""Aligned crops (recon.align): roll and scale removed, the camera kept exact."""
import numpy as np
import pytest

from recon_fixtures import face_model, posed_faces
from fml_taichi.recon.align import (align_face, align_training_sample, aligned_crop, alignment_points,
                                    canonical_template)
from fml_taichi.recon.landmark_fit import euler_to_matrix_np


@pytest.fixture(scope="module")
def template():
    fm = face_model()
    return canonical_template(fm.mean_geometry[fm.landmarks.long()].double().numpy())


def _project(points, k):
    return np.stack([k[0] * points[:, 0] / points[:, 2] + k[2], k[1] * points[:, 1] / points[:, 2] + k[3]], 1)


def test_alignment_removes_roll_and_scale(template):
    faces = posed_faces([(0.0, 5.0, 35.0), (0.0, -5.0, -40.0)], seed=10_000_700)
    for lm, k in zip(faces["gt_landmarks"].double().numpy(), faces["intrinsics"].double().numpy()):
        al = align_face(lm, k, template)
        pts = alignment_points(al.to_crop(lm))
        eye = pts[1] - pts[0]
        assert abs(np.degrees(np.arctan2(eye[1], eye[0]))) < 2.0  # the eye line is level
        t_eye = template[1] - template[0]
        assert abs(np.linalg.norm(eye) / np.linalg.norm(t_eye) - 1) < 0.05
    assert abs(np.degrees(align_face(faces["gt_landmarks"][0].double().numpy(), faces["intrinsics"][0].double().numpy(),
                                     template).angle) + 35) < 3.0  # the similarity undoes the roll


def test_crop_camera_is_exact(template):
    rng = np.random.default_rng(0)
    k = np.array([900.0, 900.0, 330.0, 250.0])
    x3 = rng.normal(size=(200, 3)) * 60
    rot = euler_to_matrix_np(np.array([[0.2, -0.6, 0.5]]))[0]
    t = np.array([30.0, -20.0, 700.0])
    uv = _project(x3 @ rot.T + t, k)
    lm = uv[:68]
    sample = align_training_sample(np.zeros((480, 640, 3), np.float32), lm, k, rot, t, template)
    al = sample["aligned"]
    uv_crop = _project(x3 @ sample["rotation_matrix"].T + sample["translation"], al.intrinsics)
    np.testing.assert_allclose(uv_crop, al.to_crop(uv), atol=1e-9)  # reprojection identical
    back_r, back_t = al.pose_to_image(sample["rotation_matrix"], sample["translation"])
    np.testing.assert_allclose(back_r, rot, atol=1e-12)
    np.testing.assert_allclose(back_t, t, atol=1e-9)
    np.testing.assert_allclose(al.to_image(al.to_crop(uv)), uv, atol=1e-9)


def test_square_pixels_required(template):
    with pytest.raises(ValueError, match="square pixels"):
        align_face(np.random.default_rng(1).normal(size=(68, 2)) * 50 + 200, [900, 800, 320, 240], template)


def test_aligned_crop_samples_the_right_pixels(template):
    rng = np.random.default_rng(2)
    lm = template + 0.0
    lm68 = np.zeros((68, 2))
    base = rng.normal(size=(68, 2)) * 5 + 120
    lm68[:] = base
    # a face 4x larger than the template (so the crop shrinks by 4: the area pre-shrink path) and rolled
    big = np.zeros((1200, 1200, 3), np.float32)
    lm68 = base * 4 + 50
    lm68 = (lm68 - 600) @ np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]).T + 600
    marker = lm68[30].round().astype(int)
    big[marker[1] - 6:marker[1] + 7, marker[0] - 6:marker[0] + 7] = 1.0
    crop, al = aligned_crop(big, lm68, [2400.0, 2400.0, 599.5, 599.5], lm, size=240)
    u, v = al.to_crop(marker[None].astype(float))[0].round().astype(int)
    assert crop[v, u].min() > 0.8 and crop.mean() < 0.05
