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
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.crop import CropBox, crop_box_from_landmarks, crop_image, mean_landmarks_3d
from ..data.detect import Detection, DlibDetector, PtsFileDetector
from ..model import FaceParams, ModelOutput
from ..common.constants import Z_MIN
from ..reference.image_formation import euler_to_matrix
from .align import align_face, warp_aligned
from .anchored import rotate_camera_np
from .corrective_fit import PreparedReflectanceFit, ReflectanceCoefficientFitter, fitted_reflectance_coefficients
from .reconstructor import Reconstructor
from .runners import make_runner

__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_MIN_CONFIDENCE", "default_checkpoint", "greyscale_crops", "GREY_TOLERANCE", "FaceResult", "FacePipeline", "NoFaceFound",
           "OverlapChooser", "landmarks_in_image"]

#: Where the shipped checkpoint lives inside the installed package (package data).
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                                  "default.pt")
#: Every how many vertices the photo pipeline's reflectance fit reads (training reads all): the
#: normal equations cost ~2.7 ms over all ~3000 visible vertices, a third of that at 3. On 8
#: synthetic faces and a photo the final photometric error is +0.5 % of the all-vertex fit's at 3
#: and at 4 alike (+2.3 % at 6), but the greyscale photo's rose 2 % at 4 (0.167 -> 0.170) for
#: ~0.2 ms, so 3.
FIT_VERTEX_STRIDE = 3
#: A crop is greyscale when no pixel's channels differ by more than this (images in [0, 1]): 3/255
#: covers a grey JPEG's decoding (chroma rounding moves channels by a level or two), while a colour
#: photo's face differs by tens of levels (measured 0.18 on tests/data/astronaut.jpg's crop).
GREY_TOLERANCE = 3.0 / 255.0
#: The shipped checkpoint of the paper's image-only encoder (``init="encoder"``: every parameter from
#: the image; configs/paper_cpu.yaml's design), beside the default landmark-anchored one.
PAPER_CHECKPOINT = os.path.join(os.path.dirname(DEFAULT_CHECKPOINT), "paper.pt")


#: Default detection-confidence threshold of reconstruction (see :class:`FacePipeline`).
DEFAULT_MIN_CONFIDENCE = 0.2
#: Starts of a reconstruction: "landmarks" (landmark + colour fit, encoder correctives on the aligned
#: crop; :mod:`fml_taichi.recon.start`) or "encoder" (the paper's image-only regression).
INITS = ("landmarks", "encoder")
#: With the landmark start, a face whose landmarks an affine mean face explains this well
#: (:func:`plausibility_error`) is kept whatever its detector score (above ``min_score``). Measured
#: on dlib's output for four real photos: real faces 0.039-0.052 (one at score -0.11), boxes on
#: clothing and background 0.065-0.095.
PLAUSIBLE_FIT_ERROR = 0.06
#: The detector part of a detection's confidence from which a box counts as sure (dlib score ~0.35).
SURE_DETECTION = 0.5
#: For boxes the detector is sure of (:data:`SURE_DETECTION`) whose confidence is low because the rigid test
#: doubts a turned head: the landmark fit's residual over the frontal inter-ocular distance
#: (:class:`~fml_taichi.recon.landmark_fit.LandmarkFit`). Synthetic faces to yaw 75: 0.017-0.09.
PLAUSIBLE_MODEL_ERROR = 0.1


def greyscale_crops(crops, tolerance: float = GREY_TOLERANCE) -> np.ndarray:
    """[F] bool: which crops [F, S, S, 3] (values in [0, 1]) are greyscale, every pixel's channels
    within ``tolerance`` of each other (the torch reflectance fit's test; the numpy fitter reads only
    the pixels it samples, :meth:`ReflectanceCoefficientFitter.grey_samples`)."""
    c = np.asarray(crops)
    spread = np.maximum(np.abs(c[..., 0] - c[..., 1]), np.abs(c[..., 1] - c[..., 2]))
    spread = np.maximum(spread, np.abs(c[..., 0] - c[..., 2]))
    return spread.reshape(len(c), -1).max(1) <= tolerance


def plausibility_error(landmarks_2d, landmarks_3d) -> float:
    """RMS residual of the affine mean-face fit on the inner landmarks in units of the face's
    *frontal* inter-ocular distance (the fit's scale times the mean face's, so turning the head does
    not inflate it the way the projected eye distance would); inf for degenerate points."""
    from ..data.crop import fit_affine_camera

    try:
        a, _, rms = fit_affine_camera(landmarks_2d, landmarks_3d)
    except ValueError:
        return float("inf")
    x3 = np.asarray(landmarks_3d, np.float64)
    iod = float(np.linalg.norm(a, axis=1).mean() * np.linalg.norm(x3[36] - x3[45]))
    return rms / iod if iod > 1e-9 else float("inf")
#: dlib's HOG threshold with the landmark start when no ``min_score`` is given: doubtful boxes are
#: kept and the landmark plausibility decides.
LOW_SCORE_THRESHOLD = -0.5


class NoFaceFound(ValueError):
    """An image in which the detector found no face (above the confidence threshold)."""


def default_checkpoint(init: str = "landmarks") -> str | None:
    """The packaged checkpoint's path for ``init`` (the paper's image-only one for "encoder"), or None
    when this install has none."""
    path = PAPER_CHECKPOINT if init == "encoder" else DEFAULT_CHECKPOINT
    return path if os.path.isfile(path) else None


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
    numpy float32 for a handful of faces (:func:`sliding_jaw_vertices`; the loss's kernel launch
    alone cost more than this whole function).
    """
    geo = output.final_geometry.detach().contiguous().numpy()
    dt = geo.dtype
    k = np.broadcast_to(np.asarray(crop_intrinsics, dt).reshape(-1, 4), (len(geo), 4))
    det = np.asarray(detected_crop, dt)
    with torch.no_grad():
        rot = euler_to_matrix(params.rotation.detach().to(torch.float32)).numpy().astype(dt, copy=False)
    t = params.translation.detach().numpy().astype(dt, copy=False)
    idx = sliding_jaw_vertices(geo, rot, t, k, det, face_model)
    pts = geo[np.arange(len(geo))[:, None], idx]
    v_cam = pts @ rot.transpose(0, 2, 1) + t[:, None]
    z = np.maximum(v_cam[..., 2], Z_MIN)
    uv = np.stack([k[:, 0:1] * v_cam[..., 0] / z + k[:, 2:3], k[:, 1:2] * v_cam[..., 1] / z + k[:, 3:4]], -1)
    return crop_box.to_image(uv, size).astype(np.float32), idx


def sliding_jaw_vertices(geometry: np.ndarray, rotation: np.ndarray, translation: np.ndarray, intrinsics: np.ndarray,
                         detected: np.ndarray, face_model) -> np.ndarray:
    """The landmark vertex indices [B, 68] int64 with each jaw landmark on the contour candidate
    nearest the camera ray through its detected point: ``losses.terms.landmark_vertices`` (sliding)
    in numpy, the first minimum on ties as the kernel. geometry [B, N, 3], rotation [B, 3, 3],
    translation [B, 3], intrinsics [B, 4], detected [B, 68, 2] (crop px)."""
    table, valid = _contour_table(face_model)
    b = len(geometry)
    n_slide = len(table)
    q = geometry[:, table] @ rotation[:, None].transpose(0, 1, 3, 2) + translation[:, None, None]  # [B, K, C, 3]
    k = intrinsics
    d = np.concatenate([(detected[:, :n_slide] - k[:, None, 2:]) / k[:, None, :2],
                        np.ones((b, n_slide, 1), geometry.dtype)], -1)[:, :, None]  # [B, K, 1, 3]
    cross = q[..., [1, 2, 0]] * d[..., [2, 0, 1]] - q[..., [2, 0, 1]] * d[..., [1, 2, 0]]
    dist = np.where(valid, (cross * cross).sum(-1) / (d * d).sum(-1), np.inf)
    idx = np.repeat(face_model.landmarks.cpu().numpy().astype(np.int64)[None], b, 0)
    idx[:, :n_slide] = table[np.arange(n_slide), dist.argmin(-1)]
    return idx


_CONTOUR_TABLES: dict = {}


def _contour_table(face_model) -> tuple[np.ndarray, np.ndarray]:
    """[K, C] contour candidates per sliding landmark (padded) and their validity, cached per model."""
    key = (id(face_model), face_model.contour_indices.data_ptr())
    if key not in _CONTOUR_TABLES:
        off = face_model.contour_offsets.cpu().numpy().astype(np.int64)
        cand = face_model.contour_indices.cpu().numpy().astype(np.int64)
        width = int(max(1, (off[1:] - off[:-1]).max())) if len(off) > 1 else 1
        table = np.zeros((len(off) - 1, width), np.int64)
        valid = np.zeros((len(off) - 1, width), bool)
        for j in range(len(off) - 1):
            row = cand[off[j]:off[j + 1]]
            table[j, :len(row)], valid[j, :len(row)] = row, True
            table[j, len(row):] = row[-1] if len(row) else 0
        _CONTOUR_TABLES[key] = (table, valid)
    return _CONTOUR_TABLES[key]


def _make_detector(detector, landmarks_3d, landmark_model=None, **dlib_options):
    if detector is None or detector == "dlib":
        return DlibDetector(landmark_model, landmarks_3d=landmarks_3d, **dlib_options)
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
        init: "landmarks" (default) or "encoder" (:data:`INITS`).
        min_score: with the landmark start, faces whose detector score is below this are dropped;
            faces at or above it are kept when confident *or* plausible (:data:`PLAUSIBLE_FIT_ERROR`).
        upsample: dlib's HOG upsampling (None: dlib detector's default); with the landmark start an
            image without faces is searched once more at one level finer (small faces).
        correctives: with the landmark start and an ``image`` encoder, add the encoder's corrective
            coefficients (an ``image+start`` encoder always gives its residuals and correctives).
        focal_px: the photo's focal length in pixels when known (EXIF, calibration); the landmark
            start then fits in that camera (:meth:`crop_cameras`). None: the training crop camera.
    """
    def __init__(self, reconstructor, detector="dlib", runner: str = "auto", threads: int | None = None,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_faces: int | None = None,
                 landmark_model: str | None = None, init: str = "landmarks", min_score: float | None = None,
                 upsample: int | None = None, correctives: bool = True, focal_px: float | None = None):
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if min_score is not None and not np.isfinite(min_score):
            raise ValueError(f"min_score: expected a finite number or None, got {min_score!r}")
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
        if focal_px is not None and not (np.isfinite(focal_px) and focal_px > 0):
            raise ValueError(f"focal_px: expected a positive focal length in pixels or None, got {focal_px!r}")
        self.init, self.min_score, self.correctives, self.focal_px = init, min_score, bool(correctives), focal_px
        dlib_options = {"upsample": upsample}
        if init == "landmarks":
            dlib_options["min_score"] = LOW_SCORE_THRESHOLD if min_score is None else min(float(min_score), 0.0)
        self.detector = _make_detector(detector, self.landmarks_3d, landmark_model,
                                       **(dlib_options if detector in (None, "dlib") else {}))
        self.start = None
        #: Fit the reflectance correctives' coefficients for checkpoints trained so (False: the final
        #: reflectance is the base's; the fit costs ~1-2 ms per face on the CPU, docs/reconstruction.md).
        self.fit_reflectance_correctives = True
        #: How the reflectance fit runs: "numpy" (:class:`~fml_taichi.recon.corrective_fit.ReflectanceCoefficientFitter`,
        #: the fast path for a few photos; numba-compiled when numba imports, ``recon.compiled``) or
        #: "torch" (``fitted_reflectance_coefficients``, training's functions; the same maths, the
        #: benchmark's baseline).
        self.reflectance_fit_impl = "numpy"
        #: Every how many vertices the reflectance fit reads (:data:`FIT_VERTEX_STRIDE`).
        self.reflectance_fit_stride = FIT_VERTEX_STRIDE
        self._reflectance_fitter = None
        #: A greyscale crop gets a grey final reflectance: the numpy fit solves over grey offsets
        #: against the grey base (the torch fit, in colour), and the final level is the channel mean
        #: of base + corrective (False: fitted in colour as any photo, the paper's path; a faint cast remains).
        self.grey_photo_reflectance = True
        #: Run the encoder on a worker thread while the start is fitted (landmark start only): True
        #: (measured fastest, also on a busy 2-core machine), False, or "auto": both, timed, keeping
        #: the faster (:class:`OverlapChooser`, for machines where the worker thread waits too long
        #: for a core and the GIL).
        self.overlap_encoder = True
        self.overlap_chooser = OverlapChooser()
        #: Landmark start with an ``image`` encoder: run the backbone graph and only the corrective
        #: heads (True), or the whole encoder + multi-level model graph on the aligned crop and keep
        #: its correctives (False: the path before the split, the benchmark's baseline).
        self.split_encoder = True
        self._pool = None
        if init == "landmarks":
            from .start import LandmarkStart

            self.start = LandmarkStart(self.face_model, crop_size=self.size)
        #: The checkpoint's encoder reads the landmark start (``encoder.input: image+start``).
        self.encoder_takes_start = bool(reconstructor.encoder.takes_start)
        if self.encoder_takes_start and init == "encoder":
            raise ValueError("init 'encoder': this checkpoint's encoder reads the landmark start "
                             "(encoder.input 'image+start'); use init 'landmarks'")
        graphs = ("features",) if init == "landmarks" else ("model",)
        self.runner = make_runner(reconstructor.encoder, reconstructor.multilevel, runner, self.size, threads, graphs)
        self.min_confidence = float(min_confidence)
        self.max_faces = max_faces

    @classmethod
    def from_checkpoint(cls, path: str | None = None, **kwargs) -> "FacePipeline":
        """Load ``path`` (default: the packaged checkpoint); keyword arguments as for the constructor.

        Raises FileNotFoundError naming ``--checkpoint`` when there is no path and no packaged file.
        """
        if path is None:
            init = kwargs.get("init", "landmarks")
            path = default_checkpoint(init)
            if path is None:
                where = PAPER_CHECKPOINT if init == "encoder" else DEFAULT_CHECKPOINT
                raise FileNotFoundError(f"no checkpoint: this install ships none at {where!r}; pass "
                                        "--checkpoint PATH (a training run's checkpoint.pt)")
        return cls(Reconstructor.from_checkpoint(path), **kwargs)

    @property
    def runner_name(self) -> str:
        """Which runner runs the networks: ``"onnxruntime"`` or ``"torch"``."""
        return self.runner.name

    def detect(self, image: np.ndarray, path: str | None = None) -> list[Detection]:
        """Faces above ``min_confidence`` (landmark start: or plausible, see the class docstring),
        most confident first, at most ``max_faces``."""
        faces = [d for d in self.detector(image, path) if self._keep(d)]
        if not faces and self.init == "landmarks" and self._finer_detector() is not None:
            faces = [d for d in self._finer(image, path) if self._keep(d)]
        faces.sort(key=lambda d: -d.confidence)
        return faces[: self.max_faces] if self.max_faces else faces

    def _keep(self, d: Detection) -> bool:
        if self.init == "encoder":
            return d.confidence >= self.min_confidence
        if self.min_score is not None and d.score < self.min_score:
            return False
        if d.confidence >= self.min_confidence:
            return True
        from ..data.detect import detector_confidence

        if detector_confidence(d.score) < SURE_DETECTION:  # a doubtful box: the stricter rigid test
            return plausibility_error(d.landmarks, self.landmarks_3d) <= PLAUSIBLE_FIT_ERROR
        # A box the detector is sure of whose points the rigid affine test doubts (a turned head):
        # the perspective landmark fit, yaw-independent, decides.
        box = crop_box_from_landmarks(d.landmarks, self.landmarks_3d)
        fit = self.start.landmarks(d.landmarks[None].astype(np.float64), box.image_intrinsics(self.crop_intrinsics, self.size))
        return float(fit.plausibility[0]) <= PLAUSIBLE_MODEL_ERROR

    def _finer_detector(self):
        """dlib at one more upsampling level (the image pyramid's finer step), or None."""
        det = self.detector
        if not hasattr(det, "upsample") or not hasattr(det, "_boxes"):
            return None
        if getattr(self, "_finer_cache", None) is None:
            import copy

            finer = copy.copy(det)
            finer.upsample = min(3, (det.upsample if det.upsample is not None else 1) + 1)
            self._finer_cache = finer if finer.upsample != det.upsample else False
        return self._finer_cache or None

    def _finer(self, image, path):
        return self._finer_detector()(image, path)

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
        return self.fit_reflectance(params, out, crops, self.crop_intrinsics)

    def fit_reflectance(self, params: FaceParams, output: ModelOutput, crops, intrinsics,
                        prepared: PreparedReflectanceFit | None = None) -> tuple[FaceParams, ModelOutput]:
        """For a checkpoint trained with fitted reflectance coefficients
        (``model.reflectance_coefficients: fitted``), ``delta_r`` fitted to the crops [F, S, S, 3] seen
        by ``intrinsics`` [4] / [F, 4] (:mod:`fml_taichi.recon.corrective_fit`); otherwise unchanged.
        ``reflectance_fit_impl`` picks the numpy fitter (default) or the torch functions training uses.
        ``prepared``: :meth:`prepare_reflectance_fit` of the same crops, pose, light and final geometry,
        done earlier (the numpy fitter only)."""
        if not self.fits_reflectance:
            return params, output
        ml = self.multilevel
        corrective = ml.reflectance_corrective
        prior = self.reconstructor.reflectance_prior
        grey = None
        if self.reflectance_fit_impl == "numpy":
            fitter = self._numpy_reflectance_fitter()
            if prepared is None:
                prepared = self.prepare_reflectance_fit(params, output.final_geometry, crops, intrinsics)
            delta, grey = prepared.solve(output.base_reflectance), prepared.grey
            corr_r = torch.from_numpy(fitter.offsets(delta))
            delta = torch.from_numpy(delta)
        else:
            grey = greyscale_crops(crops) if self.grey_photo_reflectance else None
            images = torch.from_numpy(np.ascontiguousarray(crops, np.float32))
            k = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float32)
            delta = fitted_reflectance_coefficients(ml, params, output, images, k, prior, self.reflectance_fit_stride)
            with torch.no_grad():
                corr_r = corrective(delta.to(next(corrective.parameters()).dtype))
        with torch.no_grad():
            delta = delta.to(params.delta_reflectance.dtype)
            corr_r = corr_r.to(output.base_reflectance.dtype)
            final_r = output.base_reflectance + corr_r
            if grey is not None and grey.any():  # the final level of a grey crop: its channel mean
                mask = torch.from_numpy(grey)[:, None, None]
                final_r = torch.where(mask, final_r.mean(-1, keepdim=True).expand_as(final_r), final_r)
                corr_r = final_r - output.base_reflectance
        output = ModelOutput(**{**vars(output), "final_reflectance": final_r, "reflectance_corrective": corr_r})
        return params.replace(delta_reflectance=delta), output

    def _numpy_reflectance_fitter(self) -> ReflectanceCoefficientFitter:
        """The numpy fitter of the reflectance corrective as it is now (rebuilt when it changed)."""
        corrective, prior = self.multilevel.reflectance_corrective, self.reconstructor.reflectance_prior
        fitter, stride = self._reflectance_fitter, int(self.reflectance_fit_stride)
        if fitter is None or not fitter.matches(corrective, prior) or fitter.stride != stride:
            fitter = self._reflectance_fitter = ReflectanceCoefficientFitter(self.face_model, corrective, stride, prior)
        return fitter

    def prepare_reflectance_fit(self, params: FaceParams, final_geometry, crops, intrinsics) -> PreparedReflectanceFit:
        """The numpy reflectance fit up to the base reflectance (observation and normal equations,
        :meth:`~fml_taichi.recon.corrective_fit.ReflectanceCoefficientFitter.prepare`), for
        :meth:`fit_reflectance`'s ``prepared``."""
        return self._numpy_reflectance_fitter().prepare(
            final_geometry, params.rotation, params.translation, params.light, crops, intrinsics,
            GREY_TOLERANCE if self.grey_photo_reflectance else None)

    @property
    def fits_reflectance(self) -> bool:
        """Whether :meth:`fit_reflectance` replaces ``delta_r`` (the checkpoint was trained so and
        ``fit_reflectance_correctives`` is on)."""
        return self.reconstructor.reflectance_prior is not None and self.fit_reflectance_correctives

    def results(self, detections, boxes, crops, params: FaceParams, output: ModelOutput,
                crop_intrinsics=None) -> list[FaceResult]:
        """Package batched reconstructions into one :class:`FaceResult` per face (``crop_intrinsics``
        [F, 4]: per-face crop cameras; default: the pipeline's one crop camera)."""
        det_crop = np.stack([b.to_crop(d.landmarks, self.size) for d, b in zip(detections, boxes)])
        if crop_intrinsics is None:
            crop_intrinsics = np.repeat(self.crop_intrinsics[None], len(boxes), 0)
        out = []
        for i, (d, box) in enumerate(zip(detections, boxes)):
            p = params.index(i)
            o = ModelOutput(**{k: v[i:i + 1] for k, v in vars(output).items()})
            k = np.asarray(crop_intrinsics[i], np.float64)
            lm, idx = landmarks_in_image(o, p, self.face_model, det_crop[i:i + 1], k, box, self.size)
            out.append(FaceResult(d, box, crops[i], p, o, k.copy(), box.image_intrinsics(k, self.size), lm[0], idx[0]))
        return out

    def crop_cameras(self, boxes, image_shape) -> np.ndarray:
        """[F, 4] crop intrinsics: with ``focal_px`` (the photo's focal length, principal point at the
        image centre) the crops of one photo share its camera exactly; without, each crop gets the
        training crop camera (the photo's focal then follows the face's size, as in training)."""
        if self.focal_px is None:
            return np.repeat(self.crop_intrinsics[None], len(boxes), 0)
        h, w = image_shape[:2]
        f, cx, cy = float(self.focal_px), (w - 1) / 2, (h - 1) / 2
        out = []
        for b in boxes:
            k = self.size / b.side
            out.append([f * k, f * k, (cx - b.left) * k - 0.5, (cy - b.top) * k - 0.5])
        return np.asarray(out)

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
        return self.reconstruct_detections(image, list(detections), list(boxes), np.stack(crops))

    def reconstruct_detections(self, image, detections, boxes, crops) -> list[FaceResult]:
        """Detected and cropped faces of ``image`` -> one :class:`FaceResult` each, by ``init``."""
        if self.init == "landmarks":
            k_crop = self.crop_cameras(boxes, image.shape)
            params, output = self.reconstruct_landmarks(image, detections, boxes, crops, k_crop)
            return self.results(detections, boxes, crops, params, output, k_crop)
        params, output = self.reconstruct_crops(crops)
        return self.results(detections, boxes, crops, params, output)

    def _encoder_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fml-encoder")
        return self._pool

    def _align(self, detections, boxes, k_crop) -> list:
        """The :class:`~fml_taichi.recon.align.AlignedCrop` of each face (similarity and camera only:
        the warp itself runs with the encoder)."""
        return [align_face(d.landmarks, b.image_intrinsics(k, self.size), self.start.template, self.size)
                for d, b, k in zip(detections, boxes, k_crop)]

    def _encoder_job(self, image, aligned, takes_start: bool) -> "_EncoderJob":
        """Warp the aligned crops and run the encoder's image part on them: on the worker thread while
        this one fits the start (``overlap_encoder``; ONNX Runtime, torch and OpenCV release the GIL),
        else here. An ``image+start`` encoder's job ends with the backbone's features (its heads need
        the start); an ``image`` encoder's goes on to the correctives' offsets, which do not."""
        if takes_start:
            work = self.runner.features
        elif self.split_encoder:
            work = self._image_correctives
        else:
            work = self._image_correctives_full_graph
        job = _EncoderJob(image, aligned, work)
        overlap = self.overlap_encoder
        job.overlapped = self.overlap_chooser.choose() if overlap == "auto" else bool(overlap)
        if job.overlapped:
            self._encoder_pool().submit(job.run)
        else:
            job.run("caller")
        return job

    def _image_correctives(self, crops) -> tuple:
        """An ``image`` encoder's corrective coefficients and the multi-level model's offsets for them."""
        z_g, z_r = self.runner.heads.correctives(self.runner.features(crops))
        scale = self.runner.heads.codec.scales.corrective_scale
        return self._corrective_offsets(torch.from_numpy(z_g * scale), torch.from_numpy(z_r * scale))

    def _image_correctives_full_graph(self, crops) -> tuple:
        enc, _, _ = self.runner(torch.from_numpy(crops))
        return self._corrective_offsets(enc.delta_geometry, enc.delta_reflectance)

    def _corrective_offsets(self, delta_g, delta_r) -> tuple:
        dt = self.face_model.dtype
        delta_g, delta_r = delta_g.to(dt), delta_r.to(dt)
        with torch.no_grad():
            return (delta_g, delta_r, self.multilevel.geometry_corrective(delta_g),
                    self.multilevel.reflectance_corrective(delta_r))

    def reconstruct_landmarks(self, image, detections, boxes, crops, crop_intrinsics=None) -> tuple[FaceParams, ModelOutput]:
        """The landmark start (:mod:`fml_taichi.recon.start`) for crops [F, S, S, 3] and the encoder on
        the aligned crops (module :mod:`fml_taichi.recon.align`).

        * an ``image`` encoder (the paper's) adds its correctives (when ``correctives``) to the start
          fitted on the crops;
        * an ``image+start`` encoder reads the start fitted on the *aligned* crops in their camera
          (exactly as :class:`~fml_taichi.recon.anchored.EncoderInputPreparer` prepares it in
          training), predicts residuals on it and the correctives; the result moves back to the crop
          camera (:func:`~fml_taichi.recon.anchored.rotate_camera` by ``-angle``). ``last_start``
          then holds the start in the aligned camera.

        The backbone runs on a worker thread while the start is fitted (for an ``image`` encoder the
        corrective heads and offsets too); an ``image+start`` encoder's heads and the multi-level
        model after it. ``last_timings`` (seconds): ``landmark_fit``, ``colour_fit``, ``crop_wait``
        (the colour fit waiting for the aligned warp), ``align``, ``encoder`` (the worker's part),
        ``encoder_wait`` (this thread waiting for it after the start), ``heads``, ``model``."""
        ml = self.multilevel
        k_crop = self.crop_cameras(boxes, image.shape) if crop_intrinsics is None else crop_intrinsics
        takes_start = self.encoder_takes_start
        t0 = time.perf_counter()
        job, align_seconds = None, 0.0
        if takes_start or self.correctives:
            aligned = self._align(detections, boxes, k_crop)
            align_seconds = time.perf_counter() - t0
            job = self._encoder_job(image, aligned, takes_start)
        if takes_start:
            lm_al = np.stack([al.to_crop(d.landmarks) for al, d in zip(aligned, detections)])
            k_al = np.stack([al.intrinsics for al in aligned])
            start = self.start(job.crops, lm_al, k_al, ml.n_correctives_geometry, ml.n_correctives_reflectance)
        else:
            det_crop = np.stack([b.to_crop(d.landmarks, self.size) for d, b in zip(detections, boxes)])
            start = self.start(crops, det_crop, k_crop, ml.n_correctives_geometry, ml.n_correctives_reflectance)
        t2 = time.perf_counter()
        early = self._before_features(start, aligned, crops, k_crop) if takes_start else None
        t_early = time.perf_counter()
        encoded, encoder_seconds = job.result() if job is not None else (None, 0.0)
        t3 = time.perf_counter()
        params = start.params
        corr = None
        if early is not None:  # the heads' reflectance residual on what was done before the features
            refl = self.runner.heads.base_reflectance(encoded, early.start_z)
            params = early.params.replace(reflectance=torch.from_numpy(refl).to(early.params.reflectance.dtype))
        elif takes_start:
            params = self._start_encoder_params(encoded, params, aligned)
        elif self.correctives:
            delta_g, delta_r, *corr = encoded
            params = params.replace(delta_geometry=delta_g, delta_reflectance=delta_r)
        t4 = time.perf_counter()
        with torch.no_grad():  # the multi-level model (an image encoder's correctives came from the worker)
            # An image encoder keeps the start's shape: the start's (lazily evaluated) base geometry.
            if early is not None:
                base_g = early.base_geometry
            elif takes_start:
                base_g = self.face_model.geometry(params.shape, params.expression)
            else:
                base_g = start.base_geometry
            base_r = self.face_model.reflectance(params.reflectance)
            fit_r = self.correctives and self.fits_reflectance
            if corr is None:  # the reflectance corrective waits for its fitted coefficients when they are fitted
                corr = (self._geometry_corrective(params.delta_geometry, base_g),
                        None if fit_r else ml.reflectance_corrective(params.delta_reflectance))
            corr_g, corr_r = corr
            output = ModelOutput(base_geometry=base_g, final_geometry=base_g + corr_g, base_reflectance=base_r,
                                 final_reflectance=base_r if corr_r is None else base_r + corr_r,
                                 geometry_corrective=corr_g, reflectance_corrective=corr_r)
        t5 = time.perf_counter()
        if self.correctives:
            params, output = self.fit_reflectance(params, output, crops, k_crop,
                                                  early.reflectance_fit if early is not None else None)
        self.last_timings = {**start.seconds, "align": align_seconds, "encoder_wait": t3 - t_early,
                             "encoder": encoder_seconds, "before_features": t_early - t2,
                             "heads": t4 - t3, "model": t5 - t4, "reflectance_fit": time.perf_counter() - t5}
        self.last_start = start
        #: Which thread ran the encoder's part of the last call: "worker", "caller" or None (no encoder).
        self.last_encoder_thread = job.ran_on if job is not None else None
        if job is not None and self.overlap_encoder == "auto":
            self.overlap_chooser.record(job.overlapped, time.perf_counter() - t0)
        return params, output


    def _geometry_corrective(self, delta_g: torch.Tensor, base_g: torch.Tensor) -> torch.Tensor:
        """The geometry corrective's offsets [B, N, 3]; exactly zero without evaluating the
        corrective when every coefficient is zero (a linear corrective of 0 is 0; the shipped
        checkpoint's geometry head is untrained and zero, and the evaluation reads all of Theta_g)."""
        if not bool(delta_g.any()) and self._geometry_corrective_linear():
            return torch.zeros_like(base_g)
        return self.multilevel.geometry_corrective(delta_g)

    def _geometry_corrective_linear(self) -> bool:
        """Whether the geometry corrective is a linear kind (a basis ``theta``; an MLP of 0 need not
        be 0). Asked once: the smooth kind's ``theta`` is a property that builds all of Theta_g."""
        corr = self.multilevel.geometry_corrective
        if getattr(self, "_linear_geometry", (None,))[0] is not corr:
            self._linear_geometry = (corr, hasattr(corr, "theta"))
        return self._linear_geometry[1]

    def _before_features(self, start, aligned, crops, k_crop) -> "_EarlyModel | None":
        """What an ``image+start`` encoder cannot change, done while its backbone still runs: with
        heads that move only the reflectance (``EncoderHeads.keeps_geometry``), the final geometry,
        pose and light are the start's, so the base geometry and the reflectance fit's observation and
        normal equations need only the start (the same numbers as after the encoder: test). None
        when the heads may move more, or the fit is not the numpy one."""
        if not (self.runner.heads.keeps_geometry and self.correctives and self.fits_reflectance
                and self.reflectance_fit_impl == "numpy" and self._geometry_corrective_linear()):
            return None
        heads = self.runner.heads
        start_z = heads.start_z(start.params)
        fixed = self._start_params_from_flat(heads.start_flat(start_z), aligned, start.params.shape.dtype)
        with torch.no_grad():
            base_g = self.face_model.geometry(fixed.shape, fixed.expression)
        return _EarlyModel(fixed, start_z, base_g, self.prepare_reflectance_fit(fixed, base_g, crops, k_crop))

    def _start_encoder_params(self, features, start: FaceParams, aligned) -> FaceParams:
        """An ``image+start`` encoder's heads on the backbone's features and the start's z, moved
        from the aligned crop's camera back to the crop's (numpy: ``anchored.start_z``,
        ``codec.unpack`` and ``anchored.rotate_camera`` give the same numbers, at a few torch calls' cost each)."""
        heads = self.runner.heads
        return self._start_params_from_flat(heads.flat(features, heads.start_z(start)), aligned, start.shape.dtype)

    def _start_params_from_flat(self, flat: np.ndarray, aligned, dtype) -> FaceParams:
        """The heads' flat vector unpacked and moved from the aligned crops' cameras to the crops'."""
        p = self.runner.heads.unpack(flat)
        angle = -np.array([al.angle for al in aligned], np.float32)
        p["rotation"], p["translation"], p["light"] = rotate_camera_np(p["rotation"], p["translation"], p["light"], angle)
        return FaceParams(**{k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in p.items()})


@dataclass
class _EarlyModel:
    """:meth:`FacePipeline._before_features`: the parameters the heads pass on from the start (all but
    the base reflectance), the start's z, the base geometry [F, N, 3] (the final one too: the geometry
    corrective is zero) and the prepared reflectance fit."""

    params: FaceParams
    start_z: np.ndarray
    base_geometry: torch.Tensor
    reflectance_fit: PreparedReflectanceFit


class OverlapChooser:
    """Picks serial or overlapped encoder runs by their recent wall times (``overlap_encoder="auto"``).

    Each way keeps its last ``window`` call times; the faster median wins, and every ``explore``-th
    call tries the other way so that a change of the machine's load is noticed. Results do not
    depend on the choice, only the time does."""

    def __init__(self, window: int = 15, explore: int = 25, min_samples: int = 3):
        from collections import deque

        self.window, self.explore, self.min_samples = int(window), int(explore), int(min_samples)
        self.times = {False: deque(maxlen=self.window), True: deque(maxlen=self.window)}
        self.calls = 0

    def preferred(self) -> bool:
        """The way with the lower median so far (overlapped while neither has data)."""
        med = {k: float(np.median(v)) if v else float("inf") for k, v in self.times.items()}
        return med[True] <= med[False]

    def choose(self) -> bool:
        self.calls += 1
        for way in (True, False):
            if len(self.times[way]) < self.min_samples:
                return way
        best = self.preferred()
        return (not best) if self.calls % self.explore == 0 else best

    def record(self, overlapped: bool, seconds: float) -> None:
        self.times[bool(overlapped)].append(float(seconds))


class _EncoderJob:
    """The encoder's part of one call: aligned warps, then ``work(crops)``, run by whichever thread
    claims it first: the worker (:meth:`run`, submitted to the pool) or the caller, when it needs a
    result the worker has not started on (a busy machine may not schedule the worker in time; the
    call then costs what the serial path costs instead of waiting). ``crops()`` and ``result()``
    block until their part is done (re-raising its error)."""

    def __init__(self, image, aligned, work):
        self.image, self.aligned, self.work = image, aligned, work
        self._crops, self._result = Future(), Future()
        self._claim = threading.Lock()
        #: Who ran the job: "worker" or "caller" (None: not started); whether it was submitted to the worker.
        self.ran_on, self.overlapped = None, False

    def run(self, who: str = "worker"):
        if not self._claim.acquire(blocking=False):
            return  # the other thread has it
        self.ran_on = who
        t0 = time.perf_counter()
        try:
            crops = np.stack([warp_aligned(self.image, al) for al in self.aligned])
        except BaseException as e:
            self._crops.set_exception(e)
            self._result.set_exception(e)
            return
        self._crops.set_result(crops)
        try:
            self._result.set_result((self.work(crops), time.perf_counter() - t0))
        except BaseException as e:
            self._result.set_exception(e)

    def _run_here_if_unstarted(self):
        if not self._crops.done() and not self._claim.locked():
            self.run("caller")

    def crops(self) -> np.ndarray:
        if not self._crops.done() and not self._claim.locked():
            # Unstarted: warp here (the worker, scheduled later, finds the job claimed and returns).
            self._warp_only()
        return self._crops.result()

    def _warp_only(self):
        """The caller needs the crops before the worker started: it takes the whole job (warp now,
        ``work`` at :meth:`result`)."""
        if not self._claim.acquire(blocking=False):
            return
        self.ran_on = "caller"
        try:
            self._crops.set_result(np.stack([warp_aligned(self.image, al) for al in self.aligned]))
        except BaseException as e:
            self._crops.set_exception(e)
            self._result.set_exception(e)

    def result(self) -> tuple:
        """(what ``work`` returned, seconds of warp + work)."""
        if self.ran_on == "caller" and not self._result.done():  # claimed by this thread at crops()
            t0 = time.perf_counter()
            try:
                self._result.set_result((self.work(self._crops.result()), time.perf_counter() - t0))
            except BaseException as e:
                self._result.set_exception(e)
        else:
            self._run_here_if_unstarted()
        return self._result.result()
