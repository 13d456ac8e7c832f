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
import pickle
import zipfile
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
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fml_taichi training checkpoint (no '{FORMAT}' marker)")
    version = payload.get("version")
    if version != VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {version!r}; this code reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} misses field(s): {', '.join(missing)}")
    return Checkpoint(
        config=payload["config"], face_model_spec=payload["face_model_spec"], encoder=payload["encoder"],
        multilevel=payload["multilevel"], step=int(payload["step"]), stage=int(payload.get("stage", 1)),
        optimizer=payload.get("optimizer"), rng=payload.get("rng") or {}, extra=payload.get("extra") or {},
        version=version,
    )
