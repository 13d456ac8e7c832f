"""The encoder's inputs on the landmark-anchored path: aligned crops, their cameras, the start's z.

The same preparation serves training (the pool), validation, evaluation and the photo pipeline, so
an encoder sees at inference exactly what it saw in training:

1. **align** (optional): each image is warped by the similarity of :mod:`fml_taichi.recon.align`
   (roll and scale removed); its landmarks and exact camera ``K'`` come along, and the camera of
   the crop differs from the image's by a rotation ``Rz(angle)`` about the optical axis;
2. **start** (optional): :class:`~fml_taichi.recon.start.LandmarkStart` (landmark fit, then colour
   fit) on the aligned crop in its own camera; its base parameters in the codec's z-space
   (:meth:`~fml_taichi.nets.encoder.ParamCodec.pack_base`) are the encoder's second input.

A reconstruction made in the crop camera is moved back to the image's camera by
:func:`rotate_camera` with ``-angle``: the rotation about the optical axis changes the Euler ``rz``
(``R = Rz(rz) Ry Rx``, so a camera roll adds to ``rz`` exactly), rotates the translation, and
rotates the SH light, which lives on camera-space normals (bands 1 and 2 turn as pairs:
``(x, y)`` and ``(xz, yz)`` by the angle, ``(x^2 - y^2, 2xy)`` by twice the angle).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import FaceParams, ModelOutput
from .align import aligned_crop
from .corrective_fit import with_fitted_reflectance

__all__ = ["rotate_light_z", "rotate_camera", "rotate_camera_np", "align_faces", "start_z", "EncoderInputs", "EncoderInputPreparer",
           "reconstruct_prepared"]

# SH coefficient pairs (x-like, y-like, angle multiple) that a rotation about z mixes (docs/conventions.md order).
_SH_PAIRS = ((3, 1, 1), (7, 5, 1), (8, 4, 2))


def rotate_light_z(light: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """SH light [B, 9, 3] for a camera turned by ``angle`` [B] radians about its optical axis
    (camera-space normals ``n' = Rz(angle) n``), so that the shading of every surface point is unchanged."""
    out = light.clone()
    a = angle.to(light.dtype).reshape(-1, 1)
    for ix, iy, k in _SH_PAIRS:
        c, s = torch.cos(k * a), torch.sin(k * a)
        gx, gy = light[:, ix], light[:, iy]
        out[:, ix] = c * gx - s * gy
        out[:, iy] = s * gx + c * gy
    return out


def rotate_camera(params: FaceParams, angle) -> FaceParams:
    """The same face seen from a camera turned by ``angle`` [B] about its optical axis
    (``v' = Rz(angle) v``): Euler ``rz + angle``, rotated translation and light (module docstring)."""
    dt = params.rotation.dtype
    a = torch.as_tensor(angle, dtype=dt).reshape(-1)
    c, s = torch.cos(a), torch.sin(a)
    t = params.translation
    trans = torch.stack([c * t[:, 0] - s * t[:, 1], s * t[:, 0] + c * t[:, 1], t[:, 2]], 1)
    rot = params.rotation + torch.stack([torch.zeros_like(a), torch.zeros_like(a), a], 1)
    return params.replace(rotation=rot, translation=trans, light=rotate_light_z(params.light, a))


def align_faces(images, landmarks: np.ndarray, intrinsics: np.ndarray, template, size: int):
    """Aligned crops of faces (one image per face; the same image may repeat):
    ``(crops [B, S, S, 3] float32, landmarks [B, 68, 2] in them, intrinsics [B, 4] K', angle [B])``."""
    out = [aligned_crop(im, lm, kk, template, size) for im, lm, kk in zip(images, landmarks, intrinsics)]
    return (np.stack([c for c, _ in out]), np.stack([al.to_crop(lm) for (_, al), lm in zip(out, landmarks)]),
            np.stack([al.intrinsics for _, al in out]), np.array([al.angle for _, al in out]))


def start_z(codec, start: FaceParams) -> torch.Tensor:
    """The start's base parameters in the codec's z-space [B, n_base] float32: what an
    ``image+start`` encoder reads (computed from the float32 parameters, as in training)."""
    return codec.pack_base(start.to(torch.float32)).float()


def rotate_camera_np(rotation: np.ndarray, translation: np.ndarray, light: np.ndarray, angle) -> tuple:
    """:func:`rotate_camera` on numpy arrays (rotation [B, 3], translation [B, 3], light [B, 9, 3];
    ``angle`` [B]): ``(rotation, translation, light)`` new arrays, same dtype. For the inference
    path, where a handful of torch calls would cost more than the arithmetic."""
    dt = rotation.dtype
    a = np.asarray(angle, dt).reshape(-1)
    c, s = np.cos(a), np.sin(a)
    t = translation
    trans = np.stack([c * t[:, 0] - s * t[:, 1], s * t[:, 0] + c * t[:, 1], t[:, 2]], 1)
    rot = rotation.copy()
    rot[:, 2] += a
    out = light.copy()
    for ix, iy, k in _SH_PAIRS:
        ck, sk = np.cos(k * a)[:, None], np.sin(k * a)[:, None]
        gx, gy = light[:, ix], light[:, iy]
        out[:, ix] = ck * gx - sk * gy
        out[:, iy] = sk * gx + ck * gy
    return rot, trans, out


@dataclass
class EncoderInputs:
    """What the encoder and the losses read for a batch: ``images`` [B, S, S, 3] float32 (aligned crops
    or the images as given), ``landmarks`` [B, 68, 2] in them, ``intrinsics`` [B, 4] their cameras,
    ``angle`` [B] the crop camera's roll against the source camera (0 without alignment), ``start``
    the start's FaceParams in the crop camera and ``start_z`` [B, n_base] its z (None without start)."""

    images: torch.Tensor
    landmarks: torch.Tensor
    intrinsics: torch.Tensor
    angle: torch.Tensor
    start: FaceParams | None = None
    start_z: torch.Tensor | None = None


class EncoderInputPreparer:
    """Aligned crops and the landmark start for an encoder (module docstring).

    Args:
        face_model: the base model (the start fits it; the alignment template is its mean face).
        codec: the encoder's :class:`~fml_taichi.nets.encoder.ParamCodec` (its layout sizes the
            start's zero correctives; it packs the start's z).
        align: warp to aligned crops (else the images are used as they are).
        start: run the landmark start and return its z.
        crop_size: side of the aligned crops (px).
    """

    def __init__(self, face_model, codec, align: bool = True, start: bool = True, crop_size: int = 240):
        from .colour_fit import ColourFitConfig
        from .landmark_fit import LandmarkFitConfig
        from .start import LandmarkStart

        self.face_model, self.codec = face_model, codec
        self.align, self.with_start = bool(align), bool(start)
        self.crop_size = int(crop_size)
        # Batches (a training pool's chunks): the numpy fits, vectorised over the faces, are the
        # faster, and a training run compiles nothing (the compiled twins agree to ~1e-12).
        self.start = LandmarkStart(face_model, LandmarkFitConfig(impl="numpy"), ColourFitConfig(impl="numpy"),
                                   crop_size=self.crop_size)

    @classmethod
    def for_encoder(cls, face_model, encoder, align: bool, crop_size: int = 240) -> "EncoderInputPreparer | None":
        """The preparer an encoder was trained with (None: plain crops, no start)."""
        if not align and not encoder.takes_start:
            return None
        return cls(face_model, encoder.codec, align=align, start=encoder.takes_start, crop_size=crop_size)

    def __call__(self, images, landmarks, intrinsics) -> EncoderInputs:
        """images [B, H, W, 3] float in [0, 1], landmarks [B, 68, 2] (detected, px), intrinsics [4] or [B, 4]."""
        img = np.ascontiguousarray(torch.as_tensor(images, dtype=torch.float32).numpy())
        lms = torch.as_tensor(landmarks, dtype=torch.float64).numpy()
        b = img.shape[0]
        if img.ndim != 4 or img.shape[-1] != 3 or lms.shape != (b, 68, 2):
            raise ValueError(f"images / landmarks: expected (B, H, W, 3) / (B, 68, 2), got {img.shape} / {lms.shape}")
        k = torch.as_tensor(intrinsics, dtype=torch.float64).numpy().reshape(-1, 4)
        k = np.repeat(k, b, 0) if len(k) == 1 else k
        if self.align:
            img, lms, k, angle = align_faces(img, lms, k, self.start.template, self.crop_size)
        else:
            angle = np.zeros(b)
        res = EncoderInputs(torch.from_numpy(img), torch.from_numpy(lms).float(), torch.from_numpy(k).float(),
                            torch.from_numpy(angle).float())
        if self.with_start:
            lay = self.codec.layout
            st = self.start(img, lms, k, lay.n_delta_geometry, lay.n_delta_reflectance).params.to(torch.float32)
            res.start = st
            res.start_z = start_z(self.codec, st)
        return res


@torch.no_grad()
def reconstruct_prepared(model, inputs: EncoderInputs,
                         reflectance_prior: float | None = None) -> tuple[FaceParams, ModelOutput]:
    """An encoder + multi-level model (:class:`~fml_taichi.nets.models.FaceAutoencoder`) on prepared
    inputs, with the pose and light moved back to the source images' cameras. ``reflectance_prior``:
    the reflectance coefficients fitted to the prepared crops in their cameras
    (:mod:`fml_taichi.recon.corrective_fit`), before the move."""
    images = inputs.images.contiguous()
    params, out = model(images, inputs.start_z)
    if reflectance_prior is not None:
        params, out = with_fitted_reflectance(model.multilevel, params, out, images, inputs.intrinsics,
                                              reflectance_prior)
    if bool((inputs.angle != 0).any()):
        params = rotate_camera(params, -inputs.angle)
    return params, out
