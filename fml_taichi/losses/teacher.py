"""Synthetic 3D supervision of the geometry (not in the paper): E_teacher, the squared distance in mm
between the predicted face-region vertices and the true ones.

The paper trains the geometry correctives by self-supervision alone (E_photo and the regularisers).
On the CPU default's synthetic faces that signal does not identify the geometry beyond the base model
(docs/training.md, "Why the final geometry does not beat the base geometry"), so a config may add this
term (``losses.geometry_teacher``: its weight) using the ground truth the synthetic generator knows.
It is an upper bound of what the encoder can read from the image, not the paper's method.

The alignment follows the evaluation (:func:`fml_taichi.losses.metrics.geometric_error`): the
prediction is mapped onto the truth by the least-squares similarity transform over the region
(Umeyama), then ``1/|R| sum_{i in R} ||s R x_i + t - y_i||^2`` per image. The transform is computed
without gradient: it minimises the same sum, so (envelope theorem) the gradient of the re-aligned
distance with respect to the prediction equals the gradient at the fixed optimal transform.
Point-to-point (corresponding vertices, same topology) rather than the evaluation's point-to-surface.
"""
from __future__ import annotations

import torch

from ..common.checks import check_tensor


@torch.no_grad()
def similarity_to(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-batch least-squares similarity ``target ~ s R source + t`` (Umeyama 1991, reflection-corrected).

    ``source``, ``target`` [B, P, 3]; returns (s [B], R [B, 3, 3], t [B, 3]), computed in float64."""
    src, dst = source.double(), target.double()
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.transpose(1, 2) @ xs / src.shape[1]  # [B, 3, 3]
    u, sing, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sing)
    d[:, 2] = torch.sign(torch.det(u) * torch.det(vt))
    d[d == 0] = 1.0
    rot = (u * d.unsqueeze(1)) @ vt
    var_s = xs.square().sum(-1).mean(1)
    scale = (sing * d).sum(-1) / var_s.clamp_min(1e-12)
    t = mu_d.squeeze(1) - scale.unsqueeze(-1) * (rot @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return scale, rot, t


def geometry_teacher_term(geometry: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """E_teacher per image [B] (mm^2): see the module docstring.

    ``geometry`` [B, N, 3] (the final level, model space, mm), ``truth`` [B, N, 3] (the true mesh, same
    topology), ``region`` [N] bool (the vertices scored, e.g. ``eval.harness.face_region``)."""
    check_tensor("geometry", geometry, shape=(None, None, 3), contiguous=False)
    check_tensor("truth", truth, shape=tuple(geometry.shape), contiguous=False)
    region = torch.as_tensor(region, dtype=torch.bool, device=geometry.device)
    if region.shape != (geometry.shape[1],) or int(region.sum()) < 3:
        raise ValueError(f"region: expected a [{geometry.shape[1]}] bool mask with at least 3 vertices, "
                         f"got shape {tuple(region.shape)} with {int(region.sum())}")
    x, y = geometry[:, region], truth[:, region].to(geometry.dtype)
    s, rot, t = similarity_to(x.detach(), y.detach())
    s, rot, t = s.to(x.dtype), rot.to(x.dtype), t.to(x.dtype)
    aligned = s[:, None, None] * (x @ rot.transpose(1, 2)) + t[:, None, :]
    return (aligned - y).square().sum(-1).mean(1)
