"""Inverse rendering demo: recover a mesh's pose and lighting from one image of it.

Nothing here is face-specific: a procedural mesh (a bumpy, striped sphere) is rendered with the
rasterizer at a known pose and SH lighting; then, starting from a wrong pose and flat light, pose and
light are recovered by gradient descent on the photometric loss (Eq. 9) through
:func:`fml_taichi.ops.image_formation`. The figure ``target | start | recovered | |error|``
shows the fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..common.camera import default_intrinsics
from ..ops.image_formation import image_formation
from ..ops.render import render as render_mesh
from ..ops.transform import euler_to_matrix
from ..reference.meshes import uv_sphere

AMBIENT = 1.0 / 0.282095  # gamma_0 giving irradiance 1 everywhere (kernels/shading.py)


@dataclass
class DemoScene:
    vertices: torch.Tensor  # [1, N, 3] model space (mm)
    reflectance: torch.Tensor  # [1, N, 3]
    triangles: torch.Tensor  # [F, 3] int32
    intrinsics: torch.Tensor  # [4]
    size: int


def make_scene(size: int = 160, radius_mm: float = 70.0) -> DemoScene:
    """A sphere with low-frequency bumps and coloured stripes, so that pose is observable."""
    v, tris = uv_sphere(48, 96, radius=1.0, dtype=torch.float64)
    x, y, z = v.unbind(-1)
    lon, lat = torch.atan2(z, x), torch.asin(y.clamp(-1, 1))
    bumps = 1.0 + 0.12 * torch.sin(3 * lon) * torch.cos(2 * lat) + 0.08 * torch.cos(5 * lat)
    vertices = (v * bumps[:, None] * radius_mm).float()
    stripes = 0.5 + 0.5 * torch.sin(6 * lon)[:, None]
    bands = 0.5 + 0.5 * torch.cos(8 * lat)[:, None]
    warm, cool = torch.tensor([0.85, 0.45, 0.25]), torch.tensor([0.20, 0.55, 0.80])
    refl = (stripes * warm + (1 - stripes) * cool) * (0.6 + 0.4 * bands)
    return DemoScene(vertices[None].contiguous(), refl.float()[None].contiguous(), tris,
                     default_intrinsics(size), size)


def true_light() -> torch.Tensor:
    """Ambient plus a key light from the upper left (camera frame: y down, z forward)."""
    light = torch.zeros(1, 9, 3)
    light[0, 0] = AMBIENT * 0.8
    light[0, 1] = torch.tensor([-0.9, -0.8, -0.7])  # (1,-1) ~ y: negative = brighter at the top
    light[0, 3] = torch.tensor([-0.6, -0.6, -0.5])  # (1, 1) ~ x: brighter on the left
    light[0, 2] = torch.tensor([-0.5, -0.5, -0.5])  # (1, 0) ~ z: brighter facing the camera
    return light


def render(scene: DemoScene, rotation, translation, light, background=(0.08, 0.08, 0.1)) -> torch.Tensor:
    """A rasterized, SH-shaded image [1, H, W, 3] (used for the target and the figure)."""
    with torch.no_grad():
        return render_mesh(scene.vertices, scene.triangles, scene.intrinsics, scene.size, scene.size,
                           rotation=rotation, translation=translation, reflectance=scene.reflectance, light=light,
                           background=background).image


def fit(scene: DemoScene, target: torch.Tensor, rotation, translation, light, steps: int = 150,
        lr: float = 0.02, progress=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Gradient descent (Adam) on rotation, translation and light through ``image_formation``."""
    rot = rotation.clone().requires_grad_()
    trans = translation.clone().requires_grad_()
    lit = light.clone().requires_grad_()
    # Translation is in mm and light in irradiance units: scale their steps so one lr fits all.
    opt = torch.optim.Adam([{"params": [rot], "lr": lr}, {"params": [trans], "lr": lr * 40},
                            {"params": [lit], "lr": lr * 2}])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = image_formation(scene.vertices, scene.reflectance, scene.triangles, rot, trans,
                              scene.intrinsics, lit, target)
        # Normalise by the visible fraction: the loss is a mean over the N vertices (Eq. 9), and a pose
        # that hides vertices must not win by hiding them.
        loss = out.loss.sum() / out.visible.mean().clamp_min(1e-3)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            progress.update(1)
    return rot.detach(), trans.detach(), lit.detach(), losses


def error_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a - b).abs().mul(2).clamp(0, 1)[0].numpy()


def rotation_error_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle of R_a^T R_b in degrees."""
    r = euler_to_matrix(a)[0].T @ euler_to_matrix(b)[0]
    return math.degrees(math.acos(float(((torch.trace(r) - 1) / 2).clamp(-1, 1))))
