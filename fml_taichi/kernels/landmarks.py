"""Sparse 2D point alignment kernels: the reprojection loss of gathered points (differentiated by
Taichi's autodiff) and the closest-to-ray candidate selection. The ops and their contracts are in
:mod:`fml_taichi.ops.landmarks`.

The reprojection kernel is one top-level loop over (b, k) with only static inner loops, the shape
Taichi's reverse mode needs; with K = 68 targets the 2-D loop and the atomic adds into B losses are
negligible (measured in benchmarks/bench_model_losses.py --terms).
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import functools

import taichi as ti

from ..common.constants import LANDMARK_Z_MIN as _Z_MIN

__all__ = ["euler_zyx", "landmark_kernels"]


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
def landmark_kernels(dtype):
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
