"""Mesh utilities on small hand-made meshes where the right answer is known."""
import numpy as np
import pytest

from fml_taichi.model import mesh
from model_fixtures import grid_mesh


def test_clean_grid_passes():
    v, t = grid_mesh(4, 3)
    rep = mesh.check_mesh(v, t)
    assert rep.problems() == [] and rep.boundary_loops == 1
    assert (mesh.face_normals(v, t)[:, 2] < 0).all()


def test_check_mesh_finds_each_defect():
    v, t = grid_mesh(4, 3)
    flipped = t.copy()
    flipped[0] = flipped[0, ::-1]
    assert mesh.check_mesh(v, flipped).inconsistent_edges > 0
    fin = np.vstack([t, [[4, 1, len(v)]]])  # a third triangle on the interior edge (4, 1)
    v_fin = np.vstack([v, [[5.0, 5.0, 10.0]]])
    assert mesh.check_mesh(v_fin, fin).max_triangles_per_edge == 3
    assert "shared by 3" in " ".join(mesh.check_mesh(v_fin, fin).problems())
    degenerate = np.vstack([t, [[0, 1, 2]]])  # three collinear vertices of the first row
    assert mesh.check_mesh(v, degenerate).degenerate_triangles >= 1
    repeated = np.vstack([t, [[0, 0, 5]]])
    assert mesh.check_mesh(v, repeated).degenerate_triangles >= 1
    v_extra = np.vstack([v, [[99.0, 99.0, 0.0]]])
    assert mesh.check_mesh(v_extra, t).unreferenced_vertices == 1


def test_bowtie_is_nonmanifold():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], float)
    t = np.array([[0, 1, 2], [0, 3, 4]])  # two triangles touching only at vertex 0
    assert mesh.nonmanifold_vertices(t).tolist() == [0]


def test_hole_gives_second_boundary_loop():
    v, t = grid_mesh(5, 5)
    centre = 2 * 5 + 2
    holed = t[~(t == centre).any(axis=1)]
    loops = mesh.boundary_loops(holed)
    assert len(loops) == 2 and sorted(len(loop) for loop in loops) == [6, 16]  # the fan of 6 triangles around the centre


def test_one_ring_matches_brute_force():
    v, t = grid_mesh(4, 4)
    offsets, indices = mesh.one_ring(t, len(v))
    assert offsets.dtype == np.int32 and indices.dtype == np.int32
    for i in range(len(v)):
        expect = sorted({int(x) for tri in t if i in tri for x in tri if x != i})
        assert indices[offsets[i] : offsets[i + 1]].tolist() == expect


def test_triangulate_param_trims_concave_outline_without_holes():
    # An L-shaped height field: Delaunay fills the 10 x 10 notch with long triangles that must go.
    v, _ = grid_mesh(21, 21, spacing=1.0)
    v = v[~((v[:, 0] > 10.5) & (v[:, 1] > 10.5))]
    v[:, 2] = 0.02 * v[:, 0] ** 2  # a little curvature: a real height field
    t = mesh.triangulate_param(v[:, :2], v)
    rep = mesh.check_mesh(v, t)
    assert rep.problems() == [] and rep.boundary_loops == 1
    e, _ = mesh.edges(t)
    assert np.linalg.norm(v[e[:, 0], :2] - v[e[:, 1], :2], axis=1).max() < 6.0  # the notch is 14 across
    flat = v.copy()
    flat[:, 2] = 0.0
    area = 0.5 * np.linalg.norm(mesh.face_normals(flat, t), axis=1).sum()
    assert 300.0 <= area < 310.0  # the L (20 x 20 minus 10 x 10), at most a sliver of the notch


def test_orient_outward_flips_inward_meshes():
    v, t = grid_mesh(3, 3)
    inside = np.array([10.0, 10.0, 50.0])  # +z is inside: normals should point to -z
    assert (mesh.orient_outward(v, t, inside) == t).all()
    assert (mesh.orient_outward(v, t[:, ::-1], inside) == t).all()


def test_subsample_param_hits_target_and_keeps_required():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 100, size=(5000, 2))
    keep = np.array([3, 77, 4999])
    sel = mesh.subsample_param(p, 600, keep=keep)
    assert abs(len(sel) - 600) < 0.05 * 600
    assert set(keep) <= set(sel.tolist())
    assert np.all(np.diff(sel) > 0)
    assert (mesh.subsample_param(p, 10_000) == np.arange(5000)).all()


def test_compact_reindexes():
    t = np.array([[2, 4, 6]])
    t2, kept = mesh.compact(t, 8)
    assert kept.tolist() == [2, 4, 6] and t2.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("k", [1, 4])
def test_graph_laplacian_is_psd_with_constant_nullspace(k):
    v, t = grid_mesh(4, 4)
    lap = mesh.graph_laplacian(t, len(v)).toarray()
    assert np.allclose(lap, lap.T) and np.allclose(lap @ np.ones(len(v)), 0)
    assert np.linalg.eigvalsh(lap)[:k].min() > -1e-9
