"""The generic differentiable-rendering examples: their cores make progress in a few iterations, and
their command lines write the promised JSON and figure (or fail cleanly on bad input)."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

import fit_camera_pose  # noqa: E402
import fit_mesh_silhouettes  # noqa: E402


def test_pose_fit_core_reduces_the_silhouette_loss_and_the_angle_error():
    p = fit_camera_pose.make_problem(size=64)
    rot, trans, history = fit_camera_pose.fit(p, iterations=40)
    loss = lambda r, t: float(((fit_camera_pose.silhouette(p, r, t, None) - p["target"]) ** 2).mean())  # noqa: E731
    with torch.no_grad():
        assert loss(rot, trans) < 0.7 * loss(p["r_start"], p["t_start"])
    assert history[0]["angle_error_deg"] == pytest.approx(30.0, abs=1e-3)
    assert history[-1]["angle_error_deg"] < 20.0


def test_mesh_fit_core_reduces_the_silhouette_loss_and_raises_iou():
    p = fit_mesh_silhouettes.make_problem(size=48, level=2)
    verts, history = fit_mesh_silhouettes.fit(p, iterations=30, log_every=29)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["iou"] > history[0]["iou"] + 0.1


@pytest.mark.parametrize("module, keys", [
    (fit_camera_pose, {"angle_error_deg_start", "angle_error_deg_final", "seconds"}),
    (fit_mesh_silhouettes, {"iou_start", "iou_final"}),
])
def test_example_cli_writes_json_and_figure(tmp_path, module, keys, capsys):
    out = tmp_path / "result.json"
    assert module.main(["--json", str(out), "--iterations", "2", "--size", "32"]) == 0
    result = json.loads(out.read_text())
    assert keys <= set(result)
    assert (tmp_path / "result.png").stat().st_size > 1000
    assert module.main(["--json", str(tmp_path / "bad.json"), "--iterations", "0"]) == 2
    assert "--iterations" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def _docs_snippet(iterations: int) -> float:
    """Run the pose-fitting code of docs/differentiable_rendering.md for ``iterations`` steps; its last loss."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "differentiable_rendering.md")) as f:
        code = f.read().split("```python\n", 1)[1].split("```", 1)[0]
    assert "range(300)" in code
    namespace: dict = {}
    exec(code.replace("range(300)", f"range({iterations})").replace("print(", "(lambda *a: None)("), namespace)
    return float(namespace["loss"].detach())


def test_docs_pose_snippet_runs_and_its_loss_falls():
    assert _docs_snippet(25) < 0.5 * _docs_snippet(1)
