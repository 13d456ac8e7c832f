"""Synthetic targets of known parameters for checking the losses (fit tests, weight calibration).

Renders the model with the same image formation the losses score (Eq. 5 shading, perspective camera)
through the z-buffer rasteriser, so a fit that recovers the parameters drives E_photo and E_sparse to
(almost) zero: the only mismatch is per-pixel interpolation versus per-vertex sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fml_taichi.common.camera import default_intrinsics
from fml_taichi.model.params import FaceParams
from fml_taichi.ops.projection import project
from fml_taichi.ops.render import render

#: Uniform unit irradiance in the SH convention of ``kernels/shading.py`` is gamma_0 = 1 / 0.282095.
UNIFORM_LIGHT = 1.0 / 0.28209479177387814


@dataclass
class SyntheticTarget:
    """image (B, H, W, 3), landmarks (B, L, 2) = exact projections of the model's landmark vertices,
    landmark_conf (B, L) ones, intrinsics (4,), the parameters used, and the mask of drawn pixels."""

    image: torch.Tensor
    landmarks: torch.Tensor
    landmark_conf: torch.Tensor
    intrinsics: torch.Tensor
    params: FaceParams
    mask: torch.Tensor


def frontal_light(batch: int, ambient: float = 0.8, frontal: float = 0.5, side: float = 0.15,
                  dtype=torch.float32) -> torch.Tensor:
    """(B, 9, 3) SH light: ambient plus a light from the camera (normals facing it have n_z < 0) and a
    little from the side, so shading varies across the face."""
    light = torch.zeros(batch, 9, 3, dtype=dtype)
    light[:, 0] = ambient * UNIFORM_LIGHT
    light[:, 2] = -frontal / 0.4886025119029199
    light[:, 3] = side / 0.4886025119029199
    return light


@torch.no_grad()
def render_target(model, params: FaceParams, size: int, background=(0.25, 0.3, 0.35),
                  intrinsics: torch.Tensor | None = None) -> SyntheticTarget:
    """Render ``model`` (a ``MultiLevelModel``) at ``params`` (final level) into ``size`` x ``size`` images.

    Pixels are shaded by the library's renderer (per-vertex Eq. 5 colours interpolated over the visible,
    back-face culled, z-buffered triangles); the background is a constant colour.
    """
    fm = model.face_model
    intr = default_intrinsics(size, dtype=fm.dtype) if intrinsics is None else intrinsics
    out = model(params)
    b = params.batch_size
    drawn = render(out.final_geometry, fm.triangles, intr, size, size, rotation=params.rotation,
                   translation=params.translation, reflectance=out.final_reflectance, light=params.light,
                   background=background)
    image = drawn.image.contiguous()
    landmarks = project(drawn.mesh.v_cam, intr)[:, fm.landmarks.long()].contiguous()
    conf = torch.ones(b, fm.landmarks.shape[0], dtype=fm.dtype)
    raster = drawn.raster
    return SyntheticTarget(image, landmarks, conf, intr, params, raster.mask)
