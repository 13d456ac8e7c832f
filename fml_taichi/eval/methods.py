"""Reconstruction methods the evaluation harness can score: one small interface, two implementations.

The interface (:class:`Method`) is what :func:`fml_taichi.eval.harness.evaluate` needs::

    method.name          str, for tables and plots
    method.face_model    the FaceModel whose topology the reconstructions use
    method(images, landmarks, landmark_conf, intrinsics) -> Reconstruction

with ``images`` [B, H, W, 3] float32 in [0, 1] (channels-last), ``landmarks`` [B, 68, 2] pixels and
``landmark_conf`` [B, 68] (a method may ignore them: a trained encoder does), ``intrinsics`` (4,).
:class:`Reconstruction` holds the :class:`FaceParams` (pose and light are shared by both levels) and
the :class:`ModelOutput` (base and final geometry and reflectance, [B, N, 3]).

Implementations:

* :class:`FitMethod` (``--method fit``): per-image analysis-by-synthesis with the training losses
  (:func:`fml_taichi.recon.fit.fit` on :func:`fml_taichi.losses.total_loss`), usable before any training.

  1. *Base level*: Adam on pose, SH light and the base-model coefficients (shape, expression,
     reflectance), starting from a frontal mean face placed from the landmarks' position and size.
     The first ``rigid_iterations`` steps move only the pose (E_sparse dominates and the photometric
     term would otherwise pull the shape towards a misaligned image).
  2. *Final level*: base parameters frozen, then Adam on per-image correctives. What "final" means:

     - ``multilevel=None`` (default): **free per-vertex** geometry and reflectance offsets, one 3-vector
       per vertex each, regularised exactly as the learned correctives are in training: E_smo
       (Laplacian smoothness) and E_sta (small displacements) on geometry, E_ref (local sparsity) and
       E_glo (global skin constancy) on reflectance. This is the paper's "medium" level idea (per-image
       correctives, as Garrido et al.'s medium scale) without a learned basis.
     - ``multilevel=<MultiLevelModel>``: the corrective *coefficients* ``delta_g, delta_r`` against that
       model's fixed Theta (what a trained model's final level can express). With Theta = 0 the final
       level equals the base.

* :class:`CheckpointMethod` (``--checkpoint C``): a trained encoder + multi-level model loaded with
  :meth:`fml_taichi.recon.reconstructor.Reconstructor.from_checkpoint` (which reads the file through
  :func:`fml_taichi.nets.checkpoint.load_checkpoint`); one forward pass, landmarks unused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from ..losses import default_weights
from ..model import FaceParams, ModelOutput
from ..recon.fit import fit, initial_light, initial_pose
from ..recon.reconstructor import Reconstructor


@dataclass
class Reconstruction:
    """A method's answer for a batch: parameters (pose, light, coefficients) and both model levels."""

    params: FaceParams
    output: ModelOutput


@runtime_checkable
class Method(Protocol):
    """What the harness calls (see the module docstring)."""

    name: str
    face_model: object

    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor | None, landmark_conf: torch.Tensor | None,
                 intrinsics: torch.Tensor) -> Reconstruction:
        ...


def _check_images(images: torch.Tensor) -> int:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected a (B, H, W, 3) tensor, got {getattr(images, 'shape', type(images))}")
    if images.dtype != torch.float32:
        raise ValueError(f"images: expected float32 in [0, 1], got {images.dtype}")
    return images.shape[0]


def _output(base_g, base_r, corr_g, corr_r) -> ModelOutput:
    return ModelOutput(base_geometry=base_g, final_geometry=base_g + corr_g, base_reflectance=base_r,
                       final_reflectance=base_r + corr_r, geometry_corrective=corr_g, reflectance_corrective=corr_r)


# ----------------------------------------------------------------------------------------------
# The fit method


class FitMethod:
    """Per-image fitting of the base and final levels with the training losses (module docstring).

    Args:
        face_model: the base model to fit (float32).
        base_iterations, final_iterations: Adam steps of each stage (``rigid_iterations`` of the base
            steps move only the pose).
        multilevel: optional :class:`~fml_taichi.model.MultiLevelModel` whose fixed Theta the final
            level uses; None fits free per-vertex correctives.
        weights: :class:`~fml_taichi.losses.LossWeights` (default: the shipped ``configs/losses.yaml``).
        impl: ``"taichi"`` or ``"torch"`` for the loss terms.
        lr_scale: multiplies every learning rate.
        progress: show a tqdm bar per batch (iterations, rate, ETA).
    """
    name = "fit"

    # Adam step sizes per parameter group, in that group's units (radians, mm, sigma, SH coefficient,
    # mm of per-vertex offset, reflectance units). offset_g is small on purpose: from one image the
    # free per-vertex reflectance explains the shading, so free geometry offsets only drift (measured
    # on 4 held-out faces, 3000 vertices: base 0.459 mm -> final 0.493 mm at 0.1, 0.467 mm at 0.03,
    # while the photometric error drops 0.026 -> 0.017 either way).
    LR = {"rotation": 0.02, "translation": 2.0, "shape": 0.1, "expression": 0.1, "reflectance": 0.1,
          "light": 0.05, "offset_g": 0.03, "offset_r": 0.01, "delta": 0.05}

    def __init__(self, face_model, base_iterations: int = 150, final_iterations: int = 60,
                 rigid_iterations: int | None = None, multilevel=None, weights=None, impl: str = "taichi",
                 lr_scale: float = 1.0, progress: bool = True):
        for name, v in (("base_iterations", base_iterations), ("final_iterations", final_iterations)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {v!r}")
        if rigid_iterations is None:
            rigid_iterations = base_iterations // 4
        if not isinstance(rigid_iterations, int) or not 0 <= rigid_iterations <= base_iterations:
            raise ValueError(f"rigid_iterations: expected an int in [0, base_iterations], got {rigid_iterations!r}")
        if impl not in ("taichi", "torch"):
            raise ValueError(f"impl: expected 'taichi' or 'torch', got {impl!r}")
        if not lr_scale > 0:
            raise ValueError(f"lr_scale: expected a positive number, got {lr_scale!r}")
        if multilevel is not None and multilevel.face_model.n_vertices != face_model.n_vertices:
            raise ValueError("multilevel: its face model has a different vertex count than face_model")
        self.face_model = face_model
        self.base_iterations, self.final_iterations = base_iterations, final_iterations
        self.rigid_iterations = rigid_iterations
        self.multilevel = multilevel
        self.weights = weights if weights is not None else default_weights()
        self.impl = impl
        self.lr_scale = float(lr_scale)
        self.progress = progress

    def _lr(self, names) -> dict:
        return {k: self.LR[k] * self.lr_scale for k in names}

    def fit_base(self, images, landmarks, conf, intrinsics, bar=None) -> FaceParams:
        """Stage 1: pose, light and base coefficients (returns detached :class:`FaceParams`)."""
        fm, b = self.face_model, images.shape[0]
        rot, trans = initial_pose(fm, landmarks, intrinsics)
        free = {"rotation": rot, "translation": trans, "shape": torch.zeros(b, fm.m_shape),
                "expression": torch.zeros(b, fm.m_expression), "reflectance": torch.zeros(b, fm.m_reflectance),
                "light": initial_light(images, fm)}
        c_g, c_r = self._n_deltas()
        empty_g, empty_r = torch.zeros(b, c_g), torch.zeros(b, c_r)

        def params_of(f):
            return FaceParams(f["shape"], f["expression"], f["reflectance"], empty_g, empty_r, f["rotation"],
                              f["translation"], f["light"])

        def evaluate(f):
            params = params_of({**free, **f})
            base_g, base_r = fm.base(params.shape, params.expression, params.reflectance)
            zero = torch.zeros_like(base_g)
            return _output(base_g, base_r, zero, zero), params

        args = (fm, images, landmarks, conf, intrinsics)
        rigid = {k: free[k] for k in ("rotation", "translation", "light")}
        free.update(fit(evaluate, rigid, self._lr(rigid), *args, self.rigid_iterations, self.weights, self.impl,
                        bar=bar, stage="base"))
        free = fit(evaluate, free, self._lr(free), *args, self.base_iterations - self.rigid_iterations, self.weights,
                   self.impl, bar=bar, stage="base")
        return params_of(free).detach()

    def _n_deltas(self) -> tuple[int, int]:
        if self.multilevel is None:
            return 0, 0
        return self.multilevel.n_correctives_geometry, self.multilevel.n_correctives_reflectance

    def _correctives(self, free: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.multilevel is None:
            return free["offset_g"], free["offset_r"]
        return (self.multilevel.geometry_corrective(free["delta_g"]),
                self.multilevel.reflectance_corrective(free["delta_r"]))

    def fit_final(self, params: FaceParams, images, landmarks, conf, intrinsics, bar=None):
        """Stage 2: correctives on top of the frozen base fit; returns (params, corr_g, corr_r)."""
        fm, b, n = self.face_model, images.shape[0], self.face_model.n_vertices
        base_g, base_r = fm.base(params.shape, params.expression, params.reflectance)
        if self.multilevel is None:
            free = {"offset_g": torch.zeros(b, n, 3), "offset_r": torch.zeros(b, n, 3)}
            lr = self._lr(free)
        else:
            c_g, c_r = self._n_deltas()
            free = {"delta_g": torch.zeros(b, c_g), "delta_r": torch.zeros(b, c_r)}
            lr = {k: self.LR["delta"] * self.lr_scale for k in free}

        def evaluate(f):
            corr_g, corr_r = self._correctives(f)
            p = params if self.multilevel is None else params.replace(delta_geometry=f["delta_g"],
                                                                     delta_reflectance=f["delta_r"])
            return _output(base_g, base_r, corr_g, corr_r), p

        free = fit(evaluate, free, lr, fm, images, landmarks, conf, intrinsics, self.final_iterations, self.weights,
                   self.impl, bar=bar, stage="final")
        with torch.no_grad():
            corr_g, corr_r = self._correctives(free)
        if self.multilevel is not None:
            params = params.replace(delta_geometry=free["delta_g"], delta_reflectance=free["delta_r"])
        return params, corr_g.detach(), corr_r.detach()

    def __call__(self, images, landmarks, landmark_conf, intrinsics) -> Reconstruction:
        b = _check_images(images)
        if landmarks is None or landmark_conf is None:
            raise ValueError("landmarks: the fit method needs 2D landmarks and confidences (E_sparse, initialisation)")
        if tuple(landmarks.shape) != (b, 68, 2) or tuple(landmark_conf.shape) != (b, 68):
            raise ValueError(f"landmarks / landmark_conf: expected ({b}, 68, 2) / ({b}, 68), got "
                             f"{tuple(landmarks.shape)} / {tuple(landmark_conf.shape)}")
        images = images.contiguous()
        landmarks, landmark_conf = landmarks.float().contiguous(), landmark_conf.float().contiguous()
        total = self.base_iterations + self.final_iterations
        with tqdm(total=total, desc=f"fit {b} image(s)", unit="it", disable=not self.progress, leave=False) as bar:
            params = self.fit_base(images, landmarks, landmark_conf, intrinsics, bar)
            params, corr_g, corr_r = self.fit_final(params, images, landmarks, landmark_conf, intrinsics, bar)
        with torch.no_grad():
            base_g, base_r = self.face_model.base(params.shape, params.expression, params.reflectance)
        return Reconstruction(params, _output(base_g, base_r, corr_g, corr_r))


# ----------------------------------------------------------------------------------------------
# The mean-face baseline


class MeanFaceMethod:
    """Baseline: the mean face (all coefficients 0) placed by the landmarks (:func:`initial_pose`) under
    ambient light matched to the image; both levels equal. What any method should beat."""

    name = "mean"

    def __init__(self, face_model):
        self.face_model = face_model

    def __call__(self, images, landmarks, landmark_conf, intrinsics) -> Reconstruction:
        b = _check_images(images)
        if landmarks is None or tuple(landmarks.shape) != (b, 68, 2):
            raise ValueError(f"landmarks: the mean-face baseline needs ({b}, 68, 2) landmarks to place the face")
        fm = self.face_model
        rot, trans = initial_pose(fm, landmarks.float(), intrinsics)
        params = FaceParams.zeros(b, fm.m_shape, fm.m_expression, fm.m_reflectance, 0, 0)
        params = params.replace(rotation=rot, translation=trans, light=initial_light(images, fm))
        base_g, base_r = fm.base(params.shape, params.expression, params.reflectance)
        zero = torch.zeros_like(base_g)
        return Reconstruction(params, _output(base_g, base_r, zero, zero))


# ----------------------------------------------------------------------------------------------
# The checkpoint method


class CheckpointMethod:
    """A trained model from a checkpoint file (module docstring); ``device`` for the networks."""

    def __init__(self, path, device: str = "cpu"):
        self.reconstructor = Reconstructor.from_checkpoint(path, device=device)
        self.face_model = self.reconstructor.face_model
        self.name = "checkpoint"
        self.path = str(path)

    def __call__(self, images, landmarks=None, landmark_conf=None, intrinsics=None) -> Reconstruction:
        _check_images(images)
        params, out = self.reconstructor.reconstruct(images, landmarks, intrinsics)
        to_cpu = lambda t: t.detach().cpu()  # noqa: E731
        out = ModelOutput(**{k: to_cpu(v) for k, v in vars(out).items()})
        return Reconstruction(params.detach().to("cpu"), out)
