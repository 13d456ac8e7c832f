"""Evaluation metrics with known answers, the .pts format, and the face region."""
import math

import numpy as np
import pytest
import torch
import trimesh

from fml_taichi.losses import metrics
from fml_taichi.eval.harness import face_region, format_table, summarise
from fml_taichi.io.pts import read_pts, write_pts
from fml_taichi.model import default_face_model
from fml_taichi.model.mesh import vertex_normals


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(3000)


def random_rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # a proper rotation


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3)) * 30
    rot, scale, t = random_rotation(1), 1.37, np.array([5.0, -2.0, 300.0])
    dst = scale * src @ rot.T + t
    sim = metrics.umeyama(src, dst)
    assert sim.scale == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(sim.rotation, rot, atol=1e-9)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-8)
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)
    rigid = metrics.umeyama(src, src @ rot.T + t, with_scale=False)
    assert rigid.scale == 1.0
    # A mirrored target: the best *rotation* is returned, never a reflection.
    assert np.linalg.det(metrics.umeyama(src, src * np.array([-1, 1, 1])).rotation) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target"):
        metrics.umeyama(src, dst[:10])
    with pytest.raises(ValueError, match="coincide"):
        metrics.umeyama(np.ones((5, 3)), dst[:5])


def test_closest_point_on_triangle_matches_dense_sampling():
    rng = np.random.default_rng(2)
    tri = np.array([[0.0, 0, 0], [10, 0, 0], [3, 8, 0]])
    # Points around the triangle, in all seven Voronoi regions, above and below its plane.
    p = rng.uniform(-8, 18, size=(300, 3)) * np.array([1, 1, 0.5])
    cp = metrics.closest_point_on_triangles(p, *(np.repeat(tri[k:k + 1], len(p), 0) for k in range(3)))
    u, v = np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 301))
    keep = u + v <= 1
    samples = tri[0] + u[keep, None] * (tri[1] - tri[0]) + v[keep, None] * (tri[2] - tri[0])
    dense = np.linalg.norm(p[:, None] - samples[None], axis=-1).min(1)
    ours = np.linalg.norm(p - cp, axis=-1)
    assert np.all(ours <= dense + 1e-9)  # never worse than any sample: it is the minimum
    assert np.all(ours >= dense - 0.05)  # and the dense sampling (spacing ~0.03) agrees
    # Closest points lie on the triangle (in its plane, inside its barycentric range).
    assert np.allclose(cp[:, 2], 0.0)


def test_identical_meshes_have_zero_error(face_model):
    v, tri = face_model.mean_geometry, face_model.triangles
    assert metrics.point_to_surface(v, v, tri).max() < 1e-9
    g = metrics.geometric_error(v, v, tri)
    assert g.mean < 1e-9 and g.sd < 1e-9


def test_similarity_copy_aligns_to_zero(face_model):
    v = face_model.mean_geometry.double().numpy()
    moved = 0.8 * v @ random_rotation(3).T + np.array([40.0, -10.0, 600.0])
    region = face_region(face_model)
    g = metrics.geometric_error(moved, v, face_model.triangles, region=region)
    assert g.mean < 1e-6
    assert len(g.distances) == int(region.sum())
    assert g.alignment.scale == pytest.approx(1 / 0.8)
    # Without alignment the same copy is far away: the metric really depends on the alignment.
    assert metrics.point_to_surface(moved[region], v, face_model.triangles).mean() > 100


def test_normal_offset_of_one_mm_measures_one_mm(face_model):
    v = face_model.mean_geometry.double().numpy()
    tri = face_model.triangles.long().numpy()
    offset = v + 1.0 * vertex_normals(v, tri)
    region = face_region(face_model)
    d = metrics.point_to_surface(offset[region], v, tri)
    # Curved surface: the distance to the piecewise-flat mesh is slightly below 1 mm where it bends,
    # and in tight concave spots (nostrils, eye corners) another part of the face comes closer.
    assert np.median(d) == pytest.approx(1.0, abs=0.01)
    assert np.mean((d > 0.97) & (d < 1.0 + 1e-6)) > 0.95
    assert d.max() < 1.0 + 1e-6
    # The KD-tree candidate set finds the true closest triangle: compare with brute force.
    sub = offset[region][::20]
    a, b, c = (v[tri[:, k]] for k in range(3))
    brute = np.array([np.linalg.norm(metrics.closest_point_on_triangles(np.repeat(q[None], len(tri), 0), a, b, c)
                                     - q, axis=1).min() for q in sub])
    np.testing.assert_allclose(metrics.point_to_surface(sub, v, tri), brute, atol=1e-9)


def test_a_local_bump_is_not_aligned_away(face_model):
    v = face_model.mean_geometry.double().numpy()
    tri = face_model.triangles.long().numpy()
    nose = v[int(face_model.landmarks[30])]
    bump = 3.0 * np.exp(-((v - nose) ** 2).sum(1) / (2 * 10.0 ** 2))[:, None] * vertex_normals(v, tri)
    g = metrics.geometric_error(v + bump, v, tri, region=face_region(face_model))
    assert g.distances.max() > 2.0  # the bump stays visible after the similarity alignment
    assert 0.02 < g.mean < 1.0


def test_different_topology_uses_icp():
    fine = trimesh.creation.icosphere(subdivisions=4, radius=50.0)
    coarse = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    # (A sphere: any rotation fits, so ICP from the identity start must only find scale and shift.)
    moved = 1.2 * coarse.vertices @ random_rotation(5).T + np.array([3.0, 1.0, 2.0])
    g = metrics.geometric_error(moved, fine.vertices, fine.faces.astype(np.int32))
    assert g.mean < 0.1  # only the two tessellations' difference remains
    assert g.alignment.scale == pytest.approx(1 / 1.2, rel=0.01)


def test_photometric_error_known_answer():
    img = torch.zeros(2, 4, 5, 3)
    ren = img.clone()
    ren[0, ..., 0] = 0.3
    ren[0, ..., 1] = 0.4  # RGB distance 0.5 everywhere in image 0
    ren[1, :2] = 1.0  # image 1: distance sqrt(3) on the top two rows only
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[1, 2:] = False
    e = metrics.photometric_error(ren, img, mask)
    assert float(e[0]) == pytest.approx(0.5)
    assert float(e[1]) == pytest.approx(math.sqrt(3))
    assert math.isnan(float(metrics.photometric_error(ren, img, torch.zeros_like(mask))[0]))
    with pytest.raises(ValueError, match="mask"):
        metrics.photometric_error(ren, img, mask[:, :3])


def test_nme_known_answer():
    target = torch.zeros(68, 2)
    target[36] = torch.tensor([10.0, 50.0])
    target[45] = torch.tensor([110.0, 50.0])  # inter-ocular distance 100 px
    pred = target + torch.tensor([3.0, 4.0])  # every point 5 px off
    assert metrics.landmark_nme(pred, target)[0] == pytest.approx(0.05)
    w = torch.zeros(68)
    w[:10] = 1.0
    pred2 = target.clone()
    pred2[10:] += 100.0  # only unweighted points are off
    assert metrics.landmark_nme(pred2, target, w)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="eye corners"):
        metrics.landmark_nme(pred, torch.zeros(68, 2))


def test_face_region_covers_the_inner_face(face_model):
    region = face_region(face_model)
    assert 0.3 < region.mean() < 0.9
    assert region[face_model.landmarks[17:].long().numpy()].all()


def test_summary_and_table():
    records = [{"geom_mm_base": 2.0, "geom_mm_final": 1.0, "photo_base": 0.1, "photo_final": 0.05,
                "nme_base": 0.04, "nme_final": 0.03},
               {"geom_mm_base": 4.0, "geom_mm_final": 3.0, "photo_base": 0.3, "photo_final": 0.15,
                "nme_base": 0.06, "nme_final": 0.05}]
    s = summarise(records)
    assert s["n"] == 2 and s["geom_mm_base"] == pytest.approx(3.0) and s["geom_sd_base"] == pytest.approx(1.0)
    assert s["photo_final"] == pytest.approx(0.1)
    table = format_table(s)
    assert "3.0000 +- 1.0000" in table and "geometric error" in table
    no_geo = summarise([{"photo_base": 0.1, "photo_final": 0.1, "nme_base": 0.1, "nme_final": 0.1}])
    assert no_geo["geom_mm_base"] is None and "n/a" in format_table(no_geo)


def test_pts_round_trip_and_one_based_convention(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 239, size=(68, 2)).astype(np.float32)
    path = tmp_path / "a.pts"
    write_pts(path, pts)
    text = path.read_text().splitlines()
    assert text[:3] == ["version: 1", "n_points: 68", "{"] and text[-1] == "}"
    x, y = map(float, text[3].split())
    assert x == pytest.approx(pts[0, 0] + 1, abs=1e-3) and y == pytest.approx(pts[0, 1] + 1, abs=1e-3)
    back, conf = read_pts(path)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    assert conf.shape == (68,) and (conf == 1).all()
    # A hand-written file (iBUG style: 1-based, header order free, blank lines, CRLF)
    lines = ["n_points:  68", "version: 1", "{"] + [f"{k + 1} {2 * k + 1}" for k in range(68)] + ["}", ""]
    (tmp_path / "b.pts").write_bytes("\r\n".join(lines).encode())
    b, _ = read_pts(tmp_path / "b.pts")
    assert b[0].tolist() == [0.0, 0.0] and b[67].tolist() == [67.0, 134.0]


@pytest.mark.parametrize("body, match", [
    ("version: 1\n{\n1 2\n}\n", "n_points"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n", "expected 68"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", "coordinate lines"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 x\n}\n", "point 68"),
    ("hello world\n", "line 1"),
    ("version: 1\nn_points: 68\n", "opening"),
])
def test_pts_errors_name_the_problem(tmp_path, body, match):
    path = tmp_path / "bad.pts"
    path.write_text(body)
    with pytest.raises(ValueError, match=match):
        read_pts(path)


def test_pts_missing_file_and_bad_points(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pts"):
        read_pts(tmp_path / "nope.pts")
    with pytest.raises(ValueError, match="points"):
        write_pts(tmp_path / "x.pts", np.zeros((68, 3)))
    with pytest.raises(ValueError, match="NaN"):
        write_pts(tmp_path / "x.pts", np.full((68, 2), np.nan))
    assert not (tmp_path / "x.pts").exists()
