"""Face detection and 68-point landmarks for real images (dlib), with a documented confidence.

Detectors return a list of :class:`Detection` per image, most confident first. Two are provided:

* :class:`DlibDetector`: dlib's HOG face detector + its 68-point shape predictor (iBUG 300-W order,
  the project's landmark convention). Needs ``pip install dlib-bin==20.0.1.post1`` and the predictor
  file ``shape_predictor_68_face_landmarks.dat``: Debian's ``apt-get install libdlib-data`` (puts it
  in ``/usr/share/dlib/``) or ``pip install face-recognition-models==0.3.0``, or any path given
  explicitly / in ``$FML_TAICHI_DLIB_PREDICTOR``. The model's training data (iBUG 300-W) is licensed
  for non-commercial use only.
* :class:`PtsFileDetector`: reads landmarks annotated next to the image (``IMAGE.pts``, the 300-W /
  iBUG layout) instead of detecting: for annotated data sets, and to run without dlib.

**Confidence** (``Detection.confidence`` in [0, 1]) is the product of two documented parts:

* ``detector_confidence = 1 - exp(-max(score, 0) / SCORE_SCALE)``: dlib's HOG score is the linear
  SVM margin (> 0 means "face" at dlib's default threshold); clear frontal faces score 1-3, doubtful
  ones near 0. With ``SCORE_SCALE = 0.5``: score 0.25 -> 0.39, 0.5 -> 0.63, 1 -> 0.86, 2 -> 0.98.
* ``fit_confidence = exp(-(fit_error / FIT_ERROR_SCALE)^2)``: *landmark-fit plausibility*. The best
  affine camera maps the mean face's 3D inner landmarks (17-67) onto the detected ones
  (:func:`fml_taichi.data.crop.fit_affine_camera`); ``fit_error`` is its RMS residual divided by the
  fitted inter-ocular distance (like the NME of landmark benchmarks). A real face differs from the
  mean one by identity and expression only (fit_error ~0.03-0.08); a predictor run on a false
  detection or a badly occluded face produces an implausible point set (0.15 and more). With
  ``FIT_ERROR_SCALE = 0.12``: 0.05 -> 0.84, 0.1 -> 0.50, 0.15 -> 0.21.

dlib gives no per-point confidence; every landmark gets the face's ``confidence``.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..common.images import to_uint8
from ..io.pts import read_pts
from ..model import default_face_model
from .crop import INNER_LANDMARKS, fit_affine_camera, mean_landmarks_3d

__all__ = ["Detection", "DetectorUnavailable", "DlibDetector", "PtsFileDetector", "SCORE_SCALE", "FIT_ERROR_SCALE",
           "detector_confidence", "fit_confidence", "landmark_fit_error", "find_dlib_predictor"]

SCORE_SCALE = 0.5
FIT_ERROR_SCALE = 0.12
_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_PREDICTOR_ENV = "FML_TAICHI_DLIB_PREDICTOR"
_DEBIAN_PREDICTOR = os.path.join("/usr/share/dlib", _PREDICTOR_FILE)
INSTALL_DLIB = "pip install dlib-bin==20.0.1.post1"
INSTALL_PREDICTOR = ("apt-get install libdlib-data (Debian/Ubuntu) or pip install face-recognition-models==0.3.0, "
                     f"or point ${_PREDICTOR_ENV} at a {_PREDICTOR_FILE}")
OUTER_EYE_CORNERS = (36, 45)


class DetectorUnavailable(RuntimeError):
    """The detector cannot run at all (a missing package or model file); the message says what to install."""


@dataclass
class Detection:
    """One face found in an image.

    box: [4] float ``x0, y0, x1, y1`` (image pixels) of the detector's face box.
    landmarks: [68, 2] float32 (x, y) image pixels, iBUG 300-W order, 0-based.
    score: the detector's raw score (dlib HOG: SVM margin; ``inf`` for annotated landmarks).
    fit_error: landmark-fit plausibility (module docstring); confidence: in [0, 1] (module docstring).
    source: "dlib" or "pts".
    """
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    fit_error: float
    confidence: float
    source: str

    @property
    def landmark_conf(self) -> np.ndarray:
        """[68] float32 per-point confidences (all equal to the face's: dlib gives none per point)."""
        return np.full(68, self.confidence, np.float32)

    def to_json(self) -> dict:
        return {"box": [float(v) for v in self.box], "score": float(self.score) if np.isfinite(self.score) else None,
                "fit_error": float(self.fit_error), "confidence": float(self.confidence), "source": self.source}


def detector_confidence(score: float) -> float:
    """dlib HOG score (SVM margin) -> [0, 1] (module docstring)."""
    if not np.isfinite(score):
        return 1.0 if score > 0 else 0.0
    return float(1.0 - np.exp(-max(float(score), 0.0) / SCORE_SCALE))


def fit_confidence(fit_error: float) -> float:
    """Landmark-fit error (inter-ocular units) -> [0, 1] (module docstring)."""
    return float(np.exp(-(float(fit_error) / FIT_ERROR_SCALE) ** 2))


def landmark_fit_error(landmarks_2d, landmarks_3d) -> float:
    """RMS residual of the affine mean-face fit over the inner landmarks, in fitted inter-ocular
    distances (module docstring). ``inf`` for degenerate landmarks."""
    try:
        a, _, rms = fit_affine_camera(landmarks_2d, landmarks_3d, INNER_LANDMARKS)
    except ValueError:
        return float("inf")
    x3 = np.asarray(landmarks_3d, dtype=np.float64)
    iod = float(np.linalg.norm(a @ (x3[OUTER_EYE_CORNERS[0]] - x3[OUTER_EYE_CORNERS[1]])))
    return rms / iod if iod > 1e-6 else float("inf")


def given_model_file(path: str | None, env_name: str, what: str) -> str | None:
    """A model file the user named: ``path``, else the environment variable ``env_name``; None when
    neither is set. DetectorUnavailable naming ``what`` when the named file is missing."""
    if path is not None:
        if not os.path.isfile(path):
            raise DetectorUnavailable(f"{what} not found: {path!r}")
        return os.fspath(path)
    env = os.environ.get(env_name)
    if env:
        if not os.path.isfile(env):
            raise DetectorUnavailable(f"${env_name} points to a missing file: {env!r}")
        return env
    return None


def find_dlib_predictor(path: str | None = None) -> str:
    """Path of dlib's 68-point predictor: ``path``, else ``$FML_TAICHI_DLIB_PREDICTOR``, else the
    ``face_recognition_models`` package, else Debian's ``/usr/share/dlib``.

    Raises:
        DetectorUnavailable: naming the install commands when none is found (or ``path`` is missing).
    """
    given = given_model_file(path, _PREDICTOR_ENV, "dlib landmark model")
    if given is not None:
        return given
    candidates = []
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "models", _PREDICTOR_FILE))
    candidates.append(_DEBIAN_PREDICTOR)
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise DetectorUnavailable(f"dlib's 68-point landmark model ({_PREDICTOR_FILE}) is not installed: {INSTALL_PREDICTOR}")


def _import_dlib():
    try:
        import dlib
    except ImportError as e:
        raise DetectorUnavailable(f"face detection needs dlib: {INSTALL_DLIB} ({e})") from e
    return dlib


def _mean_landmarks() -> np.ndarray:
    return mean_landmarks_3d(default_face_model(4000))


class _Scorer:
    """Turns raw landmarks + detector score into a :class:`Detection` (shared by both detectors)."""

    def __init__(self, landmarks_3d):
        self.landmarks_3d = np.asarray(_mean_landmarks() if landmarks_3d is None else landmarks_3d, np.float64)
        if self.landmarks_3d.shape != (68, 3):
            raise ValueError(f"landmarks_3d: expected shape (68, 3), got {self.landmarks_3d.shape}")

    def detection(self, box, landmarks, score: float, source: str) -> Detection:
        err = landmark_fit_error(landmarks, self.landmarks_3d)
        conf = detector_confidence(score) * fit_confidence(err)
        return Detection(np.asarray(box, np.float64), np.asarray(landmarks, np.float32), float(score), err, conf,
                         source)


class DlibDetector:
    """dlib HOG face detector + 68-point shape predictor (module docstring).

    Args:
        predictor_path: the ``.dat`` file (default: :func:`find_dlib_predictor`).
        landmarks_3d: [68, 3] mean-face landmarks for the plausibility fit (default: the default
            face model's, which loads it; pass :func:`~fml_taichi.data.crop.mean_landmarks_3d` of
            the model in use to avoid that).
        max_side: images larger than this are shrunk for *detection* only (HOG time grows with the
            pixel count; landmarks are always fitted at full resolution).
        upsample: HOG pyramid upsampling (finds faces down to ~40 px instead of ~80 px, 4x slower);
            None: upsample once when the (shrunk) image's longer side is at most 640 px.
        min_score: dlib's detection threshold on the SVM margin (0 is dlib's own default).

    Raises:
        DetectorUnavailable: dlib or the model file is missing (message names the install command).
    """
    def __init__(self, predictor_path: str | None = None, landmarks_3d=None, max_side: int = 1280,
                 upsample: int | None = None, min_score: float = 0.0):
        dlib = _import_dlib()
        path = find_dlib_predictor(predictor_path)
        try:
            self._predictor = dlib.shape_predictor(path)
        except RuntimeError as e:
            raise DetectorUnavailable(f"cannot read dlib landmark model {path!r}: {e}") from e
        self._detector = dlib.get_frontal_face_detector()
        self._dlib = dlib
        self.predictor_path = path
        if not isinstance(max_side, int) or max_side < 64:
            raise ValueError(f"max_side: expected an int >= 64, got {max_side!r}")
        if upsample is not None and (not isinstance(upsample, int) or not 0 <= upsample <= 3):
            raise ValueError(f"upsample: expected None or an int in [0, 3], got {upsample!r}")
        self.max_side, self.upsample, self.min_score = max_side, upsample, float(min_score)
        self._scorer = _Scorer(landmarks_3d)

    @property
    def landmarks_3d(self) -> np.ndarray:
        return self._scorer.landmarks_3d

    def _boxes(self, img: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes ``(x0, y0, x1, y1)`` in ``img``'s pixels with their HOG scores."""

        h, w = img.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        small = img if factor == 1.0 else cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))),
                                                     interpolation=cv2.INTER_AREA)
        up = self.upsample if self.upsample is not None else int(max(small.shape[:2]) <= 640)
        rects, scores, _ = self._detector.run(small, up, self.min_score)
        return [(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64) / factor, float(s))
                for r, s in zip(rects, scores)]

    def __call__(self, image, path: str | None = None) -> list[Detection]:
        """Faces in ``image`` ([H, W, 3] float in [0, 1] or uint8), most confident first."""
        img = np.ascontiguousarray(to_uint8(image))
        out = []
        for box, score in self._boxes(img):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            shape = self._predictor(img, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
            pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            out.append(self._scorer.detection(box, pts, score, "dlib"))
        return sorted(out, key=lambda d: -d.confidence)

    def landmarks_in_boxes(self, image, boxes) -> list[np.ndarray]:
        """The shape predictor alone in given boxes (no face detection: for tracking, where each box
        comes from the previous frame's landmarks): ``[68, 2]`` float64 (x, y) per box ``x0, y0, x1, y1``.
        ``image`` as for ``__call__``; a uint8 image skips the conversion."""
        img = image if image.dtype == np.uint8 and image.flags.c_contiguous else np.ascontiguousarray(to_uint8(image))
        out = []
        for box in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            shape = self._predictor(img, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
            out.append(np.array([[p.x, p.y] for p in shape.parts()], np.float64))
        return out


class PtsFileDetector:
    """Landmarks from ``IMAGE.pts`` next to each image (300-W layout) instead of a detector.

    ``__call__(image, path)`` reads ``splitext(path)[0] + ".pts"``: one face, confidence from the
    fit plausibility alone (a human placed the points), box = the landmarks' bounding box. No file
    means no face. ``landmarks_3d`` as for :class:`DlibDetector`.
    """
    def __init__(self, landmarks_3d=None):
        self._scorer = _Scorer(landmarks_3d)

    @property
    def landmarks_3d(self) -> np.ndarray:
        return self._scorer.landmarks_3d

    def __call__(self, image, path: str | None = None) -> list[Detection]:
        if path is None:
            raise ValueError("path: the .pts detector needs the image's path to find IMAGE.pts")
        pts_path = os.path.splitext(os.fspath(path))[0] + ".pts"
        if not os.path.isfile(pts_path):
            return []
        pts, _ = read_pts(pts_path)
        box = np.concatenate([pts.min(0), pts.max(0)]).astype(np.float64)
        return [self._scorer.detection(box, pts, float("inf"), "pts")]
