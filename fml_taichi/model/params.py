"""The named parameter structure every module shares (``docs/conventions.md``).

Only the encoder's output head packs these flat; everything else passes a :class:`FaceParams`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch

from ..common.checks import check_tensor


@dataclass
class FaceParams:
    """Per-image face parameters, batch-first.

    shape [B, m_s], expression [B, m_e], reflectance [B, m_r] (base-model coefficients, in units of
    the basis as stored; the model's sigmas say how large one standard deviation is);
    delta_geometry [B, C_g], delta_reflectance [B, C_r] (corrective coefficients);
    rotation [B, 3] (Euler angles, radians; axis order in ``ops.transform``);
    translation [B, 3] (millimetres, camera frame); light [B, 9, 3] (SH coefficients per RGB channel).
    """

    shape: torch.Tensor
    expression: torch.Tensor
    reflectance: torch.Tensor
    delta_geometry: torch.Tensor
    delta_reflectance: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    light: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.rotation.shape[0]

    def validate(self) -> "FaceParams":
        b = self.batch_size
        for f in fields(self):
            t = getattr(self, f.name)
            check_tensor(f"params.{f.name}", t, contiguous=False)
            if t.shape[0] != b:
                raise ValueError(f"params.{f.name}: batch size {t.shape[0]} differs from rotation's {b}")
        check_tensor("params.rotation", self.rotation, shape=(b, 3), contiguous=False)
        check_tensor("params.translation", self.translation, shape=(b, 3), contiguous=False)
        check_tensor("params.light", self.light, shape=(b, 9, 3), contiguous=False)
        return self

    def to(self, *args, **kwargs) -> "FaceParams":
        return FaceParams(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def detach(self) -> "FaceParams":
        return FaceParams(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes) -> "FaceParams":
        return dataclasses.replace(self, **changes)

    def index(self, i) -> "FaceParams":
        """A sub-batch (``i`` an int, slice or index tensor), keeping the batch dimension."""
        if isinstance(i, int):
            i = slice(i, i + 1)
        return FaceParams(**{f.name: getattr(self, f.name)[i] for f in fields(self)})

    @classmethod
    def zeros(cls, batch: int, m_s: int, m_e: int, m_r: int, c_g: int, c_r: int,
              dtype=torch.float32, device="cpu") -> "FaceParams":
        z = lambda *s: torch.zeros(*s, dtype=dtype, device=device)  # noqa: E731
        return cls(z(batch, m_s), z(batch, m_e), z(batch, m_r), z(batch, c_g), z(batch, c_r),
                   z(batch, 3), z(batch, 3), z(batch, 9, 3))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
