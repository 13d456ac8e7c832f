"""A simulated 68-point landmark detector: which vertex it "sees", its noise and its confidence.

What a 2D detector reports differs from the projection of fixed model vertices in two ways, and the
synthetic data reproduce both so that training and evaluation meet the same statistics as on real
detections:

1. **Jaw points follow the visible outline** (paper Fig. 2, left). For jaw landmark ``j`` the model
   lists candidate vertices ordered from the face's inside outwards (``FaceModel.contour(j)``), with
   the landmark's own (frontal) vertex among them. If that vertex is visible, the detector marks it
   (the jaw line on the near side). If it is hidden (turned away or occluded, the far side of a turned
   head), the detector marks the outline instead: walking outwards from the innermost candidate, the
   last candidate before the first hidden one, i.e. the silhouette. :func:`detector_vertices` does this.
2. **Noise and confidence**: Gaussian pixel noise (~1.5 px) that grows as the confidence falls;
   confidence high for visible inner points, lower for jaw points, lower still for points on the
   silhouette and lowest for occluded inner points (a detector still guesses them).
   :func:`detector_noise` draws both from a caller's generator.

Visibility of a vertex = its camera-space normal faces the camera (``dot(n, v) < 0``,
``docs/conventions.md``) and it passes a depth test against the rasterised depth map (so the nose can
hide the far eye corner).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

N_LANDMARKS = 68
N_JAW = 17
#: A vertex is occluded when it lies more than this (mm) behind the rasterised surface at its pixel.
DEPTH_TOLERANCE_MM = 2.0


@dataclass
class DetectorView:
    """Noise-free detector targets for a batch: vertex per landmark, its pixel position, visibility.

    vertex [B, 68] int64; uv [B, 68, 2] pixels; visible [B, 68] bool (the chosen vertex is visible);
    slid [B, 68] bool (jaw point moved off its frontal vertex onto the silhouette).
    """

    vertex: torch.Tensor
    uv: torch.Tensor
    visible: torch.Tensor
    slid: torch.Tensor


def project_points(v_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pinhole projection ``u = fx x/z + cx``, ``v = fy y/z + cy``; [B, K, 3] -> [B, K, 2]."""
    k = intrinsics.expand(v_cam.shape[0], 4) if intrinsics.ndim == 1 else intrinsics
    z = v_cam[..., 2].clamp_min(1e-6)
    return torch.stack([k[:, 0:1] * v_cam[..., 0] / z + k[:, 2:3], k[:, 1:2] * v_cam[..., 1] / z + k[:, 3:4]], -1)


def vertex_visibility(v_cam: torch.Tensor, normals_cam: torch.Tensor, depth: torch.Tensor,
                      intrinsics: torch.Tensor, index: torch.Tensor,
                      tolerance: float = DEPTH_TOLERANCE_MM) -> torch.Tensor:
    """Visibility [B, K] of vertices ``index`` ([K] or [B, K]): front-facing and not occluded.

    ``depth`` [B, H, W] is the rasteriser's depth map (0 = background). A vertex whose pixel is outside
    the image is invisible; one whose pixel shows background (it sits on the silhouette edge and the
    pixel centre just misses the mesh) counts as visible if front-facing.
    """
    b, h, w = depth.shape
    if index.ndim == 1:
        index = index.unsqueeze(0).expand(b, -1)
    gather = lambda t: torch.gather(t, 1, index.unsqueeze(-1).expand(-1, -1, 3))  # noqa: E731
    p, n = gather(v_cam), gather(normals_cam)
    facing = (p * n).sum(-1) < 0
    uv = project_points(p, intrinsics).round().long()
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    px = uv[..., 0].clamp(0, w - 1)
    py = uv[..., 1].clamp(0, h - 1)
    d = depth[torch.arange(b).unsqueeze(1), py, px]
    unoccluded = (d <= 0) | (p[..., 2] <= d + tolerance)
    return facing & inside & unoccluded


_JAW_TABLES: dict = {}


def _jaw_tables(face_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded jaw candidates [17, K] (inside -> out, only up to the landmark's own vertex; pad = the
    last real entry) and their validity mask [17, K]. Cached per model (keyed by its tensors)."""
    key = id(face_model.contour_indices)
    hit = _JAW_TABLES.get(key)
    if hit is not None and hit[0] is face_model.contour_indices and hit[1] is face_model.landmarks:
        return hit[2], hit[3]
    rows = []
    for j in range(N_JAW):
        cand = face_model.contour(j).long()
        own = (cand == int(face_model.landmarks[j])).nonzero()
        rows.append(cand[: int(own[0, 0]) + 1] if len(own) else cand)  # the hidden point's outline is inside
    k = max(len(r) for r in rows)
    table = torch.stack([torch.cat([r, r[-1:].expand(k - len(r))]) for r in rows])
    valid = torch.stack([torch.arange(k) < len(r) for r in rows])
    if len(_JAW_TABLES) >= 8:
        _JAW_TABLES.pop(next(iter(_JAW_TABLES)))
    _JAW_TABLES[key] = (face_model.contour_indices, face_model.landmarks, table, valid)
    return table, valid


def detector_vertices(v_cam: torch.Tensor, normals_cam: torch.Tensor, depth: torch.Tensor,
                      intrinsics: torch.Tensor, face_model) -> DetectorView:
    """Which vertex a detector marks for each of the 68 landmarks, per image (module docstring, 1.).

    Args:
        v_cam, normals_cam: [B, N, 3] camera-space vertices and unit normals.
        depth: [B, H, W] rasterised depth of the same meshes (``RasterResult.depth``).
        intrinsics: (4,) or (B, 4).
        face_model: provides ``landmarks`` [68] and the jaw candidates ``contour(j)``.

    Returns:
        :class:`DetectorView` with noise-free pixel positions.
    """
    b = v_cam.shape[0]
    fixed = face_model.landmarks.long().to(v_cam.device)
    vertex = fixed.unsqueeze(0).repeat(b, 1)
    visible = vertex_visibility(v_cam, normals_cam, depth, intrinsics, fixed)
    # All jaw candidates at once: vis [B, 17, K]; a candidate counts while every one inside it is
    # visible too (walking outwards, the first hidden one is past the silhouette).
    table, valid = _jaw_tables(face_model)
    table, valid = table.to(v_cam.device), valid.to(v_cam.device)
    vis = vertex_visibility(v_cam, normals_cam, depth, intrinsics, table.reshape(-1)).reshape(b, N_JAW, -1)
    vis = vis & valid
    leading = torch.cumprod(vis.long(), dim=2).sum(2)  # [B, 17]
    pick = table.unsqueeze(0).expand(b, -1, -1).gather(2, (leading - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    hidden = ~visible[:, :N_JAW]
    vertex[:, :N_JAW] = torch.where(hidden, pick, fixed[:N_JAW])
    slid = torch.zeros_like(visible)
    slid[:, :N_JAW] = hidden & (pick != fixed[:N_JAW])
    visible[:, :N_JAW] = torch.where(hidden, leading > 0, visible[:, :N_JAW])
    p = torch.gather(v_cam, 1, vertex.unsqueeze(-1).expand(-1, -1, 3))
    return DetectorView(vertex=vertex, uv=project_points(p, intrinsics), visible=visible, slid=slid)


def detector_noise(gen: torch.Generator, uv: torch.Tensor, visible: torch.Tensor, slid: torch.Tensor,
                   sigma_px: float = 1.5, bias_px: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy landmarks and confidences for one image (module docstring, 2.).

    Args:
        gen: the image's generator (all draws come from it, in a fixed order).
        uv: [68, 2] noise-free positions; visible, slid: [68] bool from :func:`detector_vertices`.
        sigma_px: noise SD at full confidence; it scales by ``1 + 1.5 (1 - confidence)``.
        bias_px: SD of a shift shared by all 68 points (a detector's per-image offset).

    Returns:
        (landmarks [68, 2] float32, confidence [68] float32 in [0, 1]).
    """
    if sigma_px < 0 or bias_px < 0:
        raise ValueError(f"sigma_px and bias_px must be non-negative, got {sigma_px}, {bias_px}")
    u = torch.rand(N_LANDMARKS, generator=gen)
    conf = 0.85 + 0.15 * u  # visible inner points
    jaw = torch.zeros(N_LANDMARKS, dtype=torch.bool)
    jaw[:N_JAW] = True
    conf = torch.where(jaw, 0.7 + 0.2 * u, conf)
    conf = torch.where(slid, 0.45 + 0.25 * u, conf)
    conf = torch.where(~visible, 0.1 + 0.3 * u, conf)
    sigma = sigma_px * (1.0 + 1.5 * (1.0 - conf))
    noise = torch.randn((N_LANDMARKS, 2), generator=gen) * sigma.unsqueeze(-1)
    shift = torch.randn((1, 2), generator=gen) * bias_px
    return (uv.float() + noise + shift).contiguous(), conf.float().contiguous()
