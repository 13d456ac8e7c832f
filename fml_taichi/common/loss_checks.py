"""Argument checks shared by the loss kernels and their torch references (no Taichi import here,
so ``fml_taichi.reference`` stays plain torch)."""
from __future__ import annotations

import torch

from .checks import check_indices, check_same, check_tensor


def check_pose(points, rotation, translation, intrinsics):
    """Pose and camera checks; returns (B, intrinsics expanded to a contiguous (B, 4))."""
    check_tensor("points", points, shape=(None, None, 3))
    b, n = points.shape[0], points.shape[1]
    if n == 0:
        raise ValueError("points: empty point set (N = 0)")
    check_tensor("rotation", rotation, shape=(b, 3))
    check_tensor("translation", translation, shape=(b, 3))
    check_tensor("intrinsics", intrinsics, shape=(4,) if getattr(intrinsics, "ndim", 0) == 1 else (b, 4))
    for name, t in (("rotation", rotation), ("translation", translation), ("intrinsics", intrinsics)):
        check_same("points", points, name, t)
    intrinsics = intrinsics.expand(b, 4)
    if bool((intrinsics[:, :2] == 0).any()):
        raise ValueError("intrinsics: focal lengths fx, fy must be non-zero")
    return b, intrinsics.detach().contiguous()


def check_targets(b, points, targets, name="targets"):
    """(B, K, 2) 2D targets of the points' dtype, K > 0."""
    check_tensor(name, targets, shape=(b, None, 2))
    check_same("points", points, name, targets)
    if targets.shape[1] == 0:
        raise ValueError(f"{name}: no targets (K = 0)")


def check_gather(b, k, n, points, indices, weights):
    """``indices`` (B, K) int32 in [0, N) and ``weights`` (B, K) of the points' dtype."""
    check_indices("indices", indices, n, shape=(b, k))
    check_tensor("weights", weights, shape=(b, k))
    check_same("points", points, "weights", weights)


def check_csr(offsets, candidates, groups: int, n: int, names=("offsets", "candidates"),
              allow_empty: bool = False):
    """CSR lists: ``offsets`` (groups + 1,) int32 from 0 to len(``candidates``), entries in [0, n).

    ``allow_empty=False`` (candidate lists) requires every group to have a member; adjacency lists
    (``allow_empty=True``) may have isolated rows.
"""
    check_tensor(names[0], offsets, shape=(groups + 1,), dtypes=(torch.int32,), finite=False)
    check_tensor(names[1], candidates, shape=(None,), dtypes=(torch.int32,), finite=False)
    if int(offsets[0]) != 0 or int(offsets[-1]) != candidates.shape[0]:
        raise ValueError(f"{names[0]}: must start at 0 and end at len({names[1]}) = {candidates.shape[0]}, "
                         f"got {int(offsets[0])} .. {int(offsets[-1])}")
    if not allow_empty and bool((offsets[1:] <= offsets[:-1]).any()):
        raise ValueError(f"{names[0]}: must be strictly increasing (every group needs a candidate)")
    if allow_empty and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"{names[0]}: must be non-decreasing")
    check_indices(names[1], candidates, n)


def check_values(name, values):
    """(B, N, C) float32/float64 per-point attributes with N > 0 and C > 0; returns (B, N, C)."""
    check_tensor(name, values, shape=(None, None, None))
    b, n, c = values.shape
    if n == 0 or c == 0:
        raise ValueError(f"{name}: empty attributes (N = {n}, C = {c})")
    return b, n, c


def check_edges(src, dst, n: int) -> int:
    """Pair endpoints: ``src``, ``dst`` (E,) int32 in [0, n), E > 0; returns E."""
    check_tensor("src", src, shape=(None,), dtypes=(torch.int32,), finite=False)
    e = src.shape[0]
    if e == 0:
        raise ValueError("src: no pairs (E = 0)")
    check_indices("src", src, n)
    check_indices("dst", dst, n, shape=(e,))
    return e
