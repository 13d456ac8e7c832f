"""The numba-compiled colour fit and reflectance coefficient fit against their numpy paths, and the
reflectance fit split in prepare + solve."""
import numpy as np
import pytest

from recon_fixtures import face_model, posed_faces
from test_corrective_fit import _scene_with_random_theta
from fml_taichi.recon.colour_fit import ColourFitConfig, ColourFitter
from fml_taichi.recon.compiled import default_impl
from fml_taichi.recon.corrective_fit import PreparedReflectanceFit, ReflectanceCoefficientFitter
from fml_taichi.recon.landmark_fit import euler_to_matrix_np

FIELDS = ("light", "reflectance", "skin", "albedo", "n_visible", "rms")


@pytest.fixture(scope="module")
def faces():
    return posed_faces([(0.0, 10.0, 0.0), (5.0, -25.0, 10.0)], seed=10_000_610)


def _colour_args(faces, images, n=2):
    p = faces["gt_params"]
    return (images[:n], faces["gt_vertices"].double().numpy()[:n], euler_to_matrix_np(p.rotation.double().numpy())[:n],
            p.translation.double().numpy()[:n], faces["intrinsics"][0].numpy())


def _assert_same_fit(want, got, rtol):
    for f in FIELDS:
        a, b = getattr(want, f), getattr(got, f)
        assert a.shape == b.shape, f
        assert np.abs(a - b).max() <= rtol * np.abs(a).max(), (f, np.abs(a - b).max(), np.abs(a).max())


def test_numba_is_the_default_and_numpy_stays_selectable():
    assert default_impl() == "numba"  # numba is a dependency (setup.cfg)
    fm = face_model()
    assert ColourFitter(fm).impl == "numba"
    assert ColourFitter(fm, impl="numpy").impl == "numpy"
    assert ColourFitter(fm, ColourFitConfig(impl="numpy")).impl == "numpy"
    assert ColourFitter(fm, ColourFitConfig(impl="numpy"), impl="numba").impl == "numba"  # the argument wins
    with pytest.raises(ValueError, match="impl"):
        ColourFitter(fm, impl="fortran")


@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
@pytest.mark.parametrize("crop", [False, True], ids=["whole", "cropped"])
@pytest.mark.parametrize("batch", [1, 2])
def test_colour_fit_numba_matches_numpy(faces, grey, crop, batch):
    """Same maths in float64 and the same OpenCV samples: equal to 1e-9 relative (measured ~1e-12)."""
    images = faces["image"].numpy()
    if grey:
        images = images.mean(-1, keepdims=True).repeat(3, -1)
    if crop:  # the right 40% of the crop cut off: samples there fall outside and drop out
        images = np.ascontiguousarray(images[:, :, : int(images.shape[2] * 0.6)])
    args = _colour_args(faces, images, batch)
    fm = face_model()
    want = ColourFitter(fm, impl="numpy")(*args)
    got = ColourFitter(fm, impl="numba")(*args)
    assert (want.n_visible > 30).all()
    if crop:
        full = ColourFitter(fm, impl="numpy")(*_colour_args(faces, faces["image"].numpy(), batch))
        assert (want.n_visible < full.n_visible).all()  # the cut removed samples
    _assert_same_fit(want, got, 1e-9)


def test_colour_fit_numba_reads_only_its_vertices(faces):
    fitter = ColourFitter(face_model(), impl="numba")
    args = _colour_args(faces, faces["image"].numpy())
    sub = (args[0], args[1][:, fitter.vertices], *args[2:])
    _assert_same_fit(fitter(*args), fitter(*sub), 1e-12)


@pytest.fixture(scope="module")
def scene():
    from fml_taichi.model import default_face_model

    fm = default_face_model(n_vertices=1000)
    b, p, k, ml, out = _scene_with_random_theta(fm, [7, 8], theta_seed=2)
    out.base_reflectance = out.base_reflectance * 0.9  # a residual to fit
    return fm, b, p, k, ml, out


def _reflectance_args(scene, images, batch):
    fm, b, p, k, ml, out = scene
    cut = (lambda x: x[:batch]) if batch < 2 else (lambda x: x)
    return (cut(out.final_geometry), cut(out.base_reflectance), cut(p.rotation), cut(p.translation), cut(p.light),
            cut(images), k)


@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
@pytest.mark.parametrize("crop", [False, True], ids=["whole", "cropped"])
@pytest.mark.parametrize("batch", [1, 2])
def test_reflectance_fit_numba_matches_numpy(scene, grey, crop, batch):
    """float32 in both; the observation's sums in another order round differently in the last bit:
    weights and residuals to float32 rounding, coefficients to 1e-5 relative."""
    fm, b, p, k, ml, out = scene
    images = b["image"].numpy()
    if grey:
        images = images.mean(-1, keepdims=True).repeat(3, -1)
    if crop:
        images = np.ascontiguousarray(images[:, :, : int(images.shape[2] * 0.6)])
    args = _reflectance_args(scene, images, batch)
    fits = {impl: ReflectanceCoefficientFitter(fm, ml.reflectance_corrective, 3, prior=0.01, impl=impl)
            for impl in ("numpy", "numba")}
    (rho_a, w_a), (rho_b, w_b) = (f.residuals(*args, grey=3.0 / 255.0) for f in fits.values())
    n_ok = int((w_a[..., 0] > 0).sum())
    assert n_ok > 50 * batch
    assert int(((w_a[..., 0] > 0) != (w_b[..., 0] > 0)).sum()) == 0  # the same vertices enter
    np.testing.assert_allclose(w_b, w_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rho_b, rho_a, rtol=0, atol=2e-5)
    (d_a, g_a), (d_b, g_b) = (f.fit(*args, 3.0 / 255.0) for f in fits.values())
    assert g_a.tolist() == g_b.tolist() == [grey] * batch
    assert np.abs(d_a).max() > 0.05
    assert np.abs(d_b - d_a).max() <= 1e-5 * np.abs(d_a).max(), np.abs(d_b - d_a).max() / np.abs(d_a).max()


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_prepare_then_solve_is_fit(scene, impl):
    """prepare (no base reflectance) + solve(base) gives fit's numbers exactly, grey faces included;
    one preparation serves several bases."""
    fm, b, p, k, ml, out = scene
    images = b["image"].numpy().copy()
    images[0] = images[0].mean(-1, keepdims=True)  # face 0 grey
    geo, base, rot, t, light, img, k = _reflectance_args(scene, images, 2)
    fitter = ReflectanceCoefficientFitter(fm, ml.reflectance_corrective, 3, prior=0.01, impl=impl)
    prepared = fitter.prepare(geo, rot, t, light, img, k, grey=3.0 / 255.0)
    assert isinstance(prepared, PreparedReflectanceFit) and prepared.grey.tolist() == [True, False]
    want, grey = fitter.fit(geo, base, rot, t, light, img, k, 3.0 / 255.0)
    got = prepared.solve(base)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    other = base * 1.1
    np.testing.assert_array_equal(prepared.solve(other), fitter.fit(geo, other, rot, t, light, img, k, grey)[0])
    # The pieces the tests of the numpy path use agree with it.
    rho, w = fitter.residuals(geo, base, rot, t, light, img, k, grey)
    np.testing.assert_array_equal(fitter.solve(rho, w, grey), want)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_reflectance_fit_of_a_face_outside_the_image_is_zero(scene, impl):
    """No vertex inside the crop: no rows enter, and the ridge solution is 0 (colour and grey faces)."""
    fm, b, p, k, ml, out = scene
    geo, base, rot, t, light, img, k = _reflectance_args(scene, b["image"].numpy(), 2)
    t = t.clone()
    t[:, 0] += 10 * float(t[:, 2].abs().max())  # far to the side of the view
    fitter = ReflectanceCoefficientFitter(fm, ml.reflectance_corrective, 3, prior=0.01, impl=impl)
    for grey in (np.array([False, False]), np.array([True, False])):
        delta, _ = fitter.fit(geo, base, rot, t, light, img, k, grey)
        np.testing.assert_array_equal(delta, np.zeros_like(delta))
