"""Exports: meshes re-read with trimesh (what Blender / MeshLab users get), parameter round trips,
atomicity of failed writes, overlays, figures and plots."""
import json
import os

import numpy as np
import pytest
import torch
import trimesh

import fml_taichi.common.atomic as atomic
from fml_taichi.io import (bake_vertex_colors, compose_figure, load_image, overlay, plot_bars, plot_curves,
                           read_params_npz, write_obj, write_params_json, write_params_npz, write_ply)
from fml_taichi.model.params import FaceParams


def grid(n=5):
    """An n x n vertex grid in the z = 0 plane (counter-clockwise from +z), with colours and UVs."""
    t = np.linspace(0.0, 1.0, n)
    y, x = np.meshgrid(t, t, indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), 0.1 * np.sin(3 * x.ravel())], -1) * 100.0
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    tri = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    colors = np.stack([x.ravel(), y.ravel(), 1 - x.ravel()], -1)
    uvs = np.stack([x.ravel(), y.ravel()], -1) * 0.8 + 0.1
    return v, tri.astype(np.int32), colors, uvs


def test_obj_with_vertex_colours_reads_back(tmp_path):
    v, t, c, _ = grid()
    paths = write_obj(tmp_path / "m.obj", v, t, colors=torch.as_tensor(c))
    assert sorted(os.path.basename(p) for p in paths) == ["m.mtl", "m.obj"]
    assert sorted(os.listdir(tmp_path)) == ["m.mtl", "m.obj"]
    # trimesh prefers the MTL material over vertex colours; without it the colours are there.
    m = trimesh.load(tmp_path / "m.obj", process=False, skip_materials=True)
    np.testing.assert_allclose(m.vertices, v, atol=1e-5)
    np.testing.assert_array_equal(m.faces, t)
    np.testing.assert_array_equal(m.visual.vertex_colors[:, :3], np.round(c * 255).astype(np.uint8))
    assert "usemtl face" in (tmp_path / "m.obj").read_text()
    assert "map_Kd" not in (tmp_path / "m.mtl").read_text()


def test_obj_with_uvs_bakes_a_texture_referenced_by_the_mtl(tmp_path):
    v, t, c, uv = grid()
    paths = write_obj(tmp_path / "m.obj", v, t, colors=c, uvs=uv, texture_size=64)
    assert sorted(os.path.basename(p) for p in paths) == ["m.mtl", "m.obj", "m.png"]
    m = trimesh.load(tmp_path / "m.obj", process=False)
    np.testing.assert_allclose(m.vertices, v, atol=1e-5)
    np.testing.assert_array_equal(m.faces, t)
    np.testing.assert_allclose(m.visual.uv, uv, atol=1e-6)
    assert m.visual.material.image.size == (64, 64)
    # The texture at each vertex's UV holds that vertex's colour (OBJ UVs: v up, row 0 at the top).
    tex = load_image(tmp_path / "m.png")
    px = np.clip(np.round(uv[:, 0] * 64 - 0.5), 0, 63).astype(int)
    py = np.clip(np.round((1 - uv[:, 1]) * 64 - 0.5), 0, 63).astype(int)
    assert np.abs(tex[py, px] - c).max() < 0.04


def test_bake_fills_covered_texels_and_dilates_a_border():
    uv = np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])
    tri = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    col = np.tile([[0.2, 0.4, 0.6]], (4, 1))
    tex = bake_vertex_colors(uv, tri, col, size=32, dilate=2)
    np.testing.assert_allclose(tex[16, 16], [0.2, 0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(tex[16, 6], [0.2, 0.4, 0.6], atol=1e-6)  # grown 1-2 texels past the edge
    np.testing.assert_array_equal(tex[16, 2], [0, 0, 0])  # far outside: untouched
    np.testing.assert_array_equal(tex[2, 16], [0, 0, 0])


def test_obj_with_explicit_texture(tmp_path):
    v, t, _, uv = grid()
    texture = np.zeros((8, 16, 3), np.float32)
    texture[:, :8, 0] = 1.0
    write_obj(tmp_path / "t.obj", v, t, uvs=uv, texture=texture)
    np.testing.assert_array_equal(load_image(tmp_path / "t.png"), texture)
    assert "map_Kd t.png" in (tmp_path / "t.mtl").read_text()


def test_ply_binary_with_colours_reads_back(tmp_path):
    v, t, c, _ = grid()
    write_ply(tmp_path / "m.ply", v, t, colors=c)
    head = (tmp_path / "m.ply").read_bytes()[:200]
    assert b"format binary_little_endian 1.0" in head and b"property uchar red" in head
    m = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_allclose(m.vertices, v, rtol=1e-6, atol=1e-4)  # float32 on disk
    np.testing.assert_array_equal(m.faces, t)
    np.testing.assert_array_equal(m.visual.vertex_colors[:, :3], np.round(c * 255).astype(np.uint8))
    write_ply(tmp_path / "plain.ply", v, t)
    m2 = trimesh.load(tmp_path / "plain.ply", process=False)
    np.testing.assert_array_equal(m2.faces, t)


@pytest.mark.parametrize("kwargs, word", [
    (dict(vertices=np.zeros((0, 3)), triangles=np.zeros((0, 3), np.int32)), "vertices"),
    (dict(triangles=np.array([[0, 1, 25]])), "triangles"),
    (dict(triangles=np.array([[0.0, 1.0, 2.0]])), "triangles"),
    (dict(vertices=np.full((25, 3), np.nan)), "vertices"),
    (dict(colors=np.zeros((24, 3))), "colors"),
])
def test_mesh_writers_reject_bad_input_and_write_nothing(tmp_path, kwargs, word):
    v, t, c, _ = grid()
    args = dict(vertices=v, triangles=t, colors=c)
    args.update(kwargs)
    for writer, name in ((write_obj, "x.obj"), (write_ply, "x.ply")):
        with pytest.raises(ValueError, match=word):
            writer(tmp_path / name, **args)
    assert os.listdir(tmp_path) == []


def test_obj_uv_and_texture_argument_errors(tmp_path):
    v, t, c, uv = grid()
    with pytest.raises(ValueError, match="texture"):
        write_obj(tmp_path / "a.obj", v, t, texture=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="uvs"):
        write_obj(tmp_path / "a.obj", v, t, uvs=uv)  # nothing to bake a texture from
    with pytest.raises(ValueError, match="uvs"):
        write_obj(tmp_path / "a.obj", v, t, colors=c, uvs=uv[:3])


def params(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = dict(shape=(batch, 4), expression=(batch, 3), reflectance=(batch, 4), delta_geometry=(batch, 2),
                 delta_reflectance=(batch, 2), rotation=(batch, 3), translation=(batch, 3), light=(batch, 9, 3))
    return FaceParams(**{k: torch.randn(*s, generator=g) for k, s in sizes.items()})


def test_params_json(tmp_path):
    p = params()
    extra = {"image": "face.png", "step": np.int64(7), "err": np.float32(0.25), "k": torch.tensor([1.0, 2.0])}
    write_params_json(tmp_path / "p.json", p, extra)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["shapes"]["light"] == [2, 9, 3]
    for name, t in p.as_dict().items():
        np.testing.assert_allclose(np.array(doc["params"][name]), t.numpy(), rtol=1e-6)
    assert doc["extra"] == {"image": "face.png", "step": 7, "err": 0.25, "k": [1.0, 2.0]}
    with pytest.raises(ValueError, match="extra"):
        write_params_json(tmp_path / "q.json", p, {"bad": object()})
    with pytest.raises(ValueError, match="params"):
        write_params_json(tmp_path / "q.json", {"shape": 1})
    assert not (tmp_path / "q.json").exists()


def test_params_npz_round_trip(tmp_path):
    p = params()
    write_params_npz(tmp_path / "p.npz", p, {"note": "test", "loss": [1.5, 0.5]})
    q, extra = read_params_npz(tmp_path / "p.npz")
    for name, t in p.as_dict().items():
        assert torch.equal(getattr(q, name), t), name
    assert extra == {"note": "test", "loss": [1.5, 0.5]}
    # Any file name works (numpy would append ".npz" to a path without it).
    write_params_npz(tmp_path / "params.bin", p)
    assert read_params_npz(tmp_path / "params.bin")[1] == {}
    assert sorted(os.listdir(tmp_path)) == ["p.npz", "params.bin"]


def test_read_params_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_params_npz(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        read_params_npz(tmp_path / "garbage.npz")
    write_params_npz(tmp_path / "ok.npz", params())
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        read_params_npz(tmp_path / "cut.npz")
    arrays = {f"param_{k}": t.numpy() for k, t in params().as_dict().items() if k != "light"}
    np.savez(tmp_path / "nolight.npz", format=np.array("fml_taichi.face_params"), **arrays)
    with pytest.raises(ValueError, match="light"):
        read_params_npz(tmp_path / "nolight.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        read_params_npz(tmp_path / "other.npz")


def test_failed_writes_leave_no_file_and_no_temp_file(tmp_path, monkeypatch):
    v, t, c, uv = grid()
    write_ply(tmp_path / "keep.ply", v, t, colors=c)
    before = (tmp_path / "keep.ply").read_bytes()

    # The temp file is complete when the final rename fails: the worst moment to die.
    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    writers = [
        lambda: write_ply(tmp_path / "keep.ply", v[::-1].copy(), t, colors=c),
        lambda: write_obj(tmp_path / "m.obj", v, t, colors=c, uvs=uv, texture_size=16),
        lambda: write_params_json(tmp_path / "p.json", params()),
        lambda: write_params_npz(tmp_path / "p.npz", params()),
        lambda: plot_curves(tmp_path / "c.png", {"a": [1.0, 2.0]}),
    ]
    for w in writers:
        with pytest.raises(OSError, match="simulated"):
            w()
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["keep.ply"]
    assert (tmp_path / "keep.ply").read_bytes() == before


def test_obj_failing_midway_removes_its_companion_files(tmp_path, monkeypatch):
    v, t, c, uv = grid()
    import fml_taichi.io.exports as exports

    real = exports.write_text

    def fail_on_obj(path, text):
        if str(path).endswith(".obj"):
            raise RuntimeError("crash while writing the OBJ (simulated)")
        real(path, text)

    monkeypatch.setattr(exports, "write_text", fail_on_obj)
    with pytest.raises(RuntimeError, match="simulated"):
        write_obj(tmp_path / "m.obj", v, t, colors=c, uvs=uv, texture_size=16)
    assert os.listdir(tmp_path) == []  # the PNG and MTL written before it are gone too


def test_overlay_blends_only_inside_the_mask():
    img = np.full((4, 5, 3), 0.2, np.float32)
    ren = np.full((4, 5, 3), 1.0, np.float32)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    out = overlay(img, torch.as_tensor(ren), torch.as_tensor(mask), alpha=0.5)
    np.testing.assert_allclose(out[2, 2], 0.6)
    np.testing.assert_allclose(out[0, 0], 0.2)
    with pytest.raises(ValueError, match="mask"):
        overlay(img, ren, mask[:3])
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, ren, mask, alpha=1.5)


def test_compose_figure_layout_and_labels():
    a = np.zeros((60, 80, 3), np.float32)
    b = np.ones((30, 20, 3), np.float32) * 0.5  # rescaled to height 60 -> width 40
    fig = compose_figure([("input", a), ("final", b), ("shading", np.zeros((60, 80), np.float32))], gap=4,
                         label_height=20)
    assert fig.shape == (4 + 20 + 60 + 4, 4 + 80 + 4 + 40 + 4 + 80 + 4, 3)
    label = fig[4:24, 4:84]
    assert label.min() < 0.3 and label.max() == 1.0  # dark text on white
    np.testing.assert_allclose(fig[24:84, 4:84], 0.0)  # the first panel sits under its label
    np.testing.assert_allclose(fig[30:80, 92:128], 0.5, atol=0.01)
    rows = compose_figure([("x", a)] * 5, columns=2, gap=0, label_height=20)
    assert rows.shape == (3 * 80, 160, 3)
    for bad in ([], [("x", np.zeros((5, 5, 4)))], [(1, a)], [("x", np.full((5, 5, 3), np.inf))]):
        with pytest.raises(ValueError, match="panels"):
            compose_figure(bad)


def test_plots_draw_series_in_their_colours(tmp_path):
    steps = np.arange(50)
    img = plot_curves(tmp_path / "c.png", {"loss": list(np.exp(-steps / 10)), "val": (steps[::5], steps[::5] / 50.0),
                                           "diverged": [float("nan")]}, title="t", xlabel="step", ylabel="loss")
    back = load_image(tmp_path / "c.png")
    assert back.shape == img.shape == (440, 720, 3)
    blue, orange = np.array([31, 119, 180]) / 255, np.array([255, 127, 14]) / 255
    assert (np.abs(back - blue).max(-1) < 0.02).sum() > 100  # the first series' line
    assert (np.abs(back - orange).max(-1) < 0.02).sum() > 100
    bars = plot_bars(tmp_path / "b.png", {"geometry": {"base": 2.0, "final": 1.5}, "photo": {"base": 0.5}},
                     title="errors", ylabel="mm")
    assert (np.abs(bars - blue).max(-1) < 0.02).sum() > (np.abs(bars - orange).max(-1) < 0.02).sum() > 500
    for bad in ({}, {"a": [float("nan")]}):
        with pytest.raises(ValueError, match="series"):
            plot_curves(tmp_path / "x.png", bad)
    with pytest.raises(ValueError, match="groups"):
        plot_bars(tmp_path / "x.png", {"g": {"a": float("inf")}})
    assert sorted(os.listdir(tmp_path)) == ["b.png", "c.png"]
