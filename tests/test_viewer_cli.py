"""``fml-taichi view``: the headless path end to end (real PNGs), its sources, and its error messages.

Tests that draw skip with the viewer's own message where GGUI has no Vulkan driver; the message
test simulates that absence, so it runs everywhere.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from fml_taichi.apps import cli
from fml_taichi.viewer.modes import SIGMA_ASSUMED, SIGMA_FROM_FACES, principal_modes
from fml_taichi.viewer.demo_model import DEMO_CENTRES
from fml_taichi.viewer.ggui import VULKAN_HINT, ggui_status
from fml_taichi.io.exports import write_params_npz
from fml_taichi.io.images import load_image
from fml_taichi.model import FaceParams, default_face_model

N_VERTICES = 5000
C_DEMO = len(DEMO_CENTRES)


@pytest.fixture(scope="module")
def ggui():
    ok, reason = ggui_status()
    if not ok:
        pytest.skip(reason)


def _view(*args):
    return cli.main(["view", "--vertices", str(N_VERTICES), "--size", "64", "--steps", "3", *map(str, args)])


def test_without_vulkan_the_viewer_says_so(tmp_path):
    # Point the Vulkan loader at no driver at all: what a machine without mesa-vulkan-drivers sees.
    env = dict(os.environ, VK_ICD_FILENAMES=str(tmp_path / "none.json"), VK_DRIVER_FILES=str(tmp_path / "none.json"),
               OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, "-m", "fml_taichi.apps.cli", "view", "--headless", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert VULKAN_HINT in proc.stderr
    assert not os.listdir(tmp_path)  # nothing half-written


def test_headless_writes_mode_strips(ggui, tmp_path, capsys):
    assert _view("--demo-correctives", "--headless", "--out", tmp_path, "--modes", 2) == 0
    assert "wrote" in capsys.readouterr().out
    files = set(os.listdir(tmp_path))
    assert {"overview.png", "corrective_modes.png", "modes.json", "geometry_mode_1.png", "geometry_mode_2.png",
            "reflectance_mode_1.png", "reflectance_mode_2.png"} <= files
    meta = json.loads((tmp_path / "modes.json").read_text())
    assert meta["sigmas"] == [-3.0, 0.0, 3.0]
    assert meta["geometry"]["count"] == C_DEMO and meta["geometry"]["sigma_source"] == SIGMA_ASSUMED
    sv = meta["geometry"]["singular_values"]
    assert sv[0] >= sv[1] > 0
    for kind in ("geometry", "reflectance"):
        strip = load_image(str(tmp_path / f"{kind}_mode_1.png"))
        third = strip.shape[1] // 3
        left, mid, right = strip[:, :third], strip[:, third:2 * third], strip[:, 2 * third:3 * third]
        assert np.abs(left - right).max() > 0.1, kind  # -3 and +3 sigma differ
        assert np.abs(left - mid).max() > 0.05, kind
    assert meta["views"] == {"geometry": ["shading", "corrective"], "reflectance": ["reflectance"]}
    grid = load_image(str(tmp_path / "corrective_modes.png"))
    assert grid.shape[0] >= 6 * 64  # 2 geometry strips of 2 rows, 2 reflectance strips of 1 row
    # Geometry strips: the second row colours the offset (red out / blue in): its outer panels are
    # far more coloured than the shading row's grey.
    strip = load_image(str(tmp_path / "geometry_mode_1.png"))
    half = strip.shape[0] // 2
    chroma = lambda im: float((im.max(-1) - im.min(-1)).mean())  # noqa: E731
    assert chroma(strip[half:]) > chroma(strip[:half]) + 0.02


def test_base_model_alone_has_no_corrective_strips(ggui, tmp_path, capsys):
    assert _view("--untrained", "--headless", "--out", tmp_path, "--modes", 2) == 0
    assert "no geometry correctives" in capsys.readouterr().out
    meta = json.loads((tmp_path / "modes.json").read_text())
    assert meta["geometry"]["count"] == 0 and meta["files"] == ["overview.png"]


def test_reconstruction_sets_start_face_and_sigmas(ggui, tmp_path):
    fm = default_face_model(n_vertices=N_VERTICES)
    g = torch.Generator().manual_seed(0)
    p = FaceParams.zeros(6, fm.m_shape, fm.m_expression, fm.m_reflectance, C_DEMO, C_DEMO)
    p.delta_geometry = torch.randn(6, C_DEMO, generator=g) * 3.0
    p.delta_reflectance = torch.randn(6, C_DEMO, generator=g)
    p.translation[:, 2] = 500.0
    p.light[:, 0] = 2.0
    path = tmp_path / "faces.npz"
    write_params_npz(path, p)
    out = tmp_path / "out"
    assert _view("--demo-correctives", "--reconstruction", path, "--index", 2, "--headless", "--out", out,
                 "--modes", 1) == 0
    meta = json.loads((out / "modes.json").read_text())
    assert meta["geometry"]["sigma_source"] == SIGMA_FROM_FACES
    assert meta["geometry"]["sigma"][0] > 0.5  # the spread of the given faces, not the unit default
    assert _view("--demo-correctives", "--reconstruction", path, "--index", 6, "--headless", "--out", out) == 1


def _tiny_checkpoint(path, theta_g, theta_r):
    from fml_taichi.nets.checkpoint import save_checkpoint
    from fml_taichi.nets.config import from_dict
    from fml_taichi.nets.models import build_networks, face_model_from_spec, face_model_spec

    cfg = from_dict({"model": {"n_vertices": N_VERTICES, "n_correctives_geometry": theta_g.shape[1],
                               "n_correctives_reflectance": theta_r.shape[1]},
                     "encoder": {"input_size": 32, "width": 0.5, "n_features": 64}})
    spec = face_model_spec(cfg.model)
    ml, enc = build_networks(cfg, face_model_from_spec(spec))
    with torch.no_grad():
        ml.geometry_corrective.theta.copy_(theta_g)
        ml.reflectance_corrective.theta.copy_(theta_r)
    save_checkpoint(path, config=cfg.to_dict(), face_model_spec=spec, encoder=enc.state_dict(),
                    multilevel=ml.state_dict(), step=0)


def test_checkpoint_correctives_are_analysed(ggui, tmp_path):
    n = default_face_model(n_vertices=N_VERTICES).n_vertices  # decimation gives about N_VERTICES
    g = torch.Generator().manual_seed(3)
    theta_g = torch.randn(3 * n, 4, generator=g) * torch.tensor([0.5, 2.0, 0.1, 1.0])
    theta_r = torch.randn(3 * n, 3, generator=g) * 0.01
    ck = tmp_path / "checkpoint.pt"
    _tiny_checkpoint(ck, theta_g, theta_r)
    out = tmp_path / "out"
    assert _view("--checkpoint", ck, "--headless", "--out", out, "--modes", 2) == 0
    meta = json.loads((out / "modes.json").read_text())
    want = principal_modes(theta_g).singular_values[:2].numpy()
    np.testing.assert_allclose(meta["geometry"]["singular_values"], want, rtol=1e-4)
    assert meta["reflectance"]["count"] == 3
    assert meta["geometry"]["sigma_source"] == SIGMA_ASSUMED
    assert {"geometry_mode_2.png", "reflectance_mode_2.png"} <= set(os.listdir(out))
    # The checkpoint's own encoder regresses held-out synthetic faces: their spread sets the sigmas.
    assert _view("--checkpoint", ck, "--regress-synthetic", 4, "--headless", "--out", out, "--modes", 1) == 0
    meta = json.loads((out / "modes.json").read_text())
    assert meta["geometry"]["sigma_source"] == SIGMA_FROM_FACES


@pytest.mark.parametrize("args, message", [
    (["--headless"], "--headless needs --out"),
    (["--out", "x"], "only used with --headless"),
    (["--headless", "--out", "x", "--modes", "-1"], "--modes"),
    (["--headless", "--out", "x", "--steps", "1"], "--steps"),
    (["--headless", "--out", "x", "--sigma-range", "0"], "--sigma-range"),
    (["--untrained", "--headless", "--out", "x", "--regress-synthetic", "4"], "needs --checkpoint"),
])
def test_bad_arguments_are_named(args, message, capsys):
    assert cli.main(["view", *args]) == 1
    assert message in capsys.readouterr().err


def test_missing_files_are_named(ggui, tmp_path, capsys):
    assert _view("--model", tmp_path / "nope.npz", "--headless", "--out", tmp_path) == 1
    assert "nope.npz" in capsys.readouterr().err
    assert _view("--checkpoint", tmp_path / "nope.pt", "--headless", "--out", tmp_path) == 1
    assert "nope.pt" in capsys.readouterr().err
    assert _view("--reconstruction", tmp_path / "nope.npz", "--headless", "--out", tmp_path) == 1
    assert "nope.npz" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (Debian: xvfb xauth)")
def test_interactive_window_runs_under_xvfb(ggui, tmp_path):
    # The visible-window path (events, GUI, show) for a few frames on a virtual X display.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1024x768x24", sys.executable, "-m", "fml_taichi.apps.cli", "view",
           "--demo-correctives", "--vertices", str(N_VERTICES), "--width", "640", "--height", "400", "--frames", "5"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "keys:" in proc.stdout


def test_interactive_without_display_says_so(ggui, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli.main(["view"]) == 1
    assert "--headless" in capsys.readouterr().err


def test_command_view_names_match_the_scene():
    from fml_taichi.apps import view_cmd
    from fml_taichi.viewer import scene as view_scene

    assert view_cmd.VIEWS == view_scene.VIEWS


def test_importing_the_command_stays_light():
    code = "import sys, fml_taichi.apps.view_cmd; print('taichi' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["False", "False"]
