"""Per-image analysis-by-synthesis: Adam on chosen parameters against E_total (Sec. 6 losses).

The one fitting loop of the project. Refinement of an encoder's answer (``reconstruct --refine N``,
:mod:`fml_taichi.recon.refine`) and the from-scratch fitting baseline of the evaluation
(``eval --method fit``, :class:`fml_taichi.eval.methods.FitMethod`) both call :func:`fit`; they differ
only in what is free, where it starts and the step sizes.

A caller gives ``evaluate(free) -> (ModelOutput, FaceParams)``, which builds the model output from the
dict of free tensors, so the same loop fits FaceParams fields, corrective coefficients against a fixed
Theta, or free per-vertex offsets.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..losses import total_loss
from ..model import FaceParams, ModelOutput
from ..reference.image_formation import SH_C0

__all__ = ["fit", "initial_pose", "initial_light"]


def fit(evaluate: Callable[[dict], tuple[ModelOutput, FaceParams]], free: dict[str, torch.Tensor], lr: dict,
        face_model, images: torch.Tensor, landmarks: torch.Tensor, landmark_conf: torch.Tensor,
        intrinsics: torch.Tensor, iterations: int, weights=None, impl: str = "taichi", keep_best: bool = False,
        bar=None, stage: str = "fit") -> dict[str, torch.Tensor]:
    """Minimise ``E_total`` over the tensors of ``free`` (fitted in place) for ``iterations`` Adam steps.

    Args:
        evaluate: ``free -> (ModelOutput, FaceParams)`` for the current iterate.
        free: name -> leaf tensor to optimise (``requires_grad`` is set here).
        lr: name -> Adam step size in that tensor's units (every name of ``free`` must have one).
        face_model, images, landmarks, landmark_conf, intrinsics, weights, impl: as for
            :func:`fml_taichi.losses.total_loss`.
        keep_best: evaluate once more after the last step and return the iterate with the lowest
            E_total (never worse than the start by that measure); otherwise the last iterate.
        bar: an optional tqdm bar, advanced once per step (``stage`` is shown in its postfix).

    Returns:
        name -> detached tensor of the returned iterate.
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations: expected a non-negative int, got {iterations!r}")
    missing = sorted(set(free) - set(lr))
    if missing:
        raise ValueError(f"lr: no step size for {missing}")
    for t in free.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [t], "lr": lr[k]} for k, t in free.items()])
    best_loss, best = float("inf"), None
    for it in range(iterations + (1 if keep_best else 0)):
        out, params = evaluate(free)
        loss = total_loss(out, params, face_model, images, landmarks, landmark_conf, intrinsics, weights,
                          impl=impl)["total"]
        value = float(loss.detach())
        if keep_best and value < best_loss:
            best_loss, best = value, {k: t.detach().clone() for k, t in free.items()}
        if it == iterations:  # keep_best's extra pass only scores the final iterate
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{value:.4g}")
    if best is not None:
        return best
    return {k: t.detach().clone() for k, t in free.items()}


def initial_pose(face_model, landmarks: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frontal rotation (0) and a translation placing the mean face on the landmarks: depth from the
    ratio of the model's to the image's eye-corner distance, x/y from the landmarks' centroid.

    landmarks [B, 68, 2] -> (rotation [B, 3], translation [B, 3]).
    """
    lm = face_model.mean_geometry[face_model.landmarks.long()]  # [68, 3]
    iod_mm = float((lm[36] - lm[45]).norm())
    iod_px = (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1).clamp_min(1.0)
    f, cx, cy = float(intrinsics[0]), float(intrinsics[2]), float(intrinsics[3])
    centre_mm = lm[17:].mean(0)  # inner face: unaffected by which jaw points were detected
    depth = f * iod_mm / iod_px  # distance of the eye line
    z = depth - float(lm[[36, 45], 2].mean()) + float(centre_mm[2])
    centre_px = landmarks[:, 17:].mean(1)
    x = (centre_px[:, 0] - cx) * z / f - float(centre_mm[0])
    y = (centre_px[:, 1] - cy) * z / f - float(centre_mm[1])
    t = torch.stack([x, y, z - float(centre_mm[2])], -1)
    return torch.zeros_like(t), t


def initial_light(images: torch.Tensor, face_model) -> torch.Tensor:
    """Ambient SH light [B, 9, 3] matching the mean image colour to the mean albedo (a rough start)."""
    albedo = face_model.mean_reflectance.mean(0).clamp_min(1e-3)
    level = images.mean(dim=(1, 2)) / albedo  # [B, 3]
    light = torch.zeros(images.shape[0], 9, 3, dtype=images.dtype)
    light[:, 0] = level.clamp(0.2, 3.0) / SH_C0
    return light
