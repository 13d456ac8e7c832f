"""The batched landmark fit (recon.landmark_fit): pose at hard angles, shape, batching, weights."""
import numpy as np
import pytest
import torch
from recon_fixtures import face_model, posed_faces

from fml_taichi.recon.landmark_fit import (
    LandmarkFitConfig,
    LandmarkFitter,
    euler_to_matrix_np,
    matrix_to_euler,
    rodrigues,
)

POSES = [(10.0, 70.0, 40.0), (-15.0, -55.0, -40.0), (5.0, 20.0, 0.0), (20.0, -80.0, 10.0)]


@pytest.fixture(scope="module")
def faces():
    return posed_faces(POSES)


def _angle_deg(r_a, r_b):
    c = (np.trace(np.swapaxes(r_a, 1, 2) @ r_b, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


SOLVERS = [LandmarkFitConfig(), LandmarkFitConfig(solver="alternating", iterations=4, pose_steps=2)]


@pytest.mark.parametrize("config", SOLVERS, ids=["joint", "alternating"])
def test_fit_recovers_rolled_and_turned_pose_and_shape(faces, config):
    fm = face_model()
    fit = LandmarkFitter(fm, config)(faces["gt_landmarks"], faces["intrinsics"][0])
    gt = faces["gt_params"]
    err = _angle_deg(fit.matrix, euler_to_matrix_np(gt.rotation.double().numpy()))
    assert err[0] < 1.5 and (err < 3.0).all(), err  # rolled 40 deg and turned 70 deg; turned 80 deg
    assert (fit.nme < 0.04).all() and fit.nme[2] < 0.01, fit.nme  # inter-ocular: small at yaw 70-80
    # Shape: the fitted landmark vertices' geometry is closer to the truth than the mean face's.
    lms = fm.landmarks.long()
    with torch.no_grad():
        pred = fm.geometry(torch.from_numpy(fit.shape).float(), torch.from_numpy(fit.expression).float())[:, lms]
        true = fm.geometry(gt.shape, gt.expression)[:, lms]
    mean = fm.mean_geometry[lms]
    def centred(x):
        return x - x.mean(-2, keepdim=True)
    e_fit = (centred(pred) - centred(true)).norm(dim=-1).mean(1)
    e_mean = (centred(mean).expand_as(true) - centred(true)).norm(dim=-1).mean(1)
    assert (e_fit < 0.75 * e_mean).all(), (e_fit, e_mean)
    depth = gt.translation[:, 2].double().numpy()
    assert np.allclose(fit.translation[:, 2], depth, rtol=0.08)


@pytest.mark.parametrize("config", SOLVERS, ids=["joint", "alternating"])
def test_noisy_detector_points_still_give_the_pose(faces, config):
    fit = LandmarkFitter(face_model(), config)(faces["landmarks"], faces["intrinsics"][0])
    err = _angle_deg(fit.matrix, euler_to_matrix_np(faces["gt_params"].rotation.double().numpy()))
    assert np.median(err) < 3.0 and err.max() < 6.0, err


def test_batch_equals_one_by_one(faces):
    fitter = LandmarkFitter(face_model())
    x2, k = faces["landmarks"].double().numpy(), faces["intrinsics"][0].numpy()
    batch = fitter(x2, k)
    for i in range(len(x2)):
        one = fitter(x2[i:i + 1], k)
        np.testing.assert_allclose(one.matrix[0], batch.matrix[i], atol=1e-9)
        np.testing.assert_allclose(one.shape[0], batch.shape[i], atol=1e-8)


def test_zero_weight_ignores_a_wild_point(faces):
    fitter = LandmarkFitter(face_model())
    x2, k = faces["gt_landmarks"].double().numpy()[:1].copy(), faces["intrinsics"][0].numpy()
    w = np.ones((1, 68))
    w[0, 30] = 0.0
    clean = fitter(x2, k, w)
    x2[0, 30] += 80.0  # the nose tip thrown far away: with weight 0 its value must not matter
    ignored = fitter(x2, k, w)
    hurt = fitter(x2, k)
    np.testing.assert_allclose(ignored.matrix, clean.matrix, atol=1e-9)
    np.testing.assert_allclose(ignored.shape, clean.shape, atol=1e-8)
    assert _angle_deg(hurt.matrix, clean.matrix)[0] > 1.0


def test_rotation_helpers_match_the_convention():
    from fml_taichi.reference.image_formation import euler_to_matrix

    e = np.array([[0.3, -1.2, 2.5], [-0.7, 0.4, -0.9]])
    r = euler_to_matrix_np(e)
    np.testing.assert_allclose(r, euler_to_matrix(torch.from_numpy(e)).numpy(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(r), e, atol=1e-10)
    w = np.array([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]])
    rw = rodrigues(w)
    np.testing.assert_allclose(rw @ np.swapaxes(rw, 1, 2), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(rw[0] @ w[0], w[0], atol=1e-12)  # the axis is fixed
    np.testing.assert_allclose(np.degrees(np.arccos((np.trace(rw[0]) - 1) / 2)), np.degrees(np.linalg.norm(w[0])))


def test_joint_steps_converge_to_a_minimum_of_their_objective(faces):
    """The joint Gauss-Newton step's gradient is the objective's: at the returned point a second step
    is tiny (a minimum), and the objective fell."""
    fitter = LandmarkFitter(face_model())
    x2, k = faces["landmarks"][:1].double().numpy(), faces["intrinsics"][:1].double().numpy()
    fit = fitter(x2, k[0])
    coef = np.concatenate([fit.shape, fit.expression], 1)
    idx = np.searchsorted(fitter.used, fit.vertices)
    w, sigma = np.ones((1, 68)), np.array([2.0])

    def objective(rot, t, c):
        uv, _ = fitter.project(rot, t, (fitter.points(c))[:, idx[0]], k)
        return float(((uv - x2) ** 2).sum() / sigma[0] ** 2 + (fitter.prior * c[0] ** 2).sum())

    rot0 = rodrigues(np.array([[0.02, -0.03, 0.01]])) @ fit.matrix
    start = objective(rot0, fit.translation + 2.0, coef * 0.5)
    rot, t, c = fitter.joint_step(rot0, fit.translation + 2.0, coef * 0.5, idx, fitter.points(coef * 0.5), x2, w, k, sigma)
    for _ in range(3):
        rot, t, c = fitter.joint_step(rot, t, c, idx, fitter.points(c), x2, w, k, sigma)
    end = objective(rot, t, c)
    assert end < 0.5 * start, (start, end)
    _, t2, c2 = fitter.joint_step(rot, t, c, idx, fitter.points(c), x2, w, k, sigma)
    assert np.abs(c2 - c).max() < 1e-3 and np.abs(t2 - t).max() < 1e-2
    # No direction of a small random perturbation lowers the objective at the converged point.
    rng = np.random.default_rng(0)
    for _ in range(5):
        dc = rng.normal(0, 1e-3, c.shape)
        assert objective(rot, t, c + dc) >= end - 1e-6


def test_unknown_solver_is_an_error():
    with pytest.raises(ValueError, match="solver"):
        LandmarkFitConfig(solver="newton")


def test_bad_landmarks_raise():
    with pytest.raises(ValueError, match="landmarks"):
        LandmarkFitter(face_model())(np.full((1, 68, 2), np.nan), np.array([600.0, 600, 120, 120]))
