"""Monocular reconstruction of real images: detect -> crop -> encoder -> multi-level model.

The library behind ``fml-taichi reconstruct`` (which adds inputs, exports and videos)::

    pipe = FacePipeline.from_checkpoint()            # the packaged checkpoint, dlib, ONNX Runtime if present
    faces = pipe(image, path="photo.jpg")            # image [H, W, 3] float32 RGB in [0, 1]
    for f in faces:
        f.output.final_geometry                      # [1, N, 3] mm, model space; pipe.face_model.triangles
        f.landmarks_2d                               # [68, 2] final-level landmarks in the input image (px)

Per face: the detector's 68 landmarks give a 240 px crop framed like the training faces
(:mod:`fml_taichi.data.crop`); all faces of an image run through the encoder and the multi-level
model in one call (:mod:`fml_taichi.recon.runners`: ONNX Runtime when installed, torch otherwise).
The pose is that of the *crop camera* (``reconstructor.intrinsics``); :attr:`FaceResult.image_intrinsics`
projects the same camera-space mesh straight into the input image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.crop import CropBox, crop_box_from_landmarks, crop_image, mean_landmarks_3d
from ..data.detect import Detection, DlibDetector, PtsFileDetector
from ..losses.terms import landmark_vertices
from ..model import FaceParams, ModelOutput
from ..reference.image_formation import euler_to_matrix, project
from .reconstructor import Reconstructor
from .runners import make_runner

__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_MIN_CONFIDENCE", "default_checkpoint", "FaceResult", "FacePipeline", "NoFaceFound",
           "landmarks_in_image"]

#: Where the shipped checkpoint lives inside the installed package (package data).
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                                  "default.pt")


#: Default detection-confidence threshold of reconstruction (see :class:`FacePipeline`).
DEFAULT_MIN_CONFIDENCE = 0.2


class NoFaceFound(ValueError):
    """An image in which the detector found no face (above the confidence threshold)."""


def default_checkpoint() -> str | None:
    """The packaged checkpoint's path, or None when this install has none."""
    return DEFAULT_CHECKPOINT if os.path.isfile(DEFAULT_CHECKPOINT) else None


@dataclass
class FaceResult:
    """One reconstructed face.

    detection: the detector's :class:`~fml_taichi.data.detect.Detection` (box, landmarks, confidence).
    crop_box: the :class:`~fml_taichi.data.crop.CropBox` in the input image; crop: [S, S, 3] the crop.
    params: :class:`FaceParams` (batch 1; pose in the crop camera). output: :class:`ModelOutput` (batch 1).
    crop_intrinsics / image_intrinsics: [4] ``[fx, fy, cx, cy]`` of the crop and of the input image.
    landmarks_2d: [68, 2] the final level's landmark vertices projected into the input image (x, y),
        the jaw on the silhouette (sliding contour, as in training); landmark_vertices: [68] their indices.
    extra: anything added later (e.g. refinement statistics).
    """
    detection: Detection
    crop_box: CropBox
    crop: np.ndarray
    params: FaceParams
    output: ModelOutput
    crop_intrinsics: np.ndarray
    image_intrinsics: np.ndarray
    landmarks_2d: np.ndarray
    landmark_vertices: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def detected_landmarks_crop(self) -> np.ndarray:
        """The detector's landmarks in crop pixels, [68, 2] float32."""
        return self.crop_box.to_crop(self.detection.landmarks, self.crop.shape[0]).astype(np.float32)


def landmarks_in_image(output: ModelOutput, params: FaceParams, face_model, detected_crop, crop_intrinsics,
                       crop_box: CropBox, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Final-level landmark vertices (sliding jaw contour, chosen against the detected landmarks as
    the training loss does) projected into the input image: ``(points [B, 68, 2], vertices [B, 68])``.

    ``detected_crop`` [B, 68, 2] crop pixels; ``crop_box`` maps the crop projection into the image.
    """
    geo = output.final_geometry.contiguous()
    k = torch.as_tensor(np.asarray(crop_intrinsics), dtype=geo.dtype)
    det = torch.as_tensor(np.asarray(detected_crop), dtype=geo.dtype).contiguous()
    idx = landmark_vertices(geo, params, face_model, det, k, sliding=True)
    pts = torch.gather(geo, 1, idx.long().unsqueeze(-1).expand(-1, -1, 3))
    v_cam = torch.bmm(pts, euler_to_matrix(params.rotation).transpose(1, 2)) + params.translation.unsqueeze(1)
    uv = project(v_cam, k).numpy()
    return crop_box.to_image(uv, size).astype(np.float32), idx.numpy().astype(np.int64)


def _make_detector(detector, landmarks_3d, landmark_model=None):
    if detector is None or detector == "dlib":
        return DlibDetector(landmark_model, landmarks_3d=landmarks_3d)
    if detector == "pts":
        return PtsFileDetector(landmarks_3d=landmarks_3d)
    if callable(detector):
        return detector
    raise ValueError(f"detector: expected 'dlib', 'pts' or a callable, got {detector!r}")


class FacePipeline:
    """Detector + crop rule + trained encoder and multi-level model (module docstring).

    Args:
        reconstructor: a :class:`~fml_taichi.recon.reconstructor.Reconstructor`.
        detector: "dlib" (default), "pts" (``IMAGE.pts`` files), or a callable ``(image, path) ->
            list[Detection]``.
        runner: "auto" (ONNX Runtime when installed), "onnxruntime" or "torch".
        threads: ONNX Runtime threads (default 1; see :class:`~fml_taichi.recon.runners.OnnxRunner`).
        min_confidence: faces below this detection confidence are ignored (definition in
            :mod:`fml_taichi.data.detect`; real faces score ~0.5-0.95, dlib's false positives on
            face-like patches mostly below 0.15).
        max_faces: at most this many faces per image, most confident first (None: all).
        landmark_model: dlib's 68-point ``.dat`` file (default: found automatically).
    """
    def __init__(self, reconstructor, detector="dlib", runner: str = "auto", threads: int | None = None,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_faces: int | None = None,
                 landmark_model: str | None = None):
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence: expected a value in [0, 1], got {min_confidence!r}")
        if max_faces is not None and (not isinstance(max_faces, int) or max_faces < 1):
            raise ValueError(f"max_faces: expected a positive int or None, got {max_faces!r}")
        self.reconstructor = reconstructor
        self.face_model = reconstructor.face_model
        self.multilevel = reconstructor.multilevel
        self.size = int(reconstructor.image_size)
        self.crop_intrinsics = reconstructor.intrinsics.double().numpy()
        self.landmarks_3d = mean_landmarks_3d(self.face_model)
        self.detector = _make_detector(detector, self.landmarks_3d, landmark_model)
        self.runner = make_runner(reconstructor.encoder, reconstructor.multilevel, runner, self.size, threads)
        self.min_confidence = float(min_confidence)
        self.max_faces = max_faces

    @classmethod
    def from_checkpoint(cls, path: str | None = None, **kwargs) -> "FacePipeline":
        """Load ``path`` (default: the packaged checkpoint); keyword arguments as for the constructor.

        Raises FileNotFoundError naming ``--checkpoint`` when there is no path and no packaged file.
        """
        if path is None:
            path = default_checkpoint()
            if path is None:
                raise FileNotFoundError(f"no checkpoint: this install ships none at {DEFAULT_CHECKPOINT!r}; pass "
                                        "--checkpoint PATH (a training run's checkpoint.pt)")
        return cls(Reconstructor.from_checkpoint(path), **kwargs)

    @property
    def runner_name(self) -> str:
        """Which runner runs the networks: ``"onnxruntime"`` or ``"torch"``."""
        return self.runner.name

    def detect(self, image: np.ndarray, path: str | None = None) -> list[Detection]:
        """Faces above ``min_confidence``, most confident first, at most ``max_faces``."""
        faces = [d for d in self.detector(image, path) if d.confidence >= self.min_confidence]
        faces.sort(key=lambda d: -d.confidence)
        return faces[: self.max_faces] if self.max_faces else faces

    def crop(self, image: np.ndarray, detection: Detection) -> tuple[CropBox, np.ndarray]:
        """The crop rule applied to one detection: ``(box, crop [S, S, 3])``."""
        box = crop_box_from_landmarks(detection.landmarks, self.landmarks_3d)
        return box, crop_image(image, box, self.size)

    def reconstruct_crops(self, crops: np.ndarray) -> tuple[FaceParams, ModelOutput]:
        """Encoder + multi-level model for crops [F, S, S, 3] (one runner call); base level from the
        base model, final level as the runner returned it."""
        params, final_g, final_r = self.runner(torch.from_numpy(np.ascontiguousarray(crops, np.float32)))
        with torch.no_grad():
            base_g, base_r = self.face_model.base(params.shape, params.expression, params.reflectance)
        out = ModelOutput(base_geometry=base_g, final_geometry=final_g.contiguous(), base_reflectance=base_r,
                          final_reflectance=final_r.contiguous(), geometry_corrective=final_g - base_g,
                          reflectance_corrective=final_r - base_r)
        return params, out

    def results(self, detections, boxes, crops, params: FaceParams, output: ModelOutput) -> list[FaceResult]:
        """Package batched reconstructions into one :class:`FaceResult` per face."""
        det_crop = np.stack([b.to_crop(d.landmarks, self.size) for d, b in zip(detections, boxes)])
        out = []
        for i, (d, box) in enumerate(zip(detections, boxes)):
            p = params.index(i)
            o = ModelOutput(**{k: v[i:i + 1] for k, v in vars(output).items()})
            lm, idx = landmarks_in_image(o, p, self.face_model, det_crop[i:i + 1], self.crop_intrinsics, box, self.size)
            out.append(FaceResult(d, box, crops[i], p, o, self.crop_intrinsics.copy(),
                                  box.image_intrinsics(self.crop_intrinsics, self.size), lm[0], idx[0]))
        return out

    def __call__(self, image: np.ndarray, path: str | None = None) -> list[FaceResult]:
        """All faces of ``image`` ([H, W, 3] float32 in [0, 1]); ``path`` names it in errors (and lets
        the "pts" detector find its landmark file).

        Raises:
            NoFaceFound: no face above the confidence threshold (the message names ``path``).
        """
        detections = self.detect(image, path)
        if not detections:
            where = repr(path) if path else "the image"
            raise NoFaceFound(f"no face found in {where} (detector confidence >= {self.min_confidence:g})")
        boxes, crops = zip(*(self.crop(image, d) for d in detections))
        crops = np.stack(crops)
        params, output = self.reconstruct_crops(crops)
        return self.results(list(detections), list(boxes), crops, params, output)
