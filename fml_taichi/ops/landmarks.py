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
backward: the kernel is one top-level loop over (b, k) with only static inner loops, and with K = 68
targets the 2-D loop and the atomic adds into B losses are negligible (the whole E_sparse term with the
sliding selection, forward + backward, is 1.5 ms at 4k vertices and batch 5; see
benchmarks/bench_model_losses.py --terms).
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import functools

import taichi as ti
import torch

from ..common import runtime
from ..common.loss_checks import check_csr, check_gather, check_pose, check_targets
from ..reference.landmarks import Z_MIN as _Z_MIN
from .bridge import detached, launch_grad

_TI_DTYPES = {torch.float32: ti.f32, torch.float64: ti.f64}


@ti.func
def euler_zyx(rx, ry, rz):
    """``Rz(rz) @ Ry(ry) @ Rx(rx)`` as a 3x3 ti.Matrix (the project's Euler convention)."""
    cx, sx = ti.cos(rx), ti.sin(rx)
    cy, sy = ti.cos(ry), ti.sin(ry)
    cz, sz = ti.cos(rz), ti.sin(rz)
    return ti.Matrix([
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ])


@functools.cache
def _kernels(dtype):
    """Kernels specialised to one float dtype (locals must carry it: literals default to f32)."""
    nd = ti.types.ndarray

    @ti.kernel
    def reprojection(points: nd(dtype=dtype, ndim=3), idx: nd(dtype=ti.i32, ndim=2),
                     rotation: nd(dtype=dtype, ndim=2), translation: nd(dtype=dtype, ndim=2),
                     intrinsics: nd(dtype=dtype, ndim=2), targets: nd(dtype=dtype, ndim=3),
                     weights: nd(dtype=dtype, ndim=2), loss: nd(dtype=dtype, ndim=1)):
        # One top-level loop, static inner work only: the shape Taichi's reverse mode needs.
        for b, k in ti.ndrange(targets.shape[0], targets.shape[1]):
            i = idx[b, k]
            rot = euler_zyx(rotation[b, 0], rotation[b, 1], rotation[b, 2])
            p = ti.Vector([points[b, i, 0], points[b, i, 1], points[b, i, 2]])
            t = ti.Vector([translation[b, 0], translation[b, 1], translation[b, 2]])
            q = rot @ p + t
            # Clamp like the image-formation layer: a point at or behind the camera gives a huge but
            # finite residual instead of inf/NaN.
            z = ti.max(q[2], ti.cast(_Z_MIN, dtype))
            u = intrinsics[b, 0] * q[0] / z + intrinsics[b, 2]
            v = intrinsics[b, 1] * q[1] / z + intrinsics[b, 3]
            du = targets[b, k, 0] - u
            dv = targets[b, k, 1] - v
            loss[b] += weights[b, k] * (du * du + dv * dv)

    @ti.kernel
    def closest(points: nd(dtype=dtype, ndim=3), rotation: nd(dtype=dtype, ndim=2),
                translation: nd(dtype=dtype, ndim=2), intrinsics: nd(dtype=dtype, ndim=2),
                targets: nd(dtype=dtype, ndim=3), offsets: nd(dtype=ti.i32, ndim=1),
                candidates: nd(dtype=ti.i32, ndim=1), out: nd(dtype=ti.i32, ndim=2)):
        for b, k in ti.ndrange(targets.shape[0], targets.shape[1]):
            rot = euler_zyx(rotation[b, 0], rotation[b, 1], rotation[b, 2])
            t = ti.Vector([translation[b, 0], translation[b, 1], translation[b, 2]])
            # Ray through the camera centre and the back-projected pixel (z = 1 plane).
            d = ti.Vector([(targets[b, k, 0] - intrinsics[b, 2]) / intrinsics[b, 0],
                           (targets[b, k, 1] - intrinsics[b, 3]) / intrinsics[b, 1],
                           ti.cast(1, dtype)])
            dd = d.dot(d)
            best = ti.cast(0, dtype)
            best_i = -1
            for c in range(offsets[k], offsets[k + 1]):
                i = candidates[c]
                q = rot @ ti.Vector([points[b, i, 0], points[b, i, 1], points[b, i, 2]]) + t
                # Squared distance of q to the line as |q x d|^2 / |d|^2: the textbook |q|^2 - (q.d)^2/|d|^2
                # cancels catastrophically in float32 at 500 mm (errors ~0.03 mm^2 picked wrong vertices).
                qx = q.cross(d)
                dist = qx.dot(qx) / dd
                # Strict '<': ties go to the first candidate, so the choice is deterministic.
                if best_i < 0 or dist < best:
                    best = dist
                    best_i = i
            out[b, k] = best_i

    return reprojection, closest


class _Reprojection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, rotation, translation, intrinsics, targets, weights, idx):
        kern, _ = _kernels(_TI_DTYPES[points.dtype])
        loss = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
        args = [points, idx, rotation, translation, intrinsics, targets, weights, loss]
        kern(*detached(args))
        ctx.save_for_backward(points, idx, rotation, translation, intrinsics, targets, weights)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        points, idx, rotation, translation, intrinsics, targets, weights = ctx.saved_tensors
        kern, _ = _kernels(_TI_DTYPES[points.dtype])
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
    _, kern = _kernels(_TI_DTYPES[points.dtype])
    out = torch.empty(b, targets.shape[1], dtype=torch.int32, device=points.device)
    kern(*detached([points.contiguous(), rotation.contiguous(), translation.contiguous(), intr,
                    targets.contiguous(), offsets, candidates, out]))
    return out
