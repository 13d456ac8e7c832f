"""Validation during training: base level vs final level on a fixed held-out set.

Metrics (definitions from :mod:`fml_taichi.eval.metrics`, the evaluation issue's JSON keys):

* ``photo_base`` / ``photo_final``: mean RGB distance between the rendered reconstruction and the
  input image over the face pixels (rendered mask, z-buffered, back faces culled, intersected with
  the ground-truth face mask where the set has one), per image, averaged;
* ``geom_mm_base`` / ``geom_mm_final`` (+ ``geom_sd_*``): similarity-aligned point-to-surface distance
  (mm) of the reconstructed mesh to the ground-truth mesh, the mean of the per-mesh means and their
  SD over meshes; only on synthetic data (needs ``gt_vertices``);
* ``nme_base`` / ``nme_final``: inter-ocular normalised landmark error against ``gt_landmarks`` (or
  the input landmarks when there is no ground truth).

Ground truth is read here only; the training losses never see it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..eval.metrics import geometric_error, landmark_nme, photometric_error
from ..kernels.rasterize import rasterize, shade_image
from ..losses.terms import landmark_vertices
from ..reference.image_formation import euler_to_matrix, project, sh_basis, vertex_normals

METRIC_KEYS = ("n", "geom_mm_base", "geom_mm_final", "geom_sd_base", "geom_sd_final", "photo_base",
               "photo_final", "nme_base", "nme_final")


def render_reconstruction(vertices, reflectance, params, triangles, intrinsics, size: int):
    """Rendered image [B, S, S, 3] (black background) and its face mask [B, S, S] of one level."""
    rot = euler_to_matrix(params.rotation)
    v_cam = (torch.bmm(vertices, rot.transpose(1, 2)) + params.translation.unsqueeze(1)).contiguous()
    normals = vertex_normals(v_cam, triangles)
    colours = (reflectance * torch.bmm(sh_basis(normals), params.light)).clamp(0.0, 1.0)
    raster = rasterize(v_cam, triangles, intrinsics, size, size, cull_backfaces=True)
    return shade_image(raster, triangles, colours.contiguous()), raster.mask


def _landmarks_2d(geometry, params, face_model, detected, intrinsics):
    idx = landmark_vertices(geometry, params, face_model, detected, intrinsics, sliding=True)
    pts = torch.gather(geometry, 1, idx.long().unsqueeze(-1).expand(-1, -1, 3))
    rot = euler_to_matrix(params.rotation)
    v_cam = torch.bmm(pts, rot.transpose(1, 2)) + params.translation.unsqueeze(1)
    return project(v_cam, intrinsics)


@torch.no_grad()
def batch_metrics(params, out, face_model, batch: dict, intrinsics) -> dict[str, list[float]]:
    """Per-image metric lists for one batch (keys without ``n``; geometry only with ``gt_vertices``)."""
    image = batch["image"]
    size = image.shape[1]
    gt_mask = batch.get("face_mask")
    res: dict[str, list[float]] = {}
    target_lm = batch.get("gt_landmarks", batch["landmarks"])
    for level in ("base", "final"):
        geo = getattr(out, f"{level}_geometry").contiguous()
        refl = getattr(out, f"{level}_reflectance").contiguous()
        rendered, mask = render_reconstruction(geo, refl, params, face_model.triangles, intrinsics, size)
        if gt_mask is not None:
            mask = mask & gt_mask.bool()
        res[f"photo_{level}"] = photometric_error(rendered, image, mask).tolist()
        lm = _landmarks_2d(geo, params, face_model, batch["landmarks"], intrinsics)
        res[f"nme_{level}"] = landmark_nme(lm, target_lm).tolist()
        if "gt_vertices" in batch:
            errs = [geometric_error(geo[i], batch["gt_vertices"][i], face_model.triangles.long())
                    for i in range(geo.shape[0])]
            res[f"geom_mm_{level}"] = [e.mean for e in errs]
    return res


def summarize(per_image: dict[str, list[float]]) -> dict[str, float]:
    """Aggregate per-image lists into the metric keys (means; geometric SD over meshes)."""
    out: dict[str, float] = {}
    n = max((len(v) for v in per_image.values()), default=0)
    out["n"] = n
    for key in METRIC_KEYS[1:]:
        if key.startswith("geom_sd_"):
            vals = per_image.get("geom_mm_" + key[len("geom_sd_"):])
            out[key] = float(np.std(vals)) if vals else math.nan
            continue
        vals = [v for v in per_image.get(key, []) if math.isfinite(v)]
        out[key] = float(np.mean(vals)) if vals else math.nan
    return out


@torch.no_grad()
def evaluate_model(model, face_model, batches, intrinsics) -> dict[str, float]:
    """Run ``model`` (a FaceAutoencoder, put in eval mode here and restored) over ``batches``."""
    was_training = model.training
    model.eval()
    try:
        per_image: dict[str, list[float]] = {}
        for batch in batches:
            params, out = model(batch["image"])
            for k, v in batch_metrics(params, out, face_model, batch, intrinsics).items():
                per_image.setdefault(k, []).extend(v)
        return summarize(per_image)
    finally:
        model.train(was_training)
