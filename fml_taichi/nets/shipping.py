"""Shrink a training checkpoint for shipping inside the package (``fml_taichi/checkpoints/default.pt``).

What goes: the optimizer state (Adam's two moments triple the size), the RNG states, and float32
precision of the large weight tensors, stored as float16 (halving them). What stays: the config, the
face-model spec, the validation history in ``extra``, every small tensor (BatchNorm statistics, the
codec's sigmas and offsets) in float32, integer buffers as they are. The result is an ordinary
checkpoint: :meth:`~fml_taichi.recon.reconstructor.Reconstructor.from_checkpoint` loads it, and
``load_state_dict`` copies the float16 values into the float32 networks, so inference runs in float32.

float16 keeps ~3 significant digits (relative step 2^-11 ~ 5e-4) over +-65504: far finer than the
noise of CPU training, and :func:`shrink_checkpoint` measures what it costs on random crops
(largest vertex displacement in mm) so the number is in front of whoever ships the file.

Command: ``fml-taichi ship-checkpoint runs/default/checkpoint.pt fml_taichi/checkpoints/default.pt``
(:mod:`fml_taichi.apps.ship_checkpoint_cmd`).
"""
from __future__ import annotations

import os

import torch

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint

__all__ = ["shrink_state", "shrink_checkpoint", "MIN_NUMEL", "SIZE_LIMIT_MB"]

#: Float tensors with at least this many elements are stored as float16; smaller ones stay float32
#: (they cost nothing and include BatchNorm statistics, whose small variances float16 would coarsen).
MIN_NUMEL = 4096
#: The repository's limit for the shipped file.
SIZE_LIMIT_MB = 20.0


def shrink_state(state: dict, dtype: torch.dtype = torch.float16, min_numel: int = MIN_NUMEL) -> dict:
    """A copy of ``state`` with large floating tensors cast to ``dtype`` (others unchanged)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() >= min_numel:
            if dtype == torch.float16 and bool((v.abs() > 65000).any()):
                raise ValueError(f"{k}: values beyond float16's range (|x| > 65000); cannot shrink it")
            v = v.detach().to(dtype)
        out[k] = v.detach().clone() if isinstance(v, torch.Tensor) else v
    return out


def shrink_checkpoint(src, dst, dtype: torch.dtype = torch.float16, min_numel: int = MIN_NUMEL) -> dict:
    """Write the shipping version of checkpoint ``src`` to ``dst`` (atomically); returns
    ``{"bytes_before", "bytes_after", "step"}``. Errors as :func:`~fml_taichi.nets.checkpoint.load_checkpoint`."""
    ck = load_checkpoint(src)
    extra = dict(ck.extra)
    extra["shipped"] = {"storage": str(dtype).replace("torch.", ""), "min_numel": int(min_numel),
                        "source_step": int(ck.step)}
    small = Checkpoint(config=ck.config, face_model_spec=ck.face_model_spec,
                       encoder=shrink_state(ck.encoder, dtype, min_numel),
                       multilevel=shrink_state(ck.multilevel, dtype, min_numel),
                       step=ck.step, stage=ck.stage, optimizer=None, rng={}, extra=extra)
    save_checkpoint(dst, small)
    return {"bytes_before": os.path.getsize(src), "bytes_after": os.path.getsize(dst), "step": int(ck.step)}
