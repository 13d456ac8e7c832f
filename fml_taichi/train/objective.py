"""What each training stage minimises: both are :func:`fml_taichi.losses.total_loss`.

Stage 1 (the paper's pretraining "up to the base level") fits the encoder with the base level only
(``levels="base"``): the correctives are frozen at F(0) = 0 then, so the final level equals the base.
Stage 2 minimises the full E_total (Eq. 6), both levels. Optionally (``losses.final_landmarks`` > 0,
not in the paper) E_sparse is also evaluated on the final level: on a CPU budget the geometry
correctives otherwise learn smooth warps that trade geometric accuracy for colour agreement.
Landmarks are detector output, not ground truth, so the training stays self-supervised: a batch
holds images, detected landmarks and confidences only.

The one exception, off unless a config asks for it (``losses.geometry_teacher`` > 0, not the paper):
in stage 2 E_teacher (:mod:`fml_taichi.losses.teacher`) pulls the final level's face region towards
the true synthetic mesh (``batch["gt_vertices"]``), weighted like any other term of E_total.
"""
from __future__ import annotations

import torch

from ..losses import total_loss
from ..losses.teacher import geometry_teacher_term


def stage_loss(stage: int, model_out, params, face_model, batch: dict, intrinsics, weights,
               impl: str = "taichi", final_landmarks: float = 0.0, geometry_teacher: float = 0.0,
               region: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss dict of ``stage`` (1 or 2) for one batch (``image``, ``landmarks``, ``landmark_conf``;
    ``gt_vertices`` too when ``geometry_teacher`` > 0, with the scored ``region`` [N] bool)."""
    if stage not in (1, 2):
        raise ValueError(f"stage: expected 1 or 2, got {stage!r}")
    out = total_loss(model_out, params, face_model, batch["image"], batch["landmarks"], batch["landmark_conf"],
                     intrinsics, weights, impl=impl, levels="base" if stage == 1 else "both",
                     final_landmarks=final_landmarks if stage == 2 else 0.0)
    if stage == 2 and geometry_teacher > 0:
        if "gt_vertices" not in batch or region is None:
            raise ValueError("geometry_teacher: the batch needs 'gt_vertices' and the call a region")
        out["teacher"] = geometry_teacher_term(model_out.final_geometry, batch["gt_vertices"], region).mean()
        out["total"] = out["total"] + geometry_teacher * out["teacher"]
    return out
