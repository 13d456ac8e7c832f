"""Reflectance coefficients fitted to the image: exact recovery, zero residual on a self-render, config."""
import numpy as np
import pytest
import torch

from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
from fml_taichi.model import MultiLevelModel, default_face_model
from fml_taichi.nets.config import ConfigError, from_dict
from fml_taichi.ops.render import render
from fml_taichi.recon.corrective_fit import (fit_reflectance_coefficients, reflectance_residuals,
                                             with_fitted_reflectance)


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(n_vertices=1000)


def test_ridge_fit_recovers_the_coefficients_of_an_exact_residual():
    g = torch.Generator().manual_seed(0)
    n, c = 300, 6
    theta = torch.randn(3 * n, c, generator=g) * 0.05
    delta = torch.randn(2, c, generator=g)
    rho = (theta @ delta.T).T.reshape(2, n, 3)
    weight = torch.rand(2, n, 3, generator=g) * (torch.rand(2, n, 1, generator=g) > 0.3)
    got = fit_reflectance_coefficients(theta, rho, weight, prior=1e-6)
    assert torch.allclose(got, delta, atol=1e-3)
    # Every third vertex determines the same exact coefficients.
    assert torch.allclose(fit_reflectance_coefficients(theta, rho, weight, prior=1e-6, stride=3), delta, atol=1e-3)
    # The prior shrinks towards 0, never past it.
    shrunk = fit_reflectance_coefficients(theta, rho, weight, prior=10.0)
    assert 0 < shrunk.norm() < delta.norm()
    with pytest.raises(ValueError, match="prior"):
        fit_reflectance_coefficients(theta, rho, weight, prior=0.0)


def _scene(face_model, seed=3):
    ren = SyntheticRenderer(face_model, SyntheticConfig(image_size=96, variation=0.0, noise_sd=0.0, blur_px=0.0))
    b = ren.render([seed])
    p = b["gt_params"]
    return b, p


def test_residual_of_a_self_render_is_zero_and_a_painted_patch_is_recovered(face_model):
    b, p = _scene(face_model)
    k = b["intrinsics"][0]
    geo, refl = b["gt_vertices"], b["gt_reflectance"]
    rho, w = reflectance_residuals(face_model, geo, refl, p, b["image"], k)
    seen = w[0, :, 0] > 0
    assert seen.sum() > 200
    # Interpolated pixel colours vs per-vertex values: small, not exact.
    assert rho[0, seen].abs().median() < 0.02
    # Paint a reflectance patch the base model does not have; the fitted coefficient of a basis that
    # holds it recovers its amplitude.
    patch = torch.zeros_like(refl)
    patch[0, : face_model.n_vertices // 3, 0] = 0.2
    img = render(geo, face_model.triangles, k, 96, 96, rotation=p.rotation, translation=p.translation,
                 reflectance=refl + patch, light=p.light, background=b["image"]).image
    rho, w = reflectance_residuals(face_model, geo, refl, p, img, k)
    theta = (patch / 0.2).reshape(-1, 1)
    got = fit_reflectance_coefficients(theta, rho, w, prior=1e-3)
    assert abs(float(got[0, 0]) - 0.2) < 0.05


def test_with_fitted_reflectance_replaces_delta_and_keeps_theta_differentiable(face_model):
    b, p = _scene(face_model)
    ml = MultiLevelModel(face_model, n_correctives_geometry=2, n_correctives_reflectance=3)
    p = p.replace(delta_geometry=torch.zeros(1, 2), delta_reflectance=torch.zeros(1, 3))
    out = ml(p)
    p2, out2 = with_fitted_reflectance(ml, p, out, b["image"], b["intrinsics"][0])
    assert p2.delta_reflectance.abs().max() > 0
    assert torch.allclose(out2.final_reflectance - out2.base_reflectance, ml.reflectance_corrective(p2.delta_reflectance), atol=1e-6)
    out2.final_reflectance.sum().backward()
    assert ml.reflectance_corrective.theta.grad.abs().max() > 0


def test_config_fitted_needs_a_warm_start_and_a_linear_space():
    base = {"model": {"reflectance_coefficients": "fitted"}, "stage2": {"steps": 10}}
    with pytest.raises(ConfigError, match="warm_start"):
        from_dict(base)
    from_dict({**base, "stage2": {"steps": 10, "warm_start": 8}})
    with pytest.raises(ConfigError, match="linear"):
        from_dict({**base, "model": {"reflectance_coefficients": "fitted", "kind": "mlp"}, "stage2": {"warm_start": 8}})
    with pytest.raises(ConfigError, match="reflectance_coefficients"):
        from_dict({"model": {"reflectance_coefficients": "guessed"}})


def test_residuals_at_a_vertex_subset_match_the_kernel(face_model):
    from fml_taichi.recon.corrective_fit import reflectance_residuals_at

    b, p = _scene(face_model)
    k = b["intrinsics"][0]
    geo, refl = b["gt_vertices"], b["gt_reflectance"] * 0.9  # a residual to measure
    rho, w = reflectance_residuals(face_model, geo, refl, p, b["image"], k)
    rows = torch.arange(0, face_model.n_vertices, 3)
    rho_s, w_s = reflectance_residuals_at(face_model, geo, refl, p, b["image"], k, rows)
    assert int((w_s[0, :, 0] > 0).sum()) > 50
    torch.testing.assert_close(w_s, w[:, rows], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rho_s, rho[:, rows], atol=1e-4, rtol=1e-4)


def test_numpy_fitter_matches_the_torch_path(face_model):
    """The inference fitter (numpy float32) against the torch functions training uses, at stride 3:
    residuals and weights to float32 rounding, coefficients to 1e-3 of their size (the 64 x 64
    normal equations are summed in another order and solved in float64 instead of float32; their
    condition number, ~1e3 with this ridge, scales the ~1e-7 rounding of the sums)."""
    from fml_taichi.recon.corrective_fit import (ReflectanceCoefficientFitter, fitted_reflectance_coefficients,
                                                 reflectance_residuals_at)

    b, p, k, ml, out = _scene_with_random_theta(face_model, [3, 4], theta_seed=1)
    out.base_reflectance = out.base_reflectance * 0.9  # a residual to fit
    fitter = ReflectanceCoefficientFitter(face_model, ml.reflectance_corrective, 3, prior=0.01)
    args = (out.final_geometry, out.base_reflectance, p.rotation, p.translation, p.light, b["image"], k)
    rho, w = fitter.residuals(*args)
    rho_t, w_t = reflectance_residuals_at(face_model, out.final_geometry, out.base_reflectance, p, b["image"], k,
                                          torch.from_numpy(fitter.rows))
    assert int((w[0, :, 0] > 0).sum()) > 50 and float(abs(rho).max()) > 0.05
    np.testing.assert_allclose(w, w_t.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(rho, rho_t.numpy(), atol=1e-5, rtol=1e-4)
    got = fitter(*args)
    want = fitted_reflectance_coefficients(ml, p, out, b["image"], k, prior=0.01, stride=3).numpy()
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max(), rtol=0)
    # The offsets from the fitter's copy of Theta are the corrective's.
    np.testing.assert_allclose(fitter.offsets(got), ml.reflectance_corrective(torch.from_numpy(got)).detach().numpy(),
                               atol=1e-6, rtol=0)
    # One face at a time gives the batch's rows.
    one = fitter(*(a[1:] if getattr(a, "ndim", 0) > 1 and len(a) == 2 else a for a in args))
    np.testing.assert_allclose(one[0], got[1], atol=1e-6, rtol=1e-5)
    # A changed Theta is noticed (the fitter copies it).
    assert fitter.matches(ml.reflectance_corrective, 0.01) and not fitter.matches(ml.reflectance_corrective, 0.02)
    with torch.no_grad():
        ml.reflectance_corrective.theta.mul_(2)
    assert not fitter.matches(ml.reflectance_corrective, 0.01)
    with pytest.raises(ValueError, match="prior"):
        ReflectanceCoefficientFitter(face_model, ml.reflectance_corrective, 3, prior=0.0)
    with pytest.raises(ValueError, match="linear"):
        ReflectanceCoefficientFitter(face_model, torch.nn.Identity(), 3)


def test_grey_fit_is_the_ridge_solution_over_grey_offsets(face_model):
    """On a greyscale image the fitter solves the same s^2-weighted objective restricted to grey
    offsets (the channel mean of Theta's rows) against the grey base: checked against a float64
    least-squares solve of every (vertex, channel) row written out; the tolerance decides grey from
    the sampled colours (grey image: yes; its colour original: no), and colour faces of the batch
    keep the colour solution."""
    from fml_taichi.recon.corrective_fit import ReflectanceCoefficientFitter

    b, p, k, ml, out = _scene_with_random_theta(face_model, [5, 6], theta_seed=4)
    base = out.base_reflectance * 0.9
    colour = b["image"].numpy()
    grey_img = colour.copy()
    grey_img[0] = colour[0].mean(-1, keepdims=True)  # face 0 greyscale, face 1 in colour
    fitter = ReflectanceCoefficientFitter(face_model, ml.reflectance_corrective, 3, prior=0.01)
    args = (out.final_geometry, base, p.rotation, p.translation, p.light, grey_img, k)
    got, grey = fitter.fit(*args, 3.0 / 255.0)
    assert grey.tolist() == [True, False]
    assert fitter.fit(*args[:5], colour, k, 3.0 / 255.0)[1].tolist() == [False, False]
    np.testing.assert_allclose(got[1], fitter(*args)[1], atol=1e-6, rtol=1e-5)  # the colour face: unchanged

    rho, w = fitter.residuals(*args, grey=np.array([True, True]))
    keep = w[0, :, 0] > 0
    assert keep.sum() > 50
    base_rows = base[0].numpy()[fitter.rows][keep]
    sw = np.sqrt(w[0][keep].astype(np.float64))  # [K, 3]
    theta_grey = fitter.theta[keep].astype(np.float64).mean(1)  # [K, C]
    rows = (sw[..., None] * theta_grey[:, None]).reshape(-1, theta_grey.shape[1])  # one row per (vertex, channel)
    a = np.concatenate([rows, np.sqrt(0.01) * np.eye(rows.shape[1])])
    y = np.concatenate([(sw * rho[0][keep]).reshape(-1), np.zeros(rows.shape[1])])
    want = np.linalg.lstsq(a, y, rcond=None)[0]
    assert np.abs(want).max() > 0.05
    np.testing.assert_allclose(got[0], want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # The residual is taken against the base's channel mean (where neither is clipped).
    rho_colour, _ = fitter.residuals(*args)
    r_g, r_c = rho[0][keep], rho_colour[0][keep]
    free = (np.abs(r_g) < 0.49) & (np.abs(r_c) < 0.49)
    assert free.mean() > 0.5
    np.testing.assert_allclose((r_g - r_c)[free], (base_rows - base_rows.mean(-1, keepdims=True))[free], atol=1e-5)


def _scene_with_random_theta(face_model, seeds, theta_seed):
    """Clean renders of ``seeds`` with their true parameters, and a model whose reflectance basis is
    random (8 columns): (batch, params with zero correctives, intrinsics, model, its output)."""
    from fml_taichi.model import FaceParams

    ren = SyntheticRenderer(face_model, SyntheticConfig(image_size=96, variation=0.0, noise_sd=0.0, blur_px=0.0))
    b = ren.render(list(seeds))
    p, k = b["gt_params"], b["intrinsics"][0]
    ml = MultiLevelModel(face_model, n_correctives_geometry=2, n_correctives_reflectance=8)
    with torch.no_grad():
        ml.reflectance_corrective.theta.normal_(0, 0.05, generator=torch.Generator().manual_seed(theta_seed))
    n = len(seeds)
    p = FaceParams(**{**vars(p), "delta_geometry": torch.zeros(n, 2), "delta_reflectance": torch.zeros(n, 8)})
    return b, p, k, ml, ml(p)
