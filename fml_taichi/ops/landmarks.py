"""Sparse 2D point alignment kernels: candidate selection by back-projected rays, reprojection loss.

Generic: a point set ``points[B, N, 3]`` (model space) seen by a pinhole camera through a rigid pose
(``rotation`` Euler angles, ``translation``), and ``K`` 2D targets in pixels.

- :func:`closest_to_rays` picks, for each target ``k``, the candidate point (from a CSR list of
  candidate indices per target) closest in 3D to the ray from the camera centre through the target
  pixel. Not differentiable: it returns int32 indices.
- :func:`sparse_reprojection_loss` projects the gathered points ``points[b, idx[b, k]]`` and returns
  ``loss[b] = 1/K sum_k w[b, k] ||target[b, k] - project(R p + t)||^2`` (pixels squared),
  differentiable in ``points``, ``rotation`` and ``translation``.

Conventions (``docs/conventions.md``): ``R = Rz(rz) @ Ry(ry) @ Rx(rx)``, ``p_cam = R p + t``,
``u = fx x / z + cx``, ``v = fy y / z + cy``; intrinsics ``[fx, fy, cx, cy]`` of shape (4,) or (B, 4).

Why the projection is fused in here instead of gathering the image-formation kernel's ``uv``: only K
points (e.g. 68) are needed, so projecting them in-kernel avoids a dense ``[B, N, 2]`` gradient
buffer and keeps this op independent of any other kernel's outputs. Taichi autodiff builds the
backward (kernel structure: :mod:`fml_taichi.kernels.landmarks`); the whole E_sparse term with the
sliding selection, forward + backward, is 1.5 ms at 4k vertices and batch 5 (see
benchmarks/bench_model_losses.py --terms).
"""
import torch

from ..common import runtime
from ..common.loss_checks import check_csr, check_gather, check_pose, check_targets
from ..kernels.landmarks import landmark_kernels
from .bridge import detached, launch_grad, ti_float

__all__ = ["sparse_reprojection_loss", "closest_to_rays"]


class _Reprojection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, rotation, translation, intrinsics, targets, weights, idx):
        kern, _ = landmark_kernels(ti_float(points.dtype))
        loss = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
        args = [points, idx, rotation, translation, intrinsics, targets, weights, loss]
        kern(*detached(args))
        ctx.save_for_backward(points, idx, rotation, translation, intrinsics, targets, weights)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        points, idx, rotation, translation, intrinsics, targets, weights = ctx.saved_tensors
        kern, _ = landmark_kernels(ti_float(points.dtype))
        # A fresh output buffer: the reverse pass only reads its gradient, never its value.
        loss = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
        args = [points, idx, rotation, translation, intrinsics, targets, weights, loss]
        # Fixed set of differentiated inputs: one compiled gradient kernel per dtype.
        gp, gr, gt = launch_grad(kern, args, grad_inputs=[0, 2, 3], outputs=[7], grad_outputs=[grad_loss])
        return gp, gr, gt, None, None, None, None


def sparse_reprojection_loss(points: torch.Tensor, indices: torch.Tensor, rotation: torch.Tensor,
                             translation: torch.Tensor, intrinsics: torch.Tensor, targets: torch.Tensor,
                             weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared reprojection error of gathered points, per batch item.

    ``loss[b] = 1/K sum_k weights[b, k] * ||targets[b, k] - pi(R_b points[b, indices[b, k]] + t_b)||^2``

    Args:
        points: (B, N, 3) float32/float64 model-space points.
        indices: (B, K) int32 indices into ``N`` (which point each target belongs to).
        rotation: (B, 3) Euler angles (rx, ry, rz), radians, ``R = Rz Ry Rx``.
        translation: (B, 3) camera-frame translation, same units as ``points``.
        intrinsics: (4,) or (B, 4) ``[fx, fy, cx, cy]`` in pixels. Treated as a constant (no gradient).
        targets: (B, K, 2) target pixel coordinates (x, y). Constant (no gradient).
        weights: (B, K) per-target weights (e.g. detector confidences). Constant (no gradient).

    Returns:
        (B,) loss in squared pixels, differentiable w.r.t. ``points``, ``rotation``, ``translation``.

    Raises:
        ValueError: wrong shapes/dtypes, non-contiguous, NaN/inf, empty inputs, out-of-range indices,
        zero focal length.
    """
    b, intr = check_pose(points, rotation, translation, intrinsics)
    check_targets(b, points, targets)
    k = targets.shape[1]
    check_gather(b, k, points.shape[1], points, indices, weights)
    runtime.init()
    loss = _Reprojection.apply(points.contiguous(), rotation.contiguous(), translation.contiguous(), intr,
                               targets.detach(), weights.detach(), indices)
    # Normalising in torch keeps float scalars out of the kernel (f64 kernels would round them to f32).
    return loss / k


def closest_to_rays(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                    intrinsics: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor,
                    candidates: torch.Tensor) -> torch.Tensor:
    """For each 2D target, the candidate point closest to the ray through it (not differentiable).

    Target ``k`` of batch item ``b`` considers ``candidates[offsets[k]:offsets[k + 1]]``, transforms each
    to the camera frame (``R p + t``), and returns the one with the smallest squared Euclidean distance
    to the 3D line through the camera centre and the back-projection of ``targets[b, k]``. Ties go to
    the earliest candidate.

    Args:
        points: (B, N, 3) model-space points; rotation (B, 3), translation (B, 3); intrinsics (4,)|(B, 4).
        targets: (B, K, 2) pixel coordinates.
        offsets: (K + 1,) int32 CSR offsets, strictly increasing from 0 to ``len(candidates)``.
        candidates: (M,) int32 point indices in ``[0, N)``.

    Returns:
        (B, K) int32 point indices.
    """
    b, intr = check_pose(points, rotation, translation, intrinsics)
    check_targets(b, points, targets)
    check_csr(offsets, candidates, targets.shape[1], points.shape[1])
    runtime.init()
    _, kern = landmark_kernels(ti_float(points.dtype))
    out = torch.empty(b, targets.shape[1], dtype=torch.int32, device=points.device)
    kern(*detached([points.contiguous(), rotation.contiguous(), translation.contiguous(), intr,
                    targets.contiguous(), offsets, candidates, out]))
    return out
