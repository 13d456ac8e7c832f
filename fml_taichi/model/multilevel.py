"""The trainable multi-level face model (Sec. 4, Eq. 1-4): base 3DMM + learned correctives."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..common.checks import check_tensor
from .correctives import LinearCorrective, MLPCorrective
from .face_model import FaceModel
from .params import FaceParams

#: Initial corrective scale per unit of delta: geometry in mm, reflectance in [0, 1] albedo units.
GEOMETRY_INIT_STD = 1e-2
REFLECTANCE_INIT_STD = 1e-4


@dataclass
class ModelOutput:
    """Both levels of one batch, all [B, N, 3]: geometry in mm (model space), reflectance linear RGB.

    ``final_* = base_* + *_corrective`` (Eq. 1, 2); the correctives are returned too because the
    smoothness and stabilisation terms (Eq. 12, 15) act on them directly.
    """

    base_geometry: torch.Tensor
    final_geometry: torch.Tensor
    base_reflectance: torch.Tensor
    final_reflectance: torch.Tensor
    geometry_corrective: torch.Tensor
    reflectance_corrective: torch.Tensor


class MultiLevelModel(nn.Module):
    """Base model (fixed) + trainable geometry and reflectance correctives F_g, F_r.

    ``kind``: "linear" (Theta [3N, C], the paper's choice) or "mlp" (the non-linear option of Fig. 5;
    ``mlp_hidden`` sets its hidden widths). ``seed`` makes Theta's initialisation reproducible.

    The base model is held as a plain attribute (``self.face_model``), not as parameters or buffers, so
    ``state_dict()`` holds only Theta (what checkpoints need) while ``.to()`` / ``.double()`` still move
    and cast it (see :meth:`_apply`).
    """

    def __init__(
        self,
        face_model: FaceModel,
        n_correctives_geometry: int = 500,
        n_correctives_reflectance: int = 500,
        kind: str = "linear",
        mlp_hidden: tuple[int, ...] = (256,),
        seed: int = 0,
    ):
        super().__init__()
        if not isinstance(face_model, FaceModel):
            raise ValueError(f"face_model: expected a FaceModel, got {type(face_model).__name__}")
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind: expected 'linear' or 'mlp', got {kind!r}")
        self.face_model = face_model
        self.kind = kind
        n = face_model.n_vertices

        def make(c: int, init_std: float, s: int) -> nn.Module:
            if kind == "linear":
                return LinearCorrective(n, c, init_std=init_std, seed=s)
            return MLPCorrective(n, c, hidden=tuple(mlp_hidden), init_std=init_std, seed=s)

        self.geometry_corrective = make(n_correctives_geometry, GEOMETRY_INIT_STD, seed)
        self.reflectance_corrective = make(n_correctives_reflectance, REFLECTANCE_INIT_STD, seed + 1)
        self.to(dtype=face_model.dtype, device=face_model.device)

    @property
    def n_correctives_geometry(self) -> int:
        return self.geometry_corrective.n_components

    @property
    def n_correctives_reflectance(self) -> int:
        return self.reflectance_corrective.n_components

    def _apply(self, fn, recurse=True):
        # nn.Module.to/.double/.cuda funnel through _apply: convert the base model with the same fn.
        super()._apply(fn, recurse)
        self.face_model = self.face_model.apply(fn)
        return self

    def zero_params(self, batch: int) -> FaceParams:
        """All-zero :class:`FaceParams` sized for this model (mean face, no correction, zero pose/light)."""
        fm = self.face_model
        return FaceParams.zeros(batch, fm.m_shape, fm.m_expression, fm.m_reflectance,
                                self.n_correctives_geometry, self.n_correctives_reflectance,
                                dtype=fm.dtype, device=fm.device)

    def forward(self, params: FaceParams) -> ModelOutput:
        """Evaluate both levels for a batch of parameters (pose and light are not used here).

        Gradients flow to the coefficients in ``params`` and to Theta.
        """
        if not isinstance(params, FaceParams):
            raise ValueError(f"params: expected FaceParams, got {type(params).__name__}")
        fm = self.face_model
        dt = (fm.dtype,)
        b = params.batch_size
        check_tensor("params.delta_geometry", params.delta_geometry, shape=(b, self.n_correctives_geometry),
                     dtypes=dt, contiguous=False)
        check_tensor("params.delta_reflectance", params.delta_reflectance, shape=(b, self.n_correctives_reflectance),
                     dtypes=dt, contiguous=False)
        base_g, base_r = fm.base(params.shape, params.expression, params.reflectance)
        corr_g = self.geometry_corrective(params.delta_geometry)
        corr_r = self.reflectance_corrective(params.delta_reflectance)
        return ModelOutput(
            base_geometry=base_g,
            final_geometry=base_g + corr_g,
            base_reflectance=base_r,
            final_reflectance=base_r + corr_r,
            geometry_corrective=corr_g,
            reflectance_corrective=corr_r,
        )

    def extra_repr(self) -> str:
        return f"face_model={self.face_model!r}, kind={self.kind!r}"
