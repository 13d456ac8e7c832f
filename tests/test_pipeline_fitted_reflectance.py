"""FacePipeline with a checkpoint trained with fitted reflectance coefficients and appearance-only residuals."""
import numpy as np
import pytest
import torch

from reconstruct_fixtures import mean_landmarks, synthetic_faces, write_tiny_checkpoint

SEED = 10_000_037


def _detector(points):
    from fml_taichi.data.detect import PtsFileDetector

    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer

    def detect(image, path=None):
        return [scorer.detection(np.r_[points.min(0), points.max(0)], points, float("inf"), "given")]
    return detect


@pytest.fixture(scope="module")
def face():
    faces = synthetic_faces((SEED,))
    return faces["image"][0], faces["landmarks"][0].astype(np.float32)


def _weighted_residual(face_model, res, level):
    """The s^2-weighted squared reflectance residual the fit minimises, of one level's reflectance."""
    from fml_taichi.recon.corrective_fit import reflectance_residuals

    o = res.output
    rho, w = reflectance_residuals(face_model, o.final_geometry, getattr(o, f"{level}_reflectance"), res.params,
                                   torch.from_numpy(np.ascontiguousarray(res.crop[None], np.float32)),
                                   torch.as_tensor(res.crop_intrinsics, dtype=torch.float32))
    return float((w * rho ** 2).sum())


def test_fitted_reflectance_lowers_the_residual_and_appearance_keeps_the_start(tmp_path, face):
    from fml_taichi.recon.pipeline import FacePipeline

    image, lm = face
    fitted = write_tiny_checkpoint(tmp_path / "fitted.pt", encoder_input="image+start", reflectance="fitted",
                                   residuals="appearance", head_std=0.05)
    pipe = FacePipeline.from_checkpoint(fitted, detector=_detector(lm), runner="torch")
    with torch.no_grad():  # a basis with something to fit: uniform offsets of each colour channel
        theta = pipe.multilevel.reflectance_corrective.theta
        theta.zero_()
        for c in range(3):
            theta[c::3, c] = 0.1
    res = pipe(image)[0]
    assert pipe.reconstructor.reflectance_prior is not None and "reflectance_fit" in pipe.last_timings
    assert float(res.params.delta_reflectance.abs().max()) > 0
    corr = pipe.multilevel.reflectance_corrective(res.params.delta_reflectance.float())
    torch.testing.assert_close(res.output.final_reflectance, res.output.base_reflectance + corr, atol=1e-5, rtol=0)
    assert _weighted_residual(pipe.face_model, res, "final") < 0.95 * _weighted_residual(pipe.face_model, res, "base")
    # Appearance-only residuals: the pose and shape are the landmark start's (heads of std 0.05 would move them).
    start = pipe.last_start.params
    assert np.allclose(res.params.shape.numpy(), start.shape.numpy(), atol=1e-4)
    assert np.allclose(res.params.expression.numpy(), start.expression.numpy(), atol=1e-4)


def test_numpy_and_torch_reflectance_fits_agree_in_the_pipeline(tmp_path, face):
    """The pipeline's default numpy fit and the torch functions (``reflectance_fit_impl``) give the same
    coefficients (to 1e-3 of their size: float32 sums in another order; tests/test_corrective_fit.py)."""
    from fml_taichi.recon.pipeline import FacePipeline

    image, lm = face
    fitted = write_tiny_checkpoint(tmp_path / "fitted.pt", encoder_input="image+start", reflectance="fitted",
                                   residuals="appearance", head_std=0.05)
    pipe = FacePipeline.from_checkpoint(fitted, detector=_detector(lm), runner="torch")
    with torch.no_grad():
        theta = pipe.multilevel.reflectance_corrective.theta
        theta.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    assert pipe.reflectance_fit_impl == "numpy"
    fast = pipe(image)[0]
    pipe.reflectance_fit_impl = "torch"
    slow = pipe(image)[0]
    d_fast, d_slow = fast.params.delta_reflectance.numpy(), slow.params.delta_reflectance.numpy()
    assert np.abs(d_slow).max() > 0.01
    np.testing.assert_allclose(d_fast, d_slow, atol=1e-3 * np.abs(d_slow).max(), rtol=0)
    torch.testing.assert_close(fast.output.final_reflectance, slow.output.final_reflectance, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.output.reflectance_corrective,
                               pipe.multilevel.reflectance_corrective(fast.params.delta_reflectance.float()), atol=1e-6, rtol=0)


def test_geometry_corrective_of_zero_coefficients_is_skipped_exactly(tmp_path, face):
    """A zero geometry head gives delta_g = 0: the pipeline returns zero offsets without evaluating
    Theta_g, equal to the corrective's own output; nonzero coefficients go through the corrective."""
    from fml_taichi.recon.pipeline import FacePipeline

    image, lm = face
    path = write_tiny_checkpoint(tmp_path / "fitted.pt", encoder_input="image+start", reflectance="fitted",
                                 residuals="appearance", head_std=0.05)
    pipe = FacePipeline.from_checkpoint(path, detector=_detector(lm), runner="torch")
    ml = pipe.multilevel
    nonzero = pipe(image)[0]
    d = nonzero.params.delta_geometry.to(ml.geometry_corrective.weight.dtype if hasattr(ml.geometry_corrective, "weight")
                                         else nonzero.params.delta_geometry.dtype)
    assert float(d.abs().max()) > 0
    torch.testing.assert_close(nonzero.output.geometry_corrective, ml.geometry_corrective(d), atol=1e-6, rtol=0)
    with torch.no_grad():
        pipe.reconstructor.encoder.head_geometry.weight.zero_()
        pipe.reconstructor.encoder.head_geometry.bias.zero_()
    pipe = FacePipeline(pipe.reconstructor, detector=_detector(lm), runner="torch")
    calls, forward = [], ml.geometry_corrective.forward
    ml.geometry_corrective.forward = lambda delta: (calls.append(1), forward(delta))[1]
    zero = pipe(image)[0]
    del ml.geometry_corrective.forward
    assert not calls, "Theta_g evaluated for zero coefficients"
    assert not zero.params.delta_geometry.any()
    assert not zero.output.geometry_corrective.any()
    torch.testing.assert_close(zero.output.geometry_corrective, ml.geometry_corrective(zero.params.delta_geometry.float()))
    torch.testing.assert_close(zero.output.final_geometry, zero.output.base_geometry, atol=0, rtol=0)


def test_a_greyscale_crop_gets_a_grey_final_reflectance_and_colour_is_unchanged(tmp_path, face):
    """A greyscale copy of the face: the final level's reflectance has equal channels (both fit
    implementations), with the option off it keeps a cast (so the test can fail); the colour image
    gives the same result with the option on or off."""
    from fml_taichi.recon.pipeline import FacePipeline, greyscale_crops

    image, lm = face
    grey = np.repeat(image.mean(-1, keepdims=True), 3, -1).astype(image.dtype)
    path = write_tiny_checkpoint(tmp_path / "fitted.pt", encoder_input="image+start", reflectance="fitted",
                                 residuals="appearance", head_std=0.05)
    pipe = FacePipeline.from_checkpoint(path, detector=_detector(lm), runner="torch")
    with torch.no_grad():
        pipe.multilevel.reflectance_corrective.theta.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))

    def chroma(res):
        r = res.output.final_reflectance.numpy()
        return float(np.abs(r - r.mean(-1, keepdims=True)).max())

    assert pipe.grey_photo_reflectance
    on = pipe(grey)[0]
    assert greyscale_crops(on.crop[None]).tolist() == [True]
    assert chroma(on) < 1e-6
    torch.testing.assert_close(on.output.final_reflectance, on.output.base_reflectance + on.output.reflectance_corrective)
    pipe.reflectance_fit_impl = "torch"
    assert chroma(pipe(grey)[0]) < 1e-6
    pipe.reflectance_fit_impl = "numpy"
    pipe.grey_photo_reflectance = False
    off = pipe(grey)[0]
    assert chroma(off) > 0.01
    # Same mean brightness either way: the grey fit moves the cast, not the level.
    assert abs(float(on.output.final_reflectance.mean()) - float(off.output.final_reflectance.mean())) < 0.02
    colour_off = pipe(image)[0]
    pipe.grey_photo_reflectance = True
    colour_on = pipe(image)[0]
    assert greyscale_crops(colour_on.crop[None]).tolist() == [False]
    torch.testing.assert_close(colour_on.output.final_reflectance, colour_off.output.final_reflectance, atol=0, rtol=0)
    torch.testing.assert_close(colour_on.params.delta_reflectance, colour_off.params.delta_reflectance, atol=0, rtol=0)


def test_work_done_before_the_features_gives_the_same_reconstruction(face, tmp_path):
    """Heads that move only the reflectance (zero geometry head, reflectance residuals): the base
    geometry and the reflectance fit's observation and normal equations are done from the start while
    the backbone runs (``_before_features``); the reconstruction is bit for bit the one computed
    after the features. Heads that may move the geometry skip it."""
    from fml_taichi.recon.pipeline import FacePipeline

    img, lm = face
    ck = write_tiny_checkpoint(tmp_path / "keep.pt", "image+start", reflectance="fitted", residuals="reflectance",
                               geometry_head=False)
    pipe = FacePipeline.from_checkpoint(ck, detector=_detector(lm), runner="torch")
    assert pipe.runner.heads.keeps_geometry
    early = pipe(img)[0]
    assert pipe.last_timings["before_features"] > 0
    pipe._before_features = lambda *a: None  # the path after the features only
    late = pipe(img)[0]
    for name in ("final_geometry", "base_geometry", "base_reflectance", "final_reflectance"):
        assert torch.equal(getattr(early.output, name), getattr(late.output, name)), name
    for name in ("rotation", "translation", "light", "shape", "expression", "reflectance", "delta_reflectance"):
        assert torch.equal(getattr(early.params, name), getattr(late.params, name)), name
    moving = FacePipeline.from_checkpoint(write_tiny_checkpoint(tmp_path / "move.pt", "image+start", reflectance="fitted",
                                                                residuals="reflectance"),
                                          detector=_detector(lm), runner="torch")
    assert not moving.runner.heads.keeps_geometry
    moving(img)
    assert moving.last_timings["before_features"] < 1e-3  # nothing done early (the check only)
