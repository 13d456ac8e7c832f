"""Loss weights and hyper-parameters of Sec. 6, read from YAML (``configs/losses.yaml``).

The dataclass defaults equal the shipped YAML (a test keeps them in sync); the reasoning behind each
default value is written next to it in ``configs/losses.yaml``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

#: The shipped weights file (repository ``configs/``; present in a source checkout / editable install).
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "losses.yaml"


PHOTO_VISIBILITY = ("backface", "zbuffer")


@dataclass(frozen=True)
class LossWeights:
    """Every weight of Eq. 6-15 plus the few hyper-parameters the terms need.

    E_total = E_data + w_reg E_reg;  E_data = E_sparse + w_photo E_photo;
    E_reg = E_std + E_smo + E_ref + E_glo + E_sta, with w_rstd, w_smo, w_ref, w_glo, w_sta inside the
    terms as in the paper.
    """

    w_photo: float = 100.0
    w_reg: float = 0.05
    w_rstd: float = 1.0
    w_smo: float = 25.0
    w_ref: float = 5.0
    w_glo: float = 10.0
    w_sta: float = 0.25
    # E_ref (Eq. 13): weights exp(-ref_alpha * chromaticity distance); sparsity exponent p; the
    # smoothing eps of ||.||^p (reflectance units) and of the chromaticity denominator.
    ref_alpha: float = 50.0
    ref_p: float = 0.9
    ref_eps: float = 1e-3
    chroma_eps: float = 1e-3
    # E_glo (Eq. 14): partners per skin vertex and the seed that fixes them per model.
    glo_partners: int = 6
    glo_seed: int = 0
    # E_sparse (Eq. 10): residuals are measured in pixels of an image this many pixels wide (max(H, W)),
    # so the same weights work at any resolution. Set to 0 for raw pixels.
    landmark_reference_size: float = 240.0
    # Jaw landmarks slide along their contour candidates (Fig. 2); False pins them to their vertex.
    sliding_contour: bool = True
    # E_photo's vertex visibility: "backface" (the paper's test) or "zbuffer" (also drops self-occluded
    # vertices, e.g. the cheek behind the nose of a turned head; costs one rasterisation per level).
    photo_visibility: str = "backface"

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(v, bool):
                    raise ValueError(f"{f.name}: expected true/false, got {v!r}")
                continue
            if f.type == "str":
                continue  # checked against its choices below
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{f.name}: expected a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"{f.name}: expected >= 0, got {v}")
        if not 0 < self.ref_p <= 2:
            raise ValueError(f"ref_p: expected 0 < p <= 2, got {self.ref_p}")
        for name in ("ref_eps", "chroma_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.photo_visibility not in PHOTO_VISIBILITY:
            raise ValueError(f"photo_visibility: expected one of {PHOTO_VISIBILITY}, got {self.photo_visibility!r}")
        if self.glo_partners < 1 or int(self.glo_partners) != self.glo_partners:
            raise ValueError(f"glo_partners: expected a positive integer, got {self.glo_partners}")
        if int(self.glo_seed) != self.glo_seed:
            raise ValueError(f"glo_seed: expected an integer, got {self.glo_seed}")

    @classmethod
    def from_dict(cls, data: dict, source: str = "weights") -> "LossWeights":
        """Build from a mapping; unknown keys are an error (a typo must not silently use a default)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of weight names to numbers, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike = DEFAULT_CONFIG) -> "LossWeights":
        """Read a YAML mapping (a top-level ``losses:`` section is also accepted). Missing keys keep
        their defaults.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: unreadable YAML, not a mapping, unknown keys or invalid values.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"loss weights file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        if data is None:
            data = {}
        if isinstance(data, dict) and set(data) == {"losses"}:
            data = data["losses"]
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "LossWeights":
        return dataclasses.replace(self, **changes)


def default_weights() -> LossWeights:
    """The shipped ``configs/losses.yaml`` when present (source checkout), else the dataclass defaults."""
    return LossWeights.from_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else LossWeights()
