"""The numba-compiled joint solver (recon.landmark_fit_jit) against the numpy reference it twins."""
import dataclasses

import numpy as np
import pytest
from recon_fixtures import face_model, posed_faces

from fml_taichi.recon.landmark_fit import LandmarkFitConfig, LandmarkFitter

POSES = [(10.0, 70.0, 40.0), (-15.0, -55.0, -40.0), (5.0, 20.0, 0.0), (20.0, -80.0, 10.0)]


@pytest.fixture(scope="module")
def faces():
    return posed_faces(POSES)


def _assert_same_fit(a, b):
    for f in dataclasses.fields(a):
        va, vb = np.asarray(getattr(a, f.name), float), np.asarray(getattr(b, f.name), float)
        scale = max(1.0, float(np.abs(va).max()))
        assert np.abs(va - vb).max() <= 1e-9 * scale, (f.name, np.abs(va - vb).max())


@pytest.mark.parametrize("jaw", ["contour", "fixed"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_compiled_joint_solver_matches_numpy(faces, jaw, weighted):
    """Same fit (pose, shape, expression, chosen jaw vertices, projections, errors) to 1e-9, on a batch
    of rolled and turned faces with detector-like noise, with and without per-point weights."""
    fm = face_model()
    weights = np.random.default_rng(1).uniform(0.2, 1.0, (len(POSES), 68)) if weighted else None
    ref = LandmarkFitter(fm, LandmarkFitConfig(impl="numpy", jaw=jaw))
    jit = LandmarkFitter(fm, LandmarkFitConfig(impl="numba", jaw=jaw))
    x2, k = faces["landmarks"], faces["intrinsics"][0]
    _assert_same_fit(ref(x2, k, weights), jit(x2, k, weights))
    # One face at a time gives the batch's rows (each face is solved on its own).
    one = jit(x2[1:2], k, None if weights is None else weights[1:2])
    assert np.allclose(one.shape[0], jit(x2, k, weights).shape[1], atol=1e-12)


def test_impl_is_validated_and_numpy_stays_selectable(faces):
    with pytest.raises(ValueError, match="impl"):
        LandmarkFitConfig(impl="fortran")
    fitter = LandmarkFitter(face_model(), LandmarkFitConfig(impl="numpy"))
    assert fitter._compiled() is None
    assert LandmarkFitter(face_model())._compiled() is not None  # None: numba, a dependency


def test_first_compile_is_announced_once_and_only_with_an_empty_cache(tmp_path, monkeypatch, capsys):
    from fml_taichi.recon import compiled

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiled, "_noted", set())
    compiled.note_first_compile("landmark_fit_jit")
    compiled.note_first_compile("landmark_fit_jit")
    err = capsys.readouterr().err
    assert err.count("compiling the reconstruction's landmark fit") == 1, err
    (tmp_path / "recon_0").mkdir()
    (tmp_path / "recon_0" / "colour_fit_jit.observe-35.py311.nbi").write_bytes(b"")
    compiled.note_first_compile("colour_fit_jit")  # its cache exists: nothing to say
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="impl"):
        compiled.resolve_impl("fortran")


def test_identity_copy_of_a_used_fitter_fits_with_its_own_mean_face(faces):
    """The tracker's identity copy (``recon.tracking.identity_fitter``: a shallow copy with the mean face
    moved) of a fitter that has already run compiled: the copy fits with its own mean, as numpy does."""
    from fml_taichi.recon.tracking import identity_fitter

    fm = face_model()
    x2, k = faces["landmarks"], faces["intrinsics"][0]
    shape = np.linspace(-1.0, 1.0, fm.m_shape)
    ref, jit = (LandmarkFitter(fm, LandmarkFitConfig(impl=impl)) for impl in ("numpy", "numba"))
    jit(x2, k)  # used before the copy is made
    _assert_same_fit(identity_fitter(ref, shape)(x2, k), identity_fitter(jit, shape)(x2, k))
