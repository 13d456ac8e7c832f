"""Argument checks shared by every public op: each failure is a ValueError naming the argument."""
from __future__ import annotations

from typing import Sequence

import torch

FLOATS = (torch.float32, torch.float64)


def _shape_str(shape: Sequence) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_tensor(
    name: str,
    t,
    shape: Sequence | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOATS,
    finite: bool = True,
    contiguous: bool = True,
    min_size: int | None = None,
) -> torch.Tensor:
    """Check ``t`` and return it. ``shape`` entries: int (exact) or None (any), len = ndim."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
        if not ok:
            raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name}: expected dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous())")
    if min_size is not None and t.shape[0] < min_size:
        raise ValueError(f"{name}: expected at least {min_size} rows, got {t.shape[0]} (empty input?)")
    if finite and t.is_floating_point() and not _all_finite(t):
        raise ValueError(f"{name}: contains NaN or inf values")
    return t


def _all_finite(t: torch.Tensor) -> bool:
    # One reduction first (a NaN/inf poisons the sum): ~3x cheaper than an element mask on image
    # batches; only a non-finite sum (which large finite values can also cause) needs the full check.
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_indices(name: str, idx: torch.Tensor, upper: int, shape: Sequence | None = None) -> torch.Tensor:
    """Integer index tensor (int32 expected by kernels) with every entry in [0, upper)."""
    check_tensor(name, idx, shape=shape, dtypes=(torch.int32,), finite=False)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        raise ValueError(
            f"{name}: index out of range: values must lie in [0, {upper}), got [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


def check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Same dtype and device, so one kernel can read both."""
    if a.dtype != b.dtype:
        raise ValueError(f"{name_b}: dtype {b.dtype} differs from {name_a}'s {a.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_b}: device {b.device} differs from {name_a}'s {a.device}")


def check_batch(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> int:
    """All tensors share their leading (batch) size; returns it."""
    sizes = {n: t.shape[0] for n, t in zip(names, tensors)}
    if len(set(sizes.values())) != 1:
        raise ValueError("batch sizes differ: " + ", ".join(f"{n}={s}" for n, s in sizes.items()))
    return next(iter(sizes.values()))
