"""The fused, fast image-formation layer (paper Sec. 5, Eq. 5 and Eq. 9) with a hand-written backward.

One call renders a point-based image formation for B images and returns the Eq. 9 photometric loss
plus every intermediate other losses need (ImageFormationResult). Per vertex it computes
``v_cam = R v + t`` (``R = Rz @ Ry @ Rx``), the area-weighted normal (summed in model space from the
triangles, normalised, then rotated: rotation commutes with normalisation, and model space lets the
face pass run before R is applied), SH shading (kernels/shading.py), the perspective projection,
visibility (backface test, z > Z_MIN, inside [0, W-1] x [0, H-1]), the bilinear image sample and
the l2,1 residual.

Why fused, hand-differentiated and gathering normals per vertex (with the measurements):
:mod:`fml_taichi.kernels.image_formation`. The vertex adjacency the normal gather needs is built and
cached here in torch (:func:`~fml_taichi.ops.normals.vertex_adjacency`).
"""
import torch
from torch.autograd.function import once_differentiable

from ..kernels.image_formation import fused_kernels
from ..reference.image_formation import ImageFormationResult, check_image_formation_inputs, euler_to_matrix
from .bridge import check_device, chunk_size, detached, ti_float
from .normals import vertex_adjacency

__all__ = ["image_formation", "ImageFormationResult"]


def _flat(*tensors):
    return [t.reshape(-1) for t in tensors]


class _FusedImageFormation(torch.autograd.Function):
    """Inputs: vertices, reflectance, rot [B,3,3], translation, light, image, triangles, k [B,4]."""

    @staticmethod
    def forward(ctx, vertices, reflectance, rot, translation, light, image, triangles, k):
        ks = fused_kernels()
        dt = ti_float(vertices.dtype)
        v, r, rot, t, lgt, img, k = detached([vertices, reflectance, rot, translation, light, image, k])
        bsz, n = v.shape[:2]
        h, w = img.shape[1:3]
        offsets, others = vertex_adjacency(triangles, n)
        sums, colors, v_cam, normals, sampled = (torch.empty_like(v) for _ in range(5))
        uv = v.new_empty(bsz, n, 2)
        visible = v.new_empty(bsz, n)
        loss = v.new_zeros(bsz)
        ks.forward(*_flat(v, r, offsets, others, rot, t, k, lgt, img, sums, colors, uv, visible, v_cam, normals,
                          sampled, loss), bsz, n, h, w, chunk_size(), dt)
        ctx.save_for_backward(v, r, rot, t, lgt, img, k, sums, offsets, others)
        ctx.mark_non_differentiable(visible)
        # Unused outputs then arrive as None, so the common case (only the loss) skips their reads.
        ctx.set_materialize_grads(False)
        return loss, colors, uv, visible, v_cam, normals, sampled

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, g_colors, g_uv, _g_visible, g_vcam, g_normals, g_sampled):
        ks = fused_kernels()
        v, r, rot, t, lgt, img, k, sums, offsets, others = ctx.saved_tensors
        dt = ti_float(v.dtype)
        bsz, n = v.shape[:2]
        h, w = img.shape[1:3]
        g_loss = v.new_zeros(bsz) if g_loss is None else g_loss.contiguous()
        extras = [g_colors, g_uv, g_vcam, g_normals, g_sampled]
        extra = any(g is not None for g in extras)
        if extra:
            extras = [torch.zeros_like(like) if g is None else g.contiguous()
                      for g, like in zip(extras, [v, v[..., :2], v, v, v])]
        else:  # never read by the kernel; only their dtype matters
            extras = [v.new_zeros(1)] * 5
        image_grad = ctx.needs_input_grad[5]
        g_image = torch.zeros_like(img) if image_grad else img.new_zeros(1)
        g_verts, g_refl, g_sums = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
        g_rot, g_trans, g_light = torch.zeros_like(rot), torch.zeros_like(t), torch.zeros_like(lgt)
        ks.backward(*_flat(v, r, sums, rot, t, k, lgt, img, g_loss, *extras), int(extra),
                    *_flat(g_verts, g_refl, g_sums, g_rot, g_trans, g_light, g_image), int(image_grad),
                    bsz, n, h, w, chunk_size(), dt)
        ks.normals_backward(*_flat(v, offsets, others, g_sums, g_verts), bsz, n, chunk_size())
        return g_verts, g_refl, g_rot, g_trans, g_light, (g_image if image_grad else None), None, None


def image_formation(vertices, reflectance, triangles, rotation, translation, intrinsics, light,
                    image) -> ImageFormationResult:
    """Render B images' vertices and score them against the images (Eq. 9); the fused fast path.

    Args:
        vertices: [B, N, 3] model-space positions (mm), float32 (training) or float64 (checks).
        reflectance: [B, N, 3] per-vertex RGB reflectance.
        triangles: [F, 3] int32, counter-clockwise seen from outside, shared by the batch.
        rotation: [B, 3] Euler angles (rx, ry, rz) in radians, ``R = Rz @ Ry @ Rx``.
        translation: [B, 3] camera-frame translation (mm).
        intrinsics: ``[fx, fy, cx, cy]``, shape (4,) or (B, 4); treated as constants (no gradient).
        light: [B, 9, 3] SH irradiance coefficients (convention in kernels/shading.py).
        image: [B, H, W, 3] float RGB, channels-last, contiguous.

    Returns:
        ImageFormationResult(loss [B], colors, uv, visible, v_cam, normals (camera space), sampled).
        Differentiable w.r.t. vertices, reflectance, rotation, translation, light and image, through
        any of the outputs (visible is a constant mask). A vertex without (non-degenerate) incident
        triangles has the normal 0 and is invisible. All per-vertex tensors must be contiguous;
        every input is validated (ValueError naming the argument).
    """
    k = check_image_formation_inputs(vertices, reflectance, triangles, rotation, translation, intrinsics,
                                     light, image)
    check_device("vertices", vertices)
    rot = euler_to_matrix(rotation).contiguous()
    outs = _FusedImageFormation.apply(vertices, reflectance, rot, translation.contiguous(), light, image,
                                      triangles, k.detach())
    return ImageFormationResult(*outs)
