"""What each training stage minimises.

Stage 1 (the paper's pretraining "up to the base level") fits the encoder with the base level only:
``w_photo E_photo^b + E_sparse + w_reg E_std``. The correctives are frozen at F(0) = 0 then, so
the final level equals the base level; the regularisers of the correctives (E_smo, E_sta) are 0 and
E_ref/E_glo would only re-penalise the base reflectance that E_std already controls, so we skip
them and render once instead of twice (half the image-formation cost).

Stage 2 minimises the full E_total (Eq. 6) of :func:`fml_taichi.losses.total_loss`, both levels.
Optionally (``losses.final_landmarks`` > 0, not in the paper) the sparse landmark term is also
evaluated on the final level: without it the geometry correctives see only the photometric term,
which on a CPU budget learns smooth warps that trade geometric accuracy for colour agreement.
Landmarks are detector output, not ground truth, so the training stays self-supervised.

No term ever sees ground truth: a batch holds images, detected landmarks and confidences only.
"""
from __future__ import annotations

import torch

from . import terms
from .total import total_loss


def base_level_loss(model_out, params, face_model, image, landmarks, landmark_conf, intrinsics, weights,
                    backend: str = "taichi") -> dict[str, torch.Tensor]:
    """Stage-1 objective (see the module docstring); same keys as ``total_loss`` where they apply."""
    form = terms.ops(backend).image_formation
    base = form(model_out.base_geometry.contiguous(), model_out.base_reflectance.contiguous(),
                face_model.triangles, params.rotation.contiguous(), params.translation.contiguous(), intrinsics,
                params.light.contiguous(), image)
    sparse = terms.sparse_term(model_out.base_geometry, params, face_model, landmarks, landmark_conf, intrinsics,
                               max(image.shape[1], image.shape[2]), weights.landmark_reference_size,
                               weights.sliding_contour, backend)
    out = {
        "photo_base": base.loss.mean(),
        "sparse": sparse.mean(),
        "std": terms.std_term(params, face_model, weights.w_rstd, backend).mean(),
    }
    out["photo"] = out["photo_base"]
    out["data"] = out["sparse"] + weights.w_photo * out["photo"]
    out["reg"] = out["std"]
    out["total"] = out["data"] + weights.w_reg * out["reg"]
    return out


def stage_loss(stage: int, model_out, params, face_model, batch: dict, intrinsics, weights,
               backend: str = "taichi", final_landmarks: float = 0.0) -> dict[str, torch.Tensor]:
    """The loss dict of ``stage`` (1 or 2) for one batch (``image``, ``landmarks``, ``landmark_conf``).

    ``final_landmarks``: weight of E_sparse on the final level in stage 2 (key ``sparse_final``).
    """
    image, landmarks, conf = batch["image"], batch["landmarks"], batch["landmark_conf"]
    args = (model_out, params, face_model, image, landmarks, conf, intrinsics, weights)
    if stage == 1:
        return base_level_loss(*args, backend=backend)
    if stage != 2:
        raise ValueError(f"stage: expected 1 or 2, got {stage!r}")
    out = total_loss(*args, backend=backend)
    if final_landmarks > 0:
        sparse_final = terms.sparse_term(model_out.final_geometry, params, face_model, landmarks, conf, intrinsics,
                                         max(image.shape[1], image.shape[2]), weights.landmark_reference_size,
                                         weights.sliding_contour, backend).mean()
        out["sparse_final"] = sparse_final
        out["data"] = out["data"] + final_landmarks * sparse_final
        out["total"] = out["total"] + final_landmarks * sparse_final
    return out
