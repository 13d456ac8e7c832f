"""The bundled inverse-rendering demo recovers pose and light through the Taichi kernels."""
import json
import os

import torch

from fml_taichi.recon import inverse_render as demo
from fml_taichi.apps.cli import main
from fml_taichi.common.camera import DEFAULT_DISTANCE_MM


def test_fit_recovers_pose_and_light():
    scene = demo.make_scene(96)
    true_rot = torch.tensor([[0.2, -0.3, 0.1]])
    true_trans = torch.tensor([[5.0, -4.0, DEFAULT_DISTANCE_MM]])
    light = demo.true_light()
    target = demo.render(scene, true_rot, true_trans, light).contiguous()
    start_light = torch.zeros(1, 9, 3)
    start_light[0, 0] = demo.AMBIENT * 0.5
    rot, trans, lit, losses = demo.fit(scene, target, torch.zeros(1, 3),
                                       torch.tensor([[0.0, 0.0, DEFAULT_DISTANCE_MM + 30]]), start_light, steps=120)
    assert demo.rotation_error_deg(torch.zeros(1, 3), true_rot) > 15
    assert demo.rotation_error_deg(rot, true_rot) < 2.0
    assert float((trans - true_trans).norm()) < 6.0
    assert losses[-1] < 0.35 * losses[0]
    fitted = demo.render(scene, rot, trans, lit)
    assert float((fitted - target).abs().mean()) < 0.02


def test_demo_command_writes_figure_and_summary(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "5", "--size", "64"]) == 0
    for name in ("before_after.png", "loss.png", "summary.json"):
        assert os.path.getsize(out / name) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss_final"] < summary["loss_start"]
