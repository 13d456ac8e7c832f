"""Building the trained networks from a config or a checkpoint: base model, multi-level model, encoder.

The base model is never stored in a checkpoint (tens of MB, and rebuilt deterministically); a
*face model spec* says how to rebuild it:

* ``{"source": "default", "n_vertices": 4000}``: :func:`fml_taichi.model.default_face_model`
  (``n_vertices`` may be None for the full model; ``m_reflectance`` optional);
* ``{"source": "file", "path": "model.npz"}``: :func:`fml_taichi.model.load_face_model`.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..model import FaceParams, ModelOutput, MultiLevelModel, default_face_model, load_face_model
from ..model.multilevel import GEOMETRY_INIT_STD
from .encoder import EncoderConfig, FaceEncoder
from ..model.smooth_corrective import SmoothLinearCorrective, smooth_basis


def face_model_spec(model_cfg) -> dict:
    """The spec of a config's ``model:`` section (``source`` "default" or a path to a model file)."""
    if model_cfg.source == "default":
        return {"source": "default", "n_vertices": model_cfg.n_vertices}
    return {"source": "file", "path": os.path.abspath(model_cfg.source)}


def face_model_from_spec(spec: dict):
    """Rebuild the base :class:`~fml_taichi.model.FaceModel` from a spec (see the module docstring)."""
    if not isinstance(spec, dict) or "source" not in spec:
        raise ValueError(f"face model spec: expected a dict with a 'source' key, got {spec!r}")
    if spec["source"] == "default":
        kwargs = {"n_vertices": spec.get("n_vertices")}
        if spec.get("m_reflectance") is not None:
            kwargs["m_reflectance"] = int(spec["m_reflectance"])
        return default_face_model(**kwargs)
    if spec["source"] == "file":
        return load_face_model(spec["path"])
    raise ValueError(f"face model spec: unknown source {spec['source']!r} (expected 'default' or 'file')")


def build_networks(cfg, face_model) -> tuple[MultiLevelModel, FaceEncoder]:
    """Fresh multi-level model and encoder for a :class:`~fml_taichi.nets.config.TrainConfig`.

    Initialisation is a function of ``cfg.seed`` only (Theta from MultiLevelModel's own seeded
    generator, the encoder's random layers from a forked, seeded torch RNG).
    """
    m = cfg.model
    multilevel = MultiLevelModel(face_model, m.n_correctives_geometry, m.n_correctives_reflectance, kind=m.kind,
                                 seed=cfg.seed)
    if m.geometry_smooth:
        basis = smooth_basis(face_model.triangles, face_model.n_vertices, m.geometry_smooth)
        # Same offset scale at init as the free Theta: E has unit-RMS orthogonal columns.
        std = GEOMETRY_INIT_STD / m.geometry_smooth ** 0.5
        multilevel.geometry_corrective = SmoothLinearCorrective(basis, m.n_correctives_geometry, std, cfg.seed).to(
            dtype=face_model.dtype, device=face_model.device)
    enc_cfg = EncoderConfig(**vars(cfg.encoder)) if not isinstance(cfg.encoder, EncoderConfig) else cfg.encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = FaceEncoder.for_model(face_model, m.n_correctives_geometry, m.n_correctives_reflectance, enc_cfg)
    return multilevel, encoder


class FaceAutoencoder(nn.Module):
    """Encoder + multi-level model as one module (what DDP wraps): images -> (params, model output).

    ``images`` are channels-last [B, H, W, 3] in [0, 1], the layout the loss kernels read; the
    permute to the network layout happens here.
    """

    def __init__(self, encoder: FaceEncoder, multilevel: MultiLevelModel):
        super().__init__()
        self.encoder = encoder
        self.multilevel = multilevel

    def forward(self, images: torch.Tensor, start: torch.Tensor | None = None) -> tuple[FaceParams, ModelOutput]:
        """``start``: the start's base z [B, n_base] for an ``image+start`` encoder (else None)."""
        params = self.encoder(images.permute(0, 3, 1, 2), start)
        return params, self.multilevel(params)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Per-part parameters (paper Sec. 7 learning rates): base, geometry, reflectance."""
        groups = self.encoder.parameter_groups()
        groups["geometry"] = groups["geometry"] + list(self.multilevel.geometry_corrective.parameters())
        groups["reflectance"] = groups["reflectance"] + list(self.multilevel.reflectance_corrective.parameters())
        return groups
