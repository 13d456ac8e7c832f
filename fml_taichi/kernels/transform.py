"""Rigid transform ``Phi(v) = R v + t`` (paper Sec. 5), batched over B images.

Rotation convention (docs/conventions.md): ``rotation = (rx, ry, rz)`` Euler angles in radians and
``R = Rz(rz) @ Ry(ry) @ Rx(rx)``, i.e. x is applied first. :func:`euler_to_matrix` is torch (a 3x3
per image: a kernel launch would cost more than the maths) and is shared with the reference.
"""

import functools

import taichi as ti
import torch

from .. import backend
from ..reference.image_formation import check_points, check_rotation_translation, euler_to_matrix
from ._common import AutodiffOp

__all__ = ["euler_to_matrix", "rigid_transform", "transform_kernel"]


@functools.cache
def transform_kernel():
    """``out[b, i] = R[b] @ v[b, i] + t[b]``; args (v [B,N,3], R [B,3,3], t [B,3], out [B,N,3], dt).

    Differentiated by Taichi's autodiff: the R and t gradients are reductions over N done with
    atomics, which is fine at these sizes (N=30k, B=8: backward ~2x the forward, measured).
    """
    backend.init()

    @ti.kernel
    def transform(v: ti.types.ndarray(), rot: ti.types.ndarray(), t: ti.types.ndarray(),
                  out: ti.types.ndarray(), dt: ti.template()):
        for b, i in ti.ndrange(v.shape[0], v.shape[1]):
            for r in ti.static(range(3)):
                out[b, i, r] = (rot[b, r, 0] * v[b, i, 0] + rot[b, r, 1] * v[b, i, 1]
                                + rot[b, r, 2] * v[b, i, 2] + t[b, r])

    return transform


@functools.cache
def _op() -> AutodiffOp:
    return AutodiffOp(transform_kernel(), lambda v, rot, t: [torch.zeros_like(v)], differentiable=(0, 1, 2))


def rigid_transform(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Camera-space points ``v_cam = R v + t`` with ``R = Rz @ Ry @ Rx`` (see module docstring).

    vertices [B, N, 3] float32/float64 contiguous; rotation [B, 3] Euler angles (radians);
    translation [B, 3]. Returns [B, N, 3]; differentiable w.r.t. all three.
    """
    check_points("vertices", vertices)
    check_rotation_translation(rotation, translation, "vertices", vertices)
    rot = euler_to_matrix(rotation).contiguous()
    return _op()(vertices, rot, translation.contiguous())
