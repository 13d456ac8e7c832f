"""Plain-torch image formation (paper Sec. 5, Eq. 5 and Eq. 9): the oracle for the Taichi kernels.

Every function here has the signature of its twin in :mod:`fml_taichi.ops` and computes the same
maths with idiomatic vectorised torch (``index_add_`` for normals, one ``gather`` for the four bilinear
taps), differentiated by torch's autograd. It is the test oracle, the benchmark baseline, and the
fallback where Taichi is unavailable: this module must not import taichi.

The small shared pieces (the result dataclass, input checks) live here rather than in the ops so that
both implementations read one definition without the reference depending on Taichi; the numerical
constants (SH constants, epsilons) are in :mod:`fml_taichi.common.constants` and re-exported here.

Frames and conventions: ``docs/conventions.md`` (OpenCV camera, ``R = Rz @ Ry @ Rx``, pixel centres
at integer coordinates, counter-clockwise triangles with outward normal ``(v1 - v0) x (v2 - v0)``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.checks import check_indices, check_same, check_tensor
# Shared with the kernels (one definition, see the module docstring); re-exported under these names.
from ..common.constants import (  # noqa: F401
    LOSS_EPS, N_SH, NORMAL_EPS, SH_C0, SH_C1, SH_C2, SH_C3, SH_C4, Z_MIN,
)


@dataclass
class ImageFormationResult:
    """Outputs of :func:`image_formation`, batch-first.

    loss [B] (Eq. 9 per image), colors [B, N, 3] (shaded, Eq. 5), uv [B, N, 2] (pixels),
    visible [B, N] (float {0, 1}: backface test, in front of the camera, inside the image),
    v_cam [B, N, 3], normals [B, N, 3] (unit, camera space), sampled [B, N, 3] (image at uv).
    """

    loss: torch.Tensor
    colors: torch.Tensor
    uv: torch.Tensor
    visible: torch.Tensor
    v_cam: torch.Tensor
    normals: torch.Tensor
    sampled: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Input checks shared by the Taichi ops and this reference (one message per kind of mistake).


def check_finite(name: str, t: torch.Tensor) -> None:
    """ValueError if ``t`` holds NaN or inf, in one pass in the common case.

    A finite sum proves every element finite (NaN and inf propagate through addition), so only a
    non-finite sum (bad data, or an overflow of huge finite values) pays for the exact elementwise
    check. ``torch.isfinite(t).all()`` costs several passes: ~3 ms for a 240x240 batch of 8 on the
    2-core CPU, as much as a quarter of the fused forward kernel.
    """
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf values")


def check_float_tensor(name: str, t, shape, contiguous: bool = True) -> torch.Tensor:
    """check_tensor (shape, float dtype, contiguity) with the one-pass finite check."""
    check_tensor(name, t, shape=shape, finite=False, contiguous=contiguous)
    check_finite(name, t)
    return t


def check_points(name: str, t, allow_empty: bool = False) -> int:
    """A [B, N, 3] float tensor; returns B."""
    check_float_tensor(name, t, (None, None, 3))
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected a batch of at least 1, got shape {tuple(t.shape)}")
    if t.shape[1] == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least 1 vertex, got shape {tuple(t.shape)} (empty mesh?)")
    return t.shape[0]


def check_triangles(triangles, n_vertices: int, like: torch.Tensor | None = None) -> None:
    """int32 [F, 3], F >= 1, indices in [0, n_vertices), on ``like``'s device if given."""
    check_indices("triangles", triangles, n_vertices, shape=(None, 3))
    if like is not None and triangles.device != like.device:
        raise ValueError(f"triangles: device {triangles.device} differs from the vertices' {like.device}")
    if triangles.shape[0] == 0:
        raise ValueError("triangles: expected at least 1 triangle, got shape (0, 3) (empty mesh?)")


def check_rotation_translation(rotation, translation, ref_name: str, ref: torch.Tensor) -> None:
    check_tensor("rotation", rotation, shape=(ref.shape[0], 3), contiguous=False)
    check_tensor("translation", translation, shape=(ref.shape[0], 3), contiguous=False)
    check_same(ref_name, ref, "rotation", rotation)
    check_same(ref_name, ref, "translation", translation)


def batched_intrinsics(intrinsics, batch: int, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """Check ``[fx, fy, cx, cy]`` of shape (4,) or (B, 4) and return it as a contiguous (B, 4)."""
    if not isinstance(intrinsics, torch.Tensor) or intrinsics.ndim not in (1, 2):
        got = tuple(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else type(intrinsics).__name__
        raise ValueError(f"intrinsics: expected shape (4,) or ({batch}, 4), got {got}")
    shape = (4,) if intrinsics.ndim == 1 else (batch, 4)
    check_tensor("intrinsics", intrinsics, shape=shape, contiguous=False)
    check_same(ref_name, ref, "intrinsics", intrinsics)
    if not bool((intrinsics[..., :2] > 0).all()):
        raise ValueError("intrinsics: focal lengths fx, fy must be positive")
    return intrinsics.expand(batch, 4).contiguous()


def check_light(light, batch: int, ref_name: str, ref: torch.Tensor) -> None:
    check_float_tensor("light", light, (batch, N_SH, 3))
    check_same(ref_name, ref, "light", light)


def check_image(image, batch: int, ref_name: str, ref: torch.Tensor) -> None:
    check_float_tensor("image", image, (batch, None, None, 3))
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image: expected a non-empty (B, H, W, 3) image, got shape {tuple(image.shape)}")
    check_same(ref_name, ref, "image", image)


def check_image_formation_inputs(vertices, reflectance, triangles, rotation, translation, intrinsics, light,
                                 image) -> torch.Tensor:
    """Validate the inputs of :func:`image_formation`; returns the intrinsics as a contiguous (B, 4)."""
    b = check_points("vertices", vertices)
    check_float_tensor("reflectance", reflectance, tuple(vertices.shape))
    check_same("vertices", vertices, "reflectance", reflectance)
    check_triangles(triangles, vertices.shape[1], like=vertices)
    check_rotation_translation(rotation, translation, "vertices", vertices)
    check_light(light, b, "vertices", vertices)
    check_image(image, b, "vertices", vertices)
    return batched_intrinsics(intrinsics, b, "vertices", vertices)


# ----------------------------------------------------------------------------------------------
# The maths.


def euler_to_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (x applied first) from Euler angles.

    rotation: [B, 3] radians ``(rx, ry, rz)``. Returns [B, 3, 3], differentiable. Small enough that
    torch is the right tool (the kernels use this very function).
    """
    check_tensor("rotation", rotation, shape=(None, 3), contiguous=False)
    cx, cy, cz = torch.cos(rotation).unbind(-1)
    sx, sy, sz = torch.sin(rotation).unbind(-1)
    rows = [
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ]
    return torch.stack(rows, dim=-1).reshape(rotation.shape[0], 3, 3)


def rigid_transform(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``v_cam = R v + t`` per image; vertices [B, N, 3], rotation [B, 3], translation [B, 3]."""
    check_points("vertices", vertices, allow_empty=True)
    check_rotation_translation(rotation, translation, "vertices", vertices)
    rot = euler_to_matrix(rotation)
    return torch.baddbmm(translation.unsqueeze(1), vertices, rot.transpose(1, 2))


def project(v_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Perspective projection to pixels: ``u = fx x / z + cx``, ``v = fy y / z + cy``.

    z is clamped to ``Z_MIN`` (points at or behind the camera stay finite; they are invisible).
    """
    b = check_points("v_cam", v_cam, allow_empty=True)
    k = batched_intrinsics(intrinsics, b, "v_cam", v_cam)
    z = v_cam[..., 2].clamp_min(Z_MIN)
    u = k[:, 0:1] * v_cam[..., 0] / z + k[:, 2:3]
    v = k[:, 1:2] * v_cam[..., 1] / z + k[:, 3:4]
    return torch.stack([u, v], dim=-1)


def face_normal_sums(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Per-vertex sum of unnormalised face normals ``(v1 - v0) x (v2 - v0)`` (area-weighted)."""
    tri = triangles.long()
    v0, v1, v2 = (vertices.index_select(1, tri[:, k]) for k in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    sums = torch.zeros_like(vertices)
    # One index_add_ over all three corners: each face adds its normal to its three vertices.
    return sums.index_add_(1, tri.t().reshape(-1), fn.repeat(1, 3, 1))


def safe_normalize(sums: torch.Tensor) -> torch.Tensor:
    """Unit vectors, 0 (with zero gradient) where the length is below ``NORMAL_EPS``."""
    norm = torch.linalg.vector_norm(sums, dim=-1, keepdim=True)
    ok = norm > NORMAL_EPS
    # The safe denominator keeps the unselected branch finite, so where()'s backward gives 0, not NaN.
    return torch.where(ok, sums / torch.where(ok, norm, torch.ones_like(norm)), torch.zeros_like(sums))


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [B, N, 3] from triangles [F, 3] (int32, counter-clockwise)."""
    check_points("vertices", vertices)
    check_triangles(triangles, vertices.shape[1], like=vertices)
    return safe_normalize(face_normal_sums(vertices, triangles))


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 real SH basis functions [B, N, 9] of unit normals [B, N, 3] (constants in kernels/shading)."""
    check_float_tensor("normals", normals, (None, None, 3), contiguous=False)
    return _sh_basis(normals)


def _sh_basis(normals: torch.Tensor) -> torch.Tensor:
    x, y, z = normals.unbind(-1)
    return torch.stack([
        torch.full_like(x, SH_C0),
        SH_C1 * y, SH_C1 * z, SH_C1 * x,
        SH_C2 * x * y, SH_C2 * y * z, SH_C3 * (3.0 * z * z - 1.0), SH_C2 * x * z, SH_C4 * (x * x - y * y),
    ], dim=-1)


def sh_shading(normals: torch.Tensor, reflectance: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``c = r * sum_b gamma_b H_b(n)`` per channel; normals, reflectance [B, N, 3], light [B, 9, 3]."""
    b = check_points("normals", normals, allow_empty=True)
    check_float_tensor("reflectance", reflectance, tuple(normals.shape))
    check_same("normals", normals, "reflectance", reflectance)
    check_light(light, b, "normals", normals)
    return reflectance * torch.bmm(_sh_basis(normals), light)


def backface_visibility(v_cam: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
    """1.0 where the camera-space normal faces the camera (``dot(n, v) < 0``), else 0.0; [B, N]."""
    check_points("v_cam", v_cam, allow_empty=True)
    check_float_tensor("normals_cam", normals_cam, tuple(v_cam.shape))
    check_same("v_cam", v_cam, "normals_cam", normals_cam)
    return ((normals_cam * v_cam).sum(-1) < 0).to(v_cam.dtype)


def bilinear_sample(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear image lookup at pixel positions, border clamp; image [B, H, W, 3], uv [B, N, 2].

    Pixel centres are at integer coordinates; positions are clamped to [0, W-1] x [0, H-1] (zero
    gradient outside). Differentiable w.r.t. image and uv.
    """
    b = check_float_tensor("uv", uv, (None, None, 2)).shape[0]
    check_image(image, b, "uv", uv)
    return _bilinear(image, uv)


def _bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    bsz, h, w, _ = image.shape
    u = uv[..., 0].clamp(0, w - 1)
    v = uv[..., 1].clamp(0, h - 1)
    # floor() has zero gradient: the corner indices are constants, the fractions carry d/duv.
    x0 = u.detach().floor().clamp(0, max(w - 2, 0))
    y0 = v.detach().floor().clamp(0, max(h - 2, 0))
    fx, fy = (u - x0).unsqueeze(-1), (v - y0).unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp_max(w - 1), (y0 + 1).clamp_max(h - 1)
    # One gather for the four taps: indices [B, 4N] into the flattened [B, H*W, 3] image.
    idx = torch.cat([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=1)
    taps = torch.gather(image.reshape(bsz, h * w, 3), 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    i00, i01, i10, i11 = taps.chunk(4, dim=1)
    top = i00 + fx * (i01 - i00)
    bottom = i10 + fx * (i11 - i10)
    return top + fy * (bottom - top)


def photometric_loss(sampled: torch.Tensor, colors: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Eq. 9 per image: ``(1/N) sum_i visible_i sqrt(||sampled_i - colors_i||^2 + LOSS_EPS)``; [B]."""
    check_points("sampled", sampled)
    check_float_tensor("colors", colors, tuple(sampled.shape))
    check_float_tensor("visible", visible, tuple(sampled.shape[:2]))
    check_same("sampled", sampled, "colors", colors)
    check_same("sampled", sampled, "visible", visible)
    return _l21(sampled, colors, visible)


def _l21(sampled, colors, visible):
    dist = torch.sqrt(((sampled - colors) ** 2).sum(-1) + LOSS_EPS)
    # The mask is a constant (a step function of the geometry): no gradient flows into it.
    return (visible.detach() * dist).sum(1) / sampled.shape[1]


def image_formation(vertices, reflectance, triangles, rotation, translation, intrinsics, light,
                    image) -> ImageFormationResult:
    """The whole layer: transform, normals, shading, projection, visibility, sampling, Eq. 9 loss.

    vertices, reflectance [B, N, 3] (model space), triangles [F, 3] int32, rotation [B, 3] (Euler,
    radians), translation [B, 3], intrinsics (4,) or (B, 4), light [B, 9, 3], image [B, H, W, 3].
    Normals are computed in model space and rotated into the camera frame. Visible means: facing the
    camera, z > Z_MIN and inside [0, W-1] x [0, H-1]. Intrinsics are treated as constants.
    """
    k = check_image_formation_inputs(vertices, reflectance, triangles, rotation, translation, intrinsics,
                                     light, image).detach()
    h, w = image.shape[1], image.shape[2]
    rot = euler_to_matrix(rotation)
    v_cam = torch.baddbmm(translation.unsqueeze(1), vertices, rot.transpose(1, 2))
    normals = torch.bmm(safe_normalize(face_normal_sums(vertices, triangles)), rot.transpose(1, 2))
    colors = reflectance * torch.bmm(_sh_basis(normals), light)
    z = v_cam[..., 2].clamp_min(Z_MIN)
    uv = torch.stack([k[:, 0:1] * v_cam[..., 0] / z + k[:, 2:3], k[:, 1:2] * v_cam[..., 1] / z + k[:, 3:4]], -1)
    with torch.no_grad():
        u, v = uv.unbind(-1)
        inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (v_cam[..., 2] > Z_MIN)
        visible = (((normals * v_cam).sum(-1) < 0) & inside).to(vertices.dtype)
    sampled = _bilinear(image, uv)
    loss = _l21(sampled, colors, visible)
    return ImageFormationResult(loss, colors, uv, visible, v_cam, normals, sampled)
