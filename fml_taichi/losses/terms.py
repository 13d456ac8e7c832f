"""The individual terms of Sec. 6 (Eq. 9-15), each per image (shape [B]), in either implementation.

``impl="taichi"`` runs the generic kernels of :mod:`fml_taichi.ops`; ``impl="torch"`` runs
the plain-torch references of :mod:`fml_taichi.reference` (benchmark baseline and fallback). Both
compute the same maths; the face-specific choices (which vertices, which weights) live here.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from ..common.checks import check_tensor
from ..ops import landmarks as ti_landmarks
from ..ops import regularizers as ti_regularizers
from ..ops.image_formation import image_formation as ti_image_formation
from ..ops.photometric import photometric_loss as ti_photometric_loss
from ..ops.visibility import zbuffer_visibility as ti_zbuffer_visibility
from ..reference import landmarks as torch_landmarks
from ..reference import regularizers as torch_regularizers
from ..reference.image_formation import image_formation as torch_image_formation
from ..reference.image_formation import photometric_loss as torch_photometric_loss
from ..reference.rasterize import zbuffer_visibility as torch_zbuffer_visibility

IMPLS = ("taichi", "torch")

_OPS = {
    "taichi": SimpleNamespace(landmarks=ti_landmarks, regularizers=ti_regularizers, image_formation=ti_image_formation,
                              photometric_loss=ti_photometric_loss, zbuffer_visibility=ti_zbuffer_visibility),
    "torch": SimpleNamespace(landmarks=torch_landmarks, regularizers=torch_regularizers,
                             image_formation=torch_image_formation, photometric_loss=torch_photometric_loss,
                             zbuffer_visibility=torch_zbuffer_visibility),
}


def ops(impl: str) -> SimpleNamespace:
    """The op implementations for ``impl``: ``landmarks``, ``regularizers``, ``image_formation``."""
    if impl not in _OPS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return _OPS[impl]


# ---- data terms -------------------------------------------------------------------------------------


def level_photo(geometry, reflectance, params, face_model, image, intrinsics, impl: str = "taichi",
                visibility: str = "backface"):
    """The image-formation result (``ImageFormationResult``: per-image ``loss``, ``uv``, ``visible``) of
    one level: its l2,1 colour error against ``image``.

    ``visibility``: ``"backface"`` (the layer's own test) or ``"zbuffer"``: also drop the vertices the
    mesh hides from itself (z-buffer of the same level), rescoring the layer's colours and samples.
    """
    op = ops(impl)
    res = op.image_formation(geometry.contiguous(), reflectance.contiguous(), face_model.triangles,
                             params.rotation.contiguous(), params.translation.contiguous(), intrinsics,
                             params.light.contiguous(), image)
    if visibility == "backface":
        return res
    if visibility != "zbuffer":
        raise ValueError(f"visibility: expected 'backface' or 'zbuffer', got {visibility!r}")
    k = intrinsics if intrinsics.ndim == 2 else intrinsics.expand(res.v_cam.shape[0], 4)
    unhidden = op.zbuffer_visibility(res.v_cam.detach().contiguous(), face_model.triangles,
                                     k.to(res.v_cam.dtype).contiguous(), image.shape[1], image.shape[2])
    visible = (res.visible * unhidden).contiguous()
    loss = op.photometric_loss(res.sampled.contiguous(), res.colors.contiguous(), visible)
    return dataclasses.replace(res, loss=loss, visible=visible)


def photo_term(model_out, params, face_model, image, intrinsics, impl: str = "taichi", visibility: str = "backface"):
    """E_photo (Eq. 9) per image: the l2,1 colour error of the base plus the final level.

    Returns ``(e_photo [B], base_result, final_result)``; the results (``ImageFormationResult``) carry
    ``uv``/``visible`` that other terms reuse. Visibility is the layer's backface test.
    """
    base = level_photo(model_out.base_geometry, model_out.base_reflectance, params, face_model, image, intrinsics, impl,
                       visibility)
    final = level_photo(model_out.final_geometry, model_out.final_reflectance, params, face_model, image,
                        intrinsics, impl, visibility)
    return base.loss + final.loss, base, final


def landmark_vertices(base_geometry, params, face_model, landmarks, intrinsics, sliding: bool = True,
                      impl: str = "taichi") -> torch.Tensor:
    """The vertex index k_f of every 2D landmark (Eq. 10), per image: (B, L) int32.

    Fixed landmarks use ``face_model.landmarks``. With ``sliding``, the first
    ``len(face_model.contour_offsets) - 1`` landmarks (the jaw, 0-16 in iBUG order) take, at this
    evaluation, the contour candidate closest to the 3D ray through the camera centre and the
    back-projected detected landmark (a kernel; not differentiable, as in the paper's alternation).
    """
    b = base_geometry.shape[0]
    idx = face_model.landmarks.to(torch.int32).expand(b, -1).clone()
    n_slide = face_model.contour_offsets.shape[0] - 1
    if sliding and n_slide > 0:
        with torch.no_grad():
            idx[:, :n_slide] = ops(impl).landmarks.closest_to_rays(
                base_geometry.detach().contiguous(), params.rotation.detach().contiguous(),
                params.translation.detach().contiguous(), intrinsics,
                landmarks[:, :n_slide].detach().contiguous(), face_model.contour_offsets,
                face_model.contour_indices)
    return idx


def sparse_term(base_geometry, params, face_model, landmarks, landmark_conf, intrinsics, image_size: int,
                reference_size: float = 240.0, sliding: bool = True, impl: str = "taichi") -> torch.Tensor:
    """E_sparse (Eq. 10) per image: ``1/|F| sum_f c_f ||f - u^b_{k_f}||^2`` on the base level.

    Resolution independence: with ``reference_size > 0`` residuals are rescaled by
    ``reference_size / image_size`` (``image_size`` = max(H, W)), i.e. measured in pixels of a
    ``reference_size``-wide image, so a 2 px error at 240 px and a 1 px error at 120 px cost the same
    and one set of weights serves every resolution. ``reference_size = 0`` keeps raw pixels.
    """
    idx = landmark_vertices(base_geometry, params, face_model, landmarks, intrinsics, sliding, impl)
    loss = ops(impl).landmarks.sparse_reprojection_loss(
        base_geometry.contiguous(), idx, params.rotation.contiguous(), params.translation.contiguous(),
        intrinsics, landmarks.contiguous(), landmark_conf.contiguous())
    if reference_size > 0:
        loss = loss * (float(reference_size) / float(image_size)) ** 2
    return loss


# ---- regularisers -----------------------------------------------------------------------------------


def std_term(params, face_model, w_rstd: float, impl: str = "taichi") -> torch.Tensor:
    """E_std (Eq. 11) per image: ``sum (alpha_k / sigma_g,k)^2 + w_rstd sum (beta_k / sigma_r,k)^2``.

    Shape and expression coefficients share the geometry sum; one weighted sum-of-squares launch.
    """
    values = torch.cat([params.shape, params.expression, params.reflectance], 1).contiguous()
    inv = torch.cat([face_model.shape_sigma ** -2, face_model.expression_sigma ** -2,
                     w_rstd * face_model.reflectance_sigma ** -2]).to(values.dtype).contiguous()
    return ops(impl).regularizers.weighted_sum_of_squares(values, inv)


def smo_term(geometry_corrective, face_model, w_smo: float, impl: str = "taichi") -> torch.Tensor:
    """E_smo (Eq. 12) per image: ``w_smo / N sum_i ||mean_{j in N_i} (F_i - F_j)||^2`` over 1-rings."""
    return w_smo * ops(impl).regularizers.laplacian_energy(
        geometry_corrective.contiguous(), face_model.neighbour_offsets, face_model.neighbour_indices)


def ref_term(final_reflectance, neighbour_rows, face_model, ref_weights, w_ref: float, p: float, eps: float,
             impl: str = "taichi") -> torch.Tensor:
    """E_ref (Eq. 13) per image: ``w_ref / N sum_i sum_{j in N_i} w_ij ||r_i - r_j||^p``.

    ``ref_weights`` (B, E) are constants aligned with the 1-ring CSR entries (see
    :func:`fml_taichi.losses.total.compute_reflectance_weights`); ``||.||^p`` is smoothed by ``eps``
    (see :func:`fml_taichi.ops.regularizers.pair_energy`) so its gradient is finite at 0.
    The sum runs over all vertices (the paper's V in Eq. 13 read as the whole mesh, as in Eq. 12):
    a hidden or off-image vertex gets weights from the pixel its projection falls on (border-clamped),
    usually the occluding skin, which keeps it smooth rather than unconstrained.
    """
    n = final_reflectance.shape[1]
    e = ops(impl).regularizers.pair_energy(final_reflectance.contiguous(), neighbour_rows,
                                              face_model.neighbour_indices, ref_weights, p=p, eps=eps)
    return w_ref * e / n


def glo_term(final_reflectance, partner_src, partner_dst, n_mask: int, w_glo: float,
             impl: str = "taichi") -> torch.Tensor:
    """E_glo (Eq. 14) per image: ``w_glo / |M| sum_{i in M} sum_{j in G_i} ||r_i - r_j||^2``."""
    e = ops(impl).regularizers.pair_energy(final_reflectance.contiguous(), partner_src, partner_dst)
    return w_glo * e / n_mask


def sta_term(geometry_corrective, w_sta: float, impl: str = "taichi") -> torch.Tensor:
    """E_sta (Eq. 15) per image: ``w_sta / N sum_i ||F_g,i||^2``."""
    check_tensor("geometry_corrective", geometry_corrective, shape=(None, None, 3), contiguous=False)
    b, n = geometry_corrective.shape[:2]
    flat = geometry_corrective.contiguous().reshape(b, 3 * n)
    return w_sta * ops(impl).regularizers.weighted_sum_of_squares(flat) / n
