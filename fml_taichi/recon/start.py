"""The landmark-anchored start of a reconstruction: landmark fit, colour fit, encoder correctives.

For faces already cropped (:mod:`fml_taichi.data.crop`, the crop camera of the pipeline):

1. :class:`~fml_taichi.recon.landmark_fit.LandmarkFitter` gives pose, shape and expression from the
   detected landmarks (in crop pixels);
2. :class:`~fml_taichi.recon.colour_fit.ColourFitter` gives SH light and base reflectance from the
   crop's colours on that geometry;
3. optionally, the trained encoder's corrective coefficients (``delta_geometry``,
   ``delta_reflectance``), predicted from the *aligned* crop (:mod:`fml_taichi.recon.align`: roll
   and scale removed), are added on top: the final level of the multi-level model.

The result is an ordinary :class:`~fml_taichi.model.FaceParams`, so the multi-level model, the
exports and ``--refine`` take it unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import FaceParams
from .align import aligned_crop, canonical_template
from .colour_fit import ColourFitter
from .landmark_fit import LandmarkFitter

__all__ = ["StartResult", "LandmarkStart"]


@dataclass
class StartResult:
    """params: FaceParams (batch F, crop camera). fit: the LandmarkFit; colour: the ColourFit;
    seconds: {"landmark_fit", "colour_fit", "crop_wait"} wall time of the batch (``crop_wait``: waiting
    for crops given as a callable, not counted in ``colour_fit``); :attr:`base_geometry` [F, N, 3]
    the base level of ``params`` (evaluated on first use: the colour fit reads a quarter of it)."""

    params: FaceParams
    fit: object
    colour: object
    seconds: dict
    face_model: object = field(default=None, repr=False)
    _base_geometry: torch.Tensor | None = field(default=None, repr=False)

    @property
    def base_geometry(self) -> torch.Tensor:
        if self._base_geometry is None:
            with torch.no_grad():
                self._base_geometry = self.face_model.geometry(self.params.shape, self.params.expression)
        return self._base_geometry


class LandmarkStart:
    """Landmark + colour fit for a face model (module docstring)."""

    def __init__(self, face_model, landmark_config=None, colour_config=None, crop_size: int = 240):
        self.face_model = face_model
        self.landmarks = LandmarkFitter(face_model, landmark_config)
        self.colour = ColourFitter(face_model, colour_config)
        self.template = canonical_template(face_model.mean_geometry[face_model.landmarks.long()].double().numpy(),
                                           crop_size)
        self.crop_size = int(crop_size)
        # The model's rows of the vertices the colour fit reads (float32, as FaceModel.geometry computes).
        used = torch.from_numpy(self.colour.vertices)
        n3 = 3 * len(used)
        # In numpy: two float32 products of [1, m] x [m, 3V] cost a few microseconds each; the torch
        # calls they replace cost ~0.2 ms per face in the pipeline.
        self._colour_mean = face_model.mean_geometry[used].reshape(1, n3).float().numpy().copy()
        self._colour_bases = tuple(np.ascontiguousarray(b[used].reshape(n3, -1).T.float().numpy())
                                   for b in (face_model.shape_basis, face_model.expression_basis))

    def colour_geometry(self, shape, expression) -> np.ndarray:
        """The geometry of the colour fit's vertices [F, len(ColourFitter.vertices), 3] float64 for
        coefficients [F, m_s], [F, m_e] (arrays or tensors)."""
        s, e = (np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, np.float32)
                for x in (shape, expression))
        g = self._colour_mean + s @ self._colour_bases[0] + e @ self._colour_bases[1]
        return g.reshape(len(s), -1, 3).astype(np.float64)

    def __call__(self, crops: np.ndarray, landmarks_crop: np.ndarray, intrinsics, n_geometry: int,
                 n_reflectance: int, weights=None) -> StartResult:
        """crops [F, S, S, 3] (or a zero-argument callable returning them, called once the landmarks
        are fitted: the colour fit is the first to read them, so a warp may finish on another thread
        meanwhile), landmarks_crop [F, 68, 2] (crop px), intrinsics [4] or [F, 4] of the crops;
        ``n_geometry`` / ``n_reflectance``: corrective sizes of the model (zeros here)."""
        fm = self.face_model
        t0 = time.perf_counter()
        fit = self.landmarks(landmarks_crop, intrinsics, weights)
        t1 = time.perf_counter()
        shape, expression = torch.from_numpy(fit.shape).to(fm.dtype), torch.from_numpy(fit.expression).to(fm.dtype)
        geo = self.colour_geometry(fit.shape, fit.expression)
        t_wait = time.perf_counter()
        if callable(crops):
            crops = crops()
        wait = time.perf_counter() - t_wait
        colour = self.colour(crops, geo, fit.matrix, fit.translation, intrinsics)
        t2 = time.perf_counter()
        f = len(crops)
        dt = fm.dtype
        params = FaceParams(
            shape=shape, expression=expression,
            reflectance=torch.from_numpy(colour.reflectance).to(dt),
            delta_geometry=torch.zeros(f, n_geometry, dtype=dt), delta_reflectance=torch.zeros(f, n_reflectance, dtype=dt),
            rotation=torch.from_numpy(fit.rotation).to(dt), translation=torch.from_numpy(fit.translation).to(dt),
            light=torch.from_numpy(np.ascontiguousarray(colour.light)).to(dt))
        return StartResult(params, fit, colour, {"landmark_fit": t1 - t0, "colour_fit": t2 - t1 - wait,
                                                 "crop_wait": wait}, fm)

    def aligned_crops(self, image: np.ndarray, landmarks_image: np.ndarray, image_intrinsics) -> tuple[np.ndarray, list]:
        """Aligned crops [F, S, S, 3] of the faces (landmarks [F, 68, 2] in the image; intrinsics
        [F, 4] of the photo's camera per face) and their :class:`~fml_taichi.recon.align.AlignedCrop`."""
        out = [aligned_crop(image, lm, k, self.template, self.crop_size) for lm, k in zip(landmarks_image, image_intrinsics)]
        return np.stack([c for c, _ in out]), [a for _, a in out]
