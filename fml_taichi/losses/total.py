"""E_total (Eq. 6-8): every term of Sec. 6, batch-averaged, with weights from ``configs/losses.yaml``."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..common.checks import check_tensor
from ..model.params import FaceParams
from . import terms
from .config import LossWeights, default_weights
from .partners import draw_partners


@dataclass(frozen=True)
class LossContext:
    """Per-model constants the terms need, built once (:meth:`build`) and reused every step.

    neighbour_rows (E,) int32: the CSR row (vertex i) of every 1-ring entry, the edge sources of E_ref;
    partner_src / partner_dst (|M| * 6,) int32: the fixed random skin pairs of E_glo; n_skin = |M|.
    """

    neighbour_rows: torch.Tensor
    partner_src: torch.Tensor
    partner_dst: torch.Tensor
    n_skin: int

    @classmethod
    def build(cls, face_model, weights: LossWeights) -> "LossContext":
        off = face_model.neighbour_offsets
        counts = (off[1:] - off[:-1]).long()
        rows = torch.repeat_interleave(torch.arange(counts.shape[0], device=off.device), counts)
        src, dst = draw_partners(face_model.skin_mask, weights.glo_partners, weights.glo_seed)
        return cls(rows.to(torch.int32).contiguous(), src, dst, int(face_model.skin_mask.sum()))


# Contexts keyed by the model's tensors: a training loop that never builds one still draws the E_glo
# partners once per model (weak references: a model that is garbage never matches again).
_CONTEXTS: dict = {}


def context_for(face_model, weights: LossWeights) -> LossContext:
    """The cached :class:`LossContext` of ``face_model`` for these partner settings (built on first use)."""
    key = (id(face_model.skin_mask), id(face_model.neighbour_offsets), weights.glo_partners, weights.glo_seed)
    hit = _CONTEXTS.get(key)
    if hit is not None and hit[0]() is face_model.skin_mask and hit[1]() is face_model.neighbour_offsets:
        return hit[2]
    ctx = LossContext.build(face_model, weights)
    if len(_CONTEXTS) >= 8:
        _CONTEXTS.pop(next(iter(_CONTEXTS)))
    _CONTEXTS[key] = (weakref.ref(face_model.skin_mask), weakref.ref(face_model.neighbour_offsets), ctx)
    return ctx


def compute_reflectance_weights(image: torch.Tensor, uv: torch.Tensor, neighbour_offsets: torch.Tensor,
                                neighbour_indices: torch.Tensor, alpha: float = 50.0, eps: float = 1e-3,
                                impl: str = "taichi", neighbour_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The constant weights w_ij of E_ref (Eq. 13), one per 1-ring CSR entry: (B, E).

    ``w_ij = exp(-alpha ||ch(I(u_i)) - ch(I(u_j))||_2)`` with chromaticity ``ch(c) = c / (c_r + c_g + c_b
    + eps)`` of the input image sampled bilinearly at the final-level projections ``uv`` of the previous
    iterate (x_old). Computed without gradient. Pass ``uv`` detached from the last evaluation (or
    the current one before the update step, which is what :func:`total_loss` does by default).

    Args:
        image: (B, H, W, 3) input image. uv: (B, N, 2) pixel positions.
        neighbour_offsets: (N + 1,) int32, neighbour_indices: (E,) int32 (the model's 1-ring CSR).
        alpha, eps: see above (paper: alpha = 50). impl: ``"taichi"`` or ``"torch"``.
        neighbour_rows: optional precomputed CSR row of each entry (:class:`LossContext`).
    """
    if neighbour_rows is None:
        counts = (neighbour_offsets[1:] - neighbour_offsets[:-1]).long()
        neighbour_rows = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device),
                                                 counts).to(torch.int32)
    return terms.ops(impl).regularizers.chromaticity_edge_weights(
        image, uv.detach(), neighbour_rows, neighbour_indices, alpha=alpha, eps=eps)


def _check_inputs(model_out, params, face_model, image, landmarks, landmark_conf):
    params.validate()
    b = params.batch_size
    n_lm = face_model.landmarks.shape[0]
    check_tensor("image", image, shape=(b, None, None, 3))
    check_tensor("landmarks", landmarks, shape=(b, n_lm, 2), contiguous=False)
    check_tensor("landmark_conf", landmark_conf, shape=(b, n_lm), contiguous=False)
    if bool((landmark_conf < 0).any()) or bool((landmark_conf > 1).any()):
        raise ValueError("landmark_conf: confidences must lie in [0, 1]")
    n = face_model.n_vertices
    for name in ("base_geometry", "final_geometry", "base_reflectance", "final_reflectance", "geometry_corrective"):
        check_tensor(f"model_out.{name}", getattr(model_out, name), shape=(b, n, 3), contiguous=False)


def total_loss(model_out, params: FaceParams, face_model, image: torch.Tensor, landmarks: torch.Tensor,
               landmark_conf: torch.Tensor, intrinsics: torch.Tensor, weights: LossWeights | None = None,
               ref_weights: torch.Tensor | None = None, impl: str = "taichi",
               context: LossContext | None = None, levels: str = "both",
               final_landmarks: float = 0.0) -> dict[str, torch.Tensor]:
    """E_total of Eq. 6 and every term, each a scalar averaged over the batch.

    Args:
        model_out: ``MultiLevelModel`` output (base/final geometry and reflectance, geometry_corrective).
        params: the :class:`FaceParams` that produced it (pose, light, base coefficients).
        face_model: the ``FaceModel`` (triangles, sigmas, 1-ring CSR, landmarks, contours, skin mask).
        image: (B, H, W, 3) input images in [0, 1]. landmarks: (B, 68, 2) detected pixels (x, y).
        landmark_conf: (B, 68) confidences in [0, 1]. intrinsics: (4,) or (B, 4) ``[fx, fy, cx, cy]``.
        weights: :class:`LossWeights` (default: ``configs/losses.yaml``).
        ref_weights: (B, E) constant E_ref weights from the previous iterate; ``None`` computes them
            from this evaluation's final-level projections, detached (x_old = the iterate being updated).
        impl: ``"taichi"`` (kernels) or ``"torch"`` (references: baseline / fallback).
        context: per-model constants (:class:`LossContext`); cached per model when omitted.
        levels: ``"both"`` (Eq. 6) or ``"base"``: the base level alone, ``w_photo E_photo^b + E_sparse
            + w_reg E_std``, for fitting before any corrective exists (the correctives' regularisers
            are 0 then, and E_ref / E_glo would only re-penalise the base reflectance that E_std
            already controls; one image formation instead of two).
        final_landmarks: weight of E_sparse evaluated on the final level too (key ``sparse_final``;
            0 = the paper). Without it the geometry correctives see only the photometric term.

    Returns:
        dict with ``photo`` (base + final, Eq. 9), ``photo_base``, ``photo_final``, ``sparse`` (Eq. 10),
        ``std``, ``smo``, ``ref``, ``glo``, ``sta`` (Eq. 11-15, each including its own weight as in the
        paper), ``data`` = sparse + w_photo photo, ``reg`` = std + smo + ref + glo + sta and
        ``total`` = data + w_reg reg (``levels="base"``: the keys that apply).
    """
    weights = default_weights() if weights is None else weights
    if impl not in terms.IMPLS:
        raise ValueError(f"impl: expected one of {terms.IMPLS}, got {impl!r}")
    if levels not in ("both", "base"):
        raise ValueError(f"levels: expected 'both' or 'base', got {levels!r}")
    _check_inputs(model_out, params, face_model, image, landmarks, landmark_conf)
    size = max(image.shape[1], image.shape[2])

    def sparse_on(geometry):
        return terms.sparse_term(geometry, params, face_model, landmarks, landmark_conf, intrinsics, size,
                                 weights.landmark_reference_size, weights.sliding_contour, impl)

    sparse = sparse_on(model_out.base_geometry)
    std = terms.std_term(params, face_model, weights.w_rstd, impl)
    if levels == "base":
        base = terms.level_photo(model_out.base_geometry, model_out.base_reflectance, params, face_model, image,
                                 intrinsics, impl, weights.photo_visibility)
        out = {"photo_base": base.loss, "sparse": sparse, "std": std}
        out = {k: v.mean() for k, v in out.items()}
        out["photo"] = out["photo_base"]
        out["reg"] = out["std"]
    else:
        out = _both_levels(model_out, params, face_model, image, intrinsics, weights, ref_weights, impl, context,
                           sparse, std)
    out["data"] = out["sparse"] + weights.w_photo * out["photo"]
    out["total"] = out["data"] + weights.w_reg * out["reg"]
    if final_landmarks > 0:
        out["sparse_final"] = sparse_on(model_out.final_geometry).mean()
        out["data"] = out["data"] + final_landmarks * out["sparse_final"]
        out["total"] = out["total"] + final_landmarks * out["sparse_final"]
    return out


def _both_levels(model_out, params, face_model, image, intrinsics, weights, ref_weights, impl, context, sparse,
                 std) -> dict[str, torch.Tensor]:
    """The terms of Eq. 6 that need the final level (E_photo of both levels, E_smo, E_ref, E_glo, E_sta)."""
    ctx = context if context is not None else context_for(face_model, weights)
    photo, base, final = terms.photo_term(model_out, params, face_model, image, intrinsics, impl,
                                          weights.photo_visibility)
    if ref_weights is not None:
        check_tensor("ref_weights", ref_weights, shape=(params.batch_size, face_model.neighbour_indices.shape[0]),
                     contiguous=False)
        if bool((ref_weights < 0).any()):
            raise ValueError("ref_weights: weights must be >= 0")
    else:
        ref_weights = compute_reflectance_weights(image, final.uv, face_model.neighbour_offsets,
                                                  face_model.neighbour_indices, weights.ref_alpha,
                                                  weights.chroma_eps, impl, ctx.neighbour_rows)
    out = {
        "photo": photo,
        "photo_base": base.loss,
        "photo_final": final.loss,
        "sparse": sparse,
        "std": std,
        "smo": terms.smo_term(model_out.geometry_corrective, face_model, weights.w_smo, impl),
        "ref": terms.ref_term(model_out.final_reflectance, ctx.neighbour_rows, face_model, ref_weights,
                              weights.w_ref, weights.ref_p, weights.ref_eps, impl),
        "glo": terms.glo_term(model_out.final_reflectance, ctx.partner_src, ctx.partner_dst, ctx.n_skin,
                              weights.w_glo, impl),
        "sta": terms.sta_term(model_out.geometry_corrective, weights.w_sta, impl),
    }
    out = {k: v.mean() for k, v in out.items()}
    out["reg"] = out["std"] + out["smo"] + out["ref"] + out["glo"] + out["sta"]
    return out
