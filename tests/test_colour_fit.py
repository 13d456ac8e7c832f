"""Light and reflectance from image colours (recon.colour_fit) and the measured skin modes (recon.skin_tone)."""
import numpy as np
import pytest
import torch

from recon_fixtures import face_model, posed_faces
from fml_taichi.recon.colour_fit import ColourFitter
from fml_taichi.recon.landmark_fit import euler_to_matrix_np
from fml_taichi.recon.skin_tone import (SKIN_LAB, constant_colour_coefficients, ita_degrees, lab_to_srgb,
                                        skin_modes)


@pytest.fixture(scope="module")
def faces():
    return posed_faces([(0.0, 10.0, 0.0), (5.0, -25.0, 10.0), (-5.0, 30.0, -5.0)], seed=10_000_600)


def _fit(faces, images):
    p = faces["gt_params"]
    fitter = ColourFitter(face_model())
    return fitter, fitter(images, faces["gt_vertices"].double().numpy(), euler_to_matrix_np(p.rotation.double().numpy()),
                          p.translation.double().numpy(), faces["intrinsics"][0].numpy())


def test_colour_fit_recovers_light_and_albedo_up_to_their_common_scale(faces):
    fitter, fit = _fit(faces, faces["image"].numpy())
    gt_alb = faces["gt_reflectance"].double().numpy()[:, fitter.samples].mean(1)
    # albedo x light is the identifiable product: chromaticity of the albedo and the light's shape
    # (the synthetic light has up to 8% tint per channel, which the near-grey light prior gives the skin)
    np.testing.assert_allclose(fit.albedo / fit.albedo[:, 1:2], gt_alb / gt_alb[:, 1:2], rtol=0.12)
    assert (fit.rms < 0.08).all(), fit.rms  # the rendered colours reproduce the image (noise, eyes, brows)
    # the scale splits between albedo and light by their priors: within 25% of the truth here
    assert (np.abs(fit.albedo[:, 1] / gt_alb[:, 1] - 1) < 0.25).all()


def test_greyscale_image_gives_grey_reflectance_and_grey_light(faces):
    grey = faces["image"].numpy().mean(-1, keepdims=True).repeat(3, -1)
    _, fit = _fit(faces, grey)
    assert np.ptp(fit.albedo, axis=1).max() < 0.01, fit.albedo
    chroma = np.abs(fit.light - fit.light.mean(-1, keepdims=True)).max() / np.abs(fit.light).max()
    assert chroma < 0.01
    # also the whole face's reflectance as the model evaluates the written coefficients
    refl = face_model().reflectance(torch.from_numpy(fit.reflectance).float()).mean(1).numpy()
    assert np.ptp(refl, axis=1).max() < 0.02, refl


def test_colour_image_keeps_skin_colour(faces):
    _, fit = _fit(faces, faces["image"].numpy())
    assert (fit.albedo[:, 0] > fit.albedo[:, 1] + 0.05).all() and (fit.albedo[:, 1] > fit.albedo[:, 2]).all()


def test_global_colour_is_written_exactly_into_the_model_coefficients():
    fm = face_model()
    m, residual = constant_colour_coefficients(fm)
    assert residual < 1e-8
    c = np.array([[-0.3, -0.2, -0.15]])  # dark skin relative to the model's mean albedo
    refl = fm.reflectance(torch.from_numpy(c @ m.T).float())
    np.testing.assert_allclose((refl - fm.mean_reflectance).numpy(), np.broadcast_to(c, refl.shape[1:])[None], atol=1e-5)


def test_skin_modes_span_dark_to_light_and_grey():
    assert np.allclose(lab_to_srgb([[100.0, 0.0, 0.0]]), 1.0, atol=2e-3)
    rgb = lab_to_srgb(SKIN_LAB)
    modes = skin_modes()
    coords = np.linalg.solve(modes.modes.T, (rgb - modes.mean).T).T
    ita = ita_degrees(SKIN_LAB)
    assert np.corrcoef(coords[:, 0], ita)[0, 1] > 0.9  # mode 1: darker to lighter
    assert np.abs(coords).max() < 3.0  # every measured point within 3 sigma
    grey = modes.mean + modes.modes[2] / 0.5  # two sigma along the grey mode: a grey of equal luminance
    assert np.ptp(grey) < 1e-9


def test_the_fit_reads_only_its_vertices(faces):
    """Given just ColourFitter.vertices (what the landmark start evaluates), the fit is the full mesh's;
    a geometry of another size is refused."""
    p = faces["gt_params"]
    fitter = ColourFitter(face_model())
    geo = faces["gt_vertices"].double().numpy()
    args = (euler_to_matrix_np(p.rotation.double().numpy()), p.translation.double().numpy(), faces["intrinsics"][0].numpy())
    full = fitter(faces["image"].numpy(), geo, *args)
    assert len(fitter.vertices) < geo.shape[1] / 2
    part = fitter(faces["image"].numpy(), np.ascontiguousarray(geo[:, fitter.vertices]), *args)
    np.testing.assert_array_equal(part.light, full.light)
    np.testing.assert_array_equal(part.reflectance, full.reflectance)
    with pytest.raises(ValueError, match="vertices"):
        fitter(faces["image"].numpy(), geo[:, :-1], *args)
