"""Plain-torch references of ``fml_taichi.ops.landmarks`` (same names, same maths, same checks).

Test oracle and benchmark baseline; differentiable through ordinary torch autograd.
"""
from __future__ import annotations

import torch

# Depth clamp of the projection, shared with the kernel (see common.constants).
from ..common.constants import LANDMARK_Z_MIN as Z_MIN
from ..common.loss_checks import check_csr, check_gather, check_pose, check_targets


def euler_zyx(rotation: torch.Tensor) -> torch.Tensor:
    """(B, 3) Euler angles -> (B, 3, 3) matrices ``Rz(rz) @ Ry(ry) @ Rx(rx)``."""
    c, s = torch.cos(rotation), torch.sin(rotation)
    cx, cy, cz = c.unbind(-1)
    sx, sy, sz = s.unbind(-1)
    rows = [
        torch.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx], -1),
        torch.stack([sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx], -1),
        torch.stack([-sy, cy * sx, cy * cx], -1),
    ]
    return torch.stack(rows, -2)


def _camera_points(points, rotation, translation):
    return torch.einsum("bij,bnj->bni", euler_zyx(rotation), points) + translation[:, None, :]


def sparse_reprojection_loss(points, indices, rotation, translation, intrinsics, targets, weights):
    """Torch version of :func:`fml_taichi.ops.landmarks.sparse_reprojection_loss`."""
    b, intr = check_pose(points, rotation, translation, intrinsics)
    check_targets(b, points, targets)
    k = targets.shape[1]
    check_gather(b, k, points.shape[1], points, indices, weights)
    gathered = torch.gather(points, 1, indices.long()[..., None].expand(b, k, 3))
    q = _camera_points(gathered, rotation, translation)
    uv = q[..., :2] / q[..., 2:].clamp_min(Z_MIN) * intr[:, None, :2] + intr[:, None, 2:]  # as the kernel
    return (weights.detach() * ((targets.detach() - uv) ** 2).sum(-1)).sum(1) / k


def closest_to_rays(points, rotation, translation, intrinsics, targets, offsets, candidates):
    """Torch version of :func:`fml_taichi.ops.landmarks.closest_to_rays`."""
    b, intr = check_pose(points, rotation, translation, intrinsics)
    check_targets(b, points, targets)
    k = targets.shape[1]
    check_csr(offsets, candidates, k, points.shape[1])
    with torch.no_grad():
        cand = candidates.long()
        q = _camera_points(points[:, cand], rotation, translation)  # (B, M, 3)
        d = torch.cat([(targets - intr[:, None, 2:]) / intr[:, None, :2], torch.ones_like(targets[..., :1])], -1)
        group = torch.repeat_interleave(torch.arange(k, device=points.device), (offsets[1:] - offsets[:-1]).long())
        dg = d[:, group]  # (B, M, 3): each candidate's own ray
        # |q x d|^2 / |d|^2, not |q|^2 - (q.d)^2 / |d|^2: the latter cancels badly in float32.
        dist = (torch.linalg.cross(q, dg) ** 2).sum(-1) / (dg * dg).sum(-1)
        out = torch.empty(b, k, dtype=torch.int32, device=points.device)
        for j in range(k):  # K is small (e.g. 17); argmin returns the first minimum like the kernel
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            out[:, j] = cand[lo:hi][dist[:, lo:hi].argmin(1)].to(torch.int32)
    return out
