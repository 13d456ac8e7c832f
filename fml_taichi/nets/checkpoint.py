"""Training checkpoints: one file holds everything to resume a run or rebuild the trained model.

File format (version 1): a ``torch.save`` dict, read back with ``weights_only=True`` (no arbitrary
code runs when loading a file someone sent you)::

    format            "fml_taichi.checkpoint"  (identifies the file)
    version           1
    config            the training config as a plain dict (TrainConfig.to_dict())
    face_model_spec   how to rebuild the base model, e.g. {"source": "default", "n_vertices": 4000}
    encoder           encoder state_dict (backbone, heads, codec buffers)
    multilevel        MultiLevelModel state_dict (Theta_g, Theta_r)
    optimizer         optimizer state_dict of the current stage, or None
    stage             1 or 2: the stage the optimizer belongs to
    step              global steps done (stage 1 + stage 2)
    rng               {"torch": ByteTensor, "data": ByteTensor, ...}: RNG states to resume exactly
    extra             free-form plain data (e.g. the validation history)

Writes are atomic (temp file + rename): a crash leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..common.atomic import atomic_path

FORMAT = "fml_taichi.checkpoint"
VERSION = 1
_REQUIRED = ("config", "face_model_spec", "encoder", "multilevel", "step")


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be used (corrupt, other format, other version)."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file (see the module docstring for each field)."""

    config: dict
    face_model_spec: dict
    encoder: dict
    multilevel: dict
    step: int
    stage: int = 1
    optimizer: dict | None = None
    rng: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    version: int = VERSION

    def to_payload(self) -> dict:
        return {
            "format": FORMAT, "version": self.version, "config": self.config,
            "face_model_spec": self.face_model_spec, "encoder": self.encoder, "multilevel": self.multilevel,
            "optimizer": self.optimizer, "stage": int(self.stage), "step": int(self.step),
            "rng": self.rng, "extra": self.extra,
        }


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint | None = None, **fields) -> None:
    """Write a checkpoint atomically. Pass a :class:`Checkpoint` or its fields as keywords."""
    if checkpoint is None:
        checkpoint = Checkpoint(**fields)
    elif fields:
        raise TypeError("save_checkpoint: pass either a Checkpoint or keyword fields, not both")
    payload = checkpoint.to_payload()
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated/corrupt, not a fml_taichi checkpoint, of an
            unsupported version, or misses a field (the message names the file and the problem).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged archives raise many types (KeyError, IndexError, ...)
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), str) or payload["format"] != FORMAT:
        raise CheckpointError(f"{path!r} is not a fml_taichi training checkpoint (no '{FORMAT}' marker)")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {version!r}; this code reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} misses field(s): {', '.join(missing)}")
    _check_fields(path, payload)
    return Checkpoint(
        config=payload["config"], face_model_spec=payload["face_model_spec"], encoder=payload["encoder"],
        multilevel=payload["multilevel"], step=int(payload["step"]), stage=int(payload.get("stage", 1)),
        optimizer=payload.get("optimizer"), rng=payload.get("rng") or {}, extra=payload.get("extra") or {},
        version=version,
    )


def _check_fields(path: str, payload: dict) -> None:
    """Field types and finite weights: a file that passes loads into the networks without surprises."""
    for key in ("config", "face_model_spec", "encoder", "multilevel"):
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"checkpoint {path!r}: field {key!r} should be a dict, got {type(payload[key]).__name__}")
    for key in ("step", "stage"):
        v = payload.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"checkpoint {path!r}: field {key!r} should be an int >= 0, got {v!r}")
    optimizer = payload.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, dict):
        raise CheckpointError(f"checkpoint {path!r}: field 'optimizer' should be a dict or None")
    for key in ("rng", "extra"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise CheckpointError(f"checkpoint {path!r}: field {key!r} should be a dict")
    sections = {"encoder": payload["encoder"], "multilevel": payload["multilevel"],
                "optimizer": (optimizer or {}).get("state", {})}
    for key, section in sections.items():
        bad = [name for name, t in _tensors(section) if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise CheckpointError(
                f"checkpoint {path!r}: {key!r} holds NaN/inf values ({len(bad)} tensor(s), e.g. {bad[0]}): the "
                "run diverged before this file was written; use an earlier checkpoint of that run (e.g. "
                "checkpoint_stage1.pt) or train again with lower learning rates (stage1.lr / stage2.lr)")


def _tensors(tree, prefix: str = ""):
    """(dotted name, tensor) for every tensor in nested dicts / lists."""
    if isinstance(tree, torch.Tensor):
        yield prefix or "<value>", tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _tensors(v, f"{prefix}.{i}" if prefix else str(i))
