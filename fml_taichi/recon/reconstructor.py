"""Inference from a training checkpoint: images -> (FaceParams, ModelOutput).

Used by evaluation, the reconstruction command and the viewer::

    rec = Reconstructor.from_checkpoint("runs/default/checkpoint.pt")
    params, out = rec(images)          # images [B, H, W, 3] float in [0, 1]
    out.final_geometry                 # [B, N, 3] mm, model space; rec.face_model.triangles
    rec.intrinsics                     # [fx, fy, cx, cy] of the training crop size
    params, out = rec.reconstruct(images, landmarks, intrinsics)   # as trained: aligned crops, the
                                       # landmark start and fitted reflectance coefficients where the
                                       # checkpoint's config uses them

Images of any square size work: the encoder resizes internally, and the predicted pose is in
millimetres and radians, so it projects correctly with ``default_intrinsics(size)`` for that size
(:meth:`Reconstructor.intrinsics_for`), since the focal length scales with the crop.
"""
from __future__ import annotations

import os

import torch

from ..common.camera import default_intrinsics
from ..common.checks import check_tensor
from ..model import FaceParams, ModelOutput
from ..nets.checkpoint import CheckpointError, load_checkpoint
from ..nets.config import from_dict
from ..nets.models import FaceAutoencoder, build_networks, face_model_from_spec
from .anchored import EncoderInputPreparer, reconstruct_prepared
from .corrective_fit import reflectance_prior_of, with_fitted_reflectance


class Reconstructor:
    """A trained encoder + multi-level model in eval mode (no gradients).

    Attributes: ``face_model`` (base model), ``multilevel`` (with the learned Theta), ``encoder``,
    ``intrinsics`` (for crops of the training size ``image_size``), ``config`` (the TrainConfig).
    """

    def __init__(self, model: FaceAutoencoder, image_size: int = 240, config=None):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.encoder = model.encoder
        self.multilevel = model.multilevel
        self.face_model = model.multilevel.face_model
        self.image_size = int(image_size)
        self.intrinsics = default_intrinsics(self.image_size)
        self.config = config
        self.reflectance_prior = reflectance_prior_of(config)
        align = bool(getattr(getattr(config, "data", None), "align", False))
        self.preparer = EncoderInputPreparer.for_encoder(self.face_model, self.encoder, align, self.image_size)

    @property
    def needs_landmarks(self) -> bool:
        """True when :meth:`reconstruct` needs landmarks and a camera (aligned crops, the start, or
        fitted reflectance coefficients); a plain image-only checkpoint runs on crops alone."""
        return self.preparer is not None or self.reflectance_prior is not None

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> "Reconstructor":
        """Rebuild from a checkpoint (:func:`~fml_taichi.nets.checkpoint.load_checkpoint` errors for a
        missing, corrupt or wrong-format file; ValueError if its weights do not fit its config)."""
        ck = load_checkpoint(path)
        try:
            cfg = from_dict(ck.config)
            face_model = face_model_from_spec(ck.face_model_spec)
            multilevel, encoder = build_networks(cfg, face_model)
        except (ValueError, TypeError) as e:  # its config / model spec: a file of another version or damaged
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} cannot be rebuilt: {e}") from e
        try:
            encoder.load_state_dict(ck.encoder)
            multilevel.load_state_dict(ck.multilevel)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r}: weights do not match its config: {str(e).splitlines()[0]}") from e
        model = FaceAutoencoder(encoder, multilevel).to(device)
        return cls(model, cfg.data.image_size, cfg)

    def intrinsics_for(self, size: int) -> torch.Tensor:
        """``[fx, fy, cx, cy]`` for square crops of ``size`` px (same field of view as training)."""
        return default_intrinsics(size)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[FaceParams, ModelOutput]:
        """images [B, H, W, 3] (or one [H, W, 3]) float in [0, 1] -> (FaceParams, ModelOutput)."""
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(images)
        if images.ndim == 3:
            images = images.unsqueeze(0)
        check_tensor("images", images, shape=(None, None, None, 3), contiguous=False, min_size=1)
        if images.shape[1] < 16 or images.shape[2] < 16:
            raise ValueError(f"images: crops must be at least 16 x 16 px, got {tuple(images.shape[1:3])}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"images: expected values in [0, 1], got [{lo:.3g}, {hi:.3g}] (uint8? divide by 255)")
        dev = next(self.model.parameters()).device
        return self.model(images.to(device=dev, dtype=torch.float32))


    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, landmarks=None, intrinsics=None) -> tuple[FaceParams, ModelOutput]:
        """The checkpoint's own inference path for images [B, H, W, 3] seen by ``intrinsics`` [4] / [B, 4]
        with detected ``landmarks`` [B, 68, 2]: aligned crops and the landmark start when it was
        trained so, then the fitted reflectance coefficients when it was trained so; the pose in the
        images' camera. Without those needs (:attr:`needs_landmarks`) the same as calling it."""
        if not self.needs_landmarks:
            return self(images)
        if landmarks is None or intrinsics is None:
            raise ValueError("landmarks and intrinsics: this checkpoint reconstructs from aligned crops / the "
                             "landmark start / fitted reflectance; pass the detected landmarks and the camera")
        return reconstruct_as_trained(self.model, images, landmarks, intrinsics, self.preparer, self.reflectance_prior)


@torch.no_grad()
def reconstruct_as_trained(model: FaceAutoencoder, images, landmarks, intrinsics, preparer=None,
                           reflectance_prior: float | None = None) -> tuple[FaceParams, ModelOutput]:
    """Encoder + multi-level model the way it was trained: on the ``preparer``'s aligned crops and start
    (:class:`~fml_taichi.recon.anchored.EncoderInputPreparer`, or None: the images as given), with the
    reflectance coefficients fitted (``reflectance_prior``) or predicted (None); pose and light moved
    back to the images' camera."""
    if preparer is not None:
        return reconstruct_prepared(model, preparer(images, landmarks, intrinsics), reflectance_prior)
    params, out = model(images)
    if reflectance_prior is not None:
        if intrinsics is None:
            raise ValueError("intrinsics: fitted reflectance coefficients need the images' camera")
        params, out = with_fitted_reflectance(model.multilevel, params, out, images, intrinsics, reflectance_prior)
    return params, out


@torch.no_grad()
def compare_checkpoints(a, b, n: int = 8, seed: int = 0) -> dict:
    """Run both checkpoints on the same ``n`` inputs: the largest differences of the final geometry
    (mm) and reflectance, and of the regressed pose (rad). Inputs are random crops, or held-out
    synthetic faces with their landmarks for checkpoints that need them (:attr:`Reconstructor.needs_landmarks`)."""
    ra, rb = Reconstructor.from_checkpoint(a), Reconstructor.from_checkpoint(b)
    if ra.needs_landmarks or rb.needs_landmarks:
        from ..data.synthetic import EVAL_SEED_START, SyntheticConfig, SyntheticRenderer

        batch = SyntheticRenderer(ra.face_model, SyntheticConfig(image_size=ra.image_size)).render(
            list(range(EVAL_SEED_START + seed, EVAL_SEED_START + seed + n)))
        args = (batch["image"], batch["landmarks"], batch["intrinsics"][0])
        (pa, oa), (pb, ob) = ra.reconstruct(*args), rb.reconstruct(*args)
    else:
        g = torch.Generator().manual_seed(seed)
        images = torch.rand(n, ra.image_size, ra.image_size, 3, generator=g)
        (pa, oa), (pb, ob) = ra(images), rb(images)
    return {"geometry_mm": float((oa.final_geometry - ob.final_geometry).abs().max()),
            "reflectance": float((oa.final_reflectance - ob.final_reflectance).abs().max()),
            "rotation_rad": float((pa.rotation - pb.rotation).abs().max())}
