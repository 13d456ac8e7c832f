"""Face tracking for video: detect once, then follow each face by its landmarks (as 3DDFA_V2 does).

Detection (dlib's HOG detector) costs tens to hundreds of milliseconds a frame; the 68-point shape
predictor in a known box costs ~2 ms. So a :class:`FaceTracker` detects only

* when nothing is tracked (every frame until a face is found),
* when a track was lost this frame, and
* every ``redetect_every`` frames (:data:`REDETECT_EVERY`, 60 = 2 s at 30 fps), to admit new faces;

and otherwise takes each face's landmark box from its previous frame's fit and runs the shape
predictor there. The box is the square dlib's detector would draw (:func:`pose_box`, calibrated on
dlib boxes against the landmark fit of the same faces, 35 frames of the synthetic clip): side
:data:`BOX_SIDE_MM` (139 mm) at the depth of the inner landmarks' centroid, centred on that
centroid's projection, shifted by ``0.125 sin(yaw)`` sides sideways and 0.014 sides down. It comes
from the 3D pose, not from the landmarks' 2D extent: under yaw the extent narrows, a narrower box
makes the predictor draw a smaller face, and the track shrank to nothing within ~40 frames.
Each frame's landmarks of all faces go through one batched :class:`~fml_taichi.recon.landmark_fit.LandmarkFitter`
call, in the frame's own camera, for pose, shape and expression.

**The fit of tracked points** (:meth:`FaceTracker._fit`) is made robust to how dlib errs, each
change measured on both clips of ``benchmarks/bench_video.py`` (``docs/video.md``):

* the jaw contour, dlib's least reliable points (0.05 inter-ocular distances off near frontal on the
  photo-textured clip, 0.12 beyond 30 degrees of yaw, eyes 0.02-0.03), weighs :data:`JAW_WEIGHT`;
* each inner point is weighted by how squarely its vertex faced the camera in the previous frame
  (:func:`facing_weight`): the far side of a turned face is where the predictor drifts;
* after :data:`IDENTITY_FRAMES` frames a track's face shape is fixed to the median of its fits so
  far (:func:`identity_fitter`): one identity per video, and no per-frame trade of shape for pose;
* optionally (``max_step_deg``), a fit whose head rotation jumps more than that from the last frame
  is rejected: the track holds its last fit (``max_held`` frames at most) and a detection runs.
  Off by default: on the photo clip it broke tracks at 45 degrees of yaw (found 277 of 300 frames).

``PER_FRAME_TRACKING`` restores the first settings (all points alike, a shape per frame).

**Landmark sources**: any object with ``__call__(image)`` (detections) and ``landmarks_in_boxes``;
dlib's is the default, MediaPipe's (:mod:`fml_taichi.data.mediapipe_landmarks`) runs with
:func:`tracker_defaults` ``("mediapipe")`` (:data:`MEDIAPIPE_TRACKING`).

**A track is lost** when its landmark fit degrades, i.e. the fit's mean residual in inter-ocular
distances exceeds ``max_fit_nme`` (:data:`MAX_FIT_NME`, 0.10: on the synthetic clip the fit of
dlib's points leaves 0.02-0.07, and a point set that is no face shape, far more; real faces were not
measured), or when its box
leaves the frame (less than ``min_inside`` of its area inside). Lost tracks end; a re-detection runs
at once.

**Identities**: each new face gets the next integer id. A detection matches a live track when their
boxes overlap by IoU >= ``match_iou``; a matched detection re-anchors its track (the track keeps its id
and takes the detection's landmarks and score: tracking alone drifts on turned heads, where the
predictor keeps drawing a plausible face, so a low fit residual cannot reveal the drift). Tracks the
detector misses (a head turned past its ~30 degree reach) are kept as long as their fit holds.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_FIT_NME", "JAW_WEIGHT", "IDENTITY_FRAMES", "PER_FRAME_TRACKING", "MEDIAPIPE_TRACKING",
           "MEDIAPIPE_JAW_WEIGHT", "tracker_defaults", "REDETECT_EVERY", "TrackerConfig",
           "TrackedFace", "FaceTracker", "landmark_box", "pose_box", "box_iou", "AnnotatedLandmarks", "inside_fraction",
           "facing_weight", "identity_fitter", "rotation_step_deg", "upright_landmarks"]

MAX_FIT_NME = 0.10
#: Weight of dlib's jaw contour in the tracked fit: on the photo-textured clip its points were off
#: by 0.05 inter-ocular distances near frontal (eyes 0.018) and 0.12 beyond 30 degrees of yaw.
JAW_WEIGHT = 0.3
IDENTITY_FRAMES = 30
REDETECT_EVERY = 60
BOX_SIDE = 1.01
BOX_RAISE = 0.04
BOX_SIDE_MM = 139.0
BOX_SHIFT_YAW = 0.125
BOX_SHIFT_DOWN = 0.014


@dataclass(frozen=True)
class TrackerConfig:
    """redetect_every: frames between detections that admit new faces (>= 1; 1 detects every frame).
    max_fit_nme: a track is lost above this landmark-fit residual (inter-ocular units).
    min_inside: a track is lost when less than this fraction of its box lies inside the frame.
    match_iou: a detection belongs to a track when their boxes overlap at least this much.
    max_faces: at most this many tracks (None: any).
    upright: run the shape predictor on a patch turned by the track's roll (:func:`upright_landmarks`).
    jaw_weight: weight of the 17 jaw-contour points in the landmark fit (the inner 51 have 1).
    facing_weights: weight each inner point by how squarely its model vertex faced the camera in the
        track's previous fit (:func:`facing_weight`): the far side of a turned face is where the
        predictor is least reliable.
    identity_frames: after this many frames of a track, its face shape is fixed to the median of the
        shapes fitted so far (:func:`identity_fitter`); later frames fit only pose and expression
        (0: every frame fits its own shape).
    max_step_deg: a track is lost when its head rotation changes by more than this between two frames
        (None: no limit), unless ``max_held`` > 0: then the track keeps its previous fit for up to
        that many frames in a row (a full detection runs in each, and re-anchors it when it finds the face)."""

    redetect_every: int = REDETECT_EVERY
    max_fit_nme: float = MAX_FIT_NME
    min_inside: float = 0.6
    match_iou: float = 0.3
    max_faces: int | None = None
    upright: bool = True
    jaw_weight: float = JAW_WEIGHT
    max_step_deg: float | None = None
    max_held: int = 0
    facing_weights: bool = True
    identity_frames: int = IDENTITY_FRAMES

    def __post_init__(self):
        if not isinstance(self.redetect_every, int) or self.redetect_every < 1:
            raise ValueError(f"redetect_every: expected an int >= 1, got {self.redetect_every!r}")
        if not self.max_fit_nme > 0 or not 0 < self.min_inside <= 1 or not 0 < self.match_iou <= 1:
            raise ValueError("max_fit_nme must be > 0; min_inside and match_iou in (0, 1]")
        if not 0 <= self.jaw_weight <= 1:
            raise ValueError(f"jaw_weight: expected a number in [0, 1], got {self.jaw_weight!r}")
        if not isinstance(self.identity_frames, int) or self.identity_frames < 0:
            raise ValueError(f"identity_frames: expected an int >= 0, got {self.identity_frames!r}")
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces: expected None or >= 1, got {self.max_faces!r}")


#: The tracker as first built (every point weighted alike, a shape per frame): kept for comparison.
PER_FRAME_TRACKING = {"jaw_weight": 1.0, "facing_weights": False, "identity_frames": 0}
#: Tracker settings for MediaPipe's points (:mod:`fml_taichi.data.mediapipe_landmarks`): it follows
#: roll itself (no upright patch), and its jaw contour is weighed :data:`MEDIAPIPE_JAW_WEIGHT` (of
#: 0.15 / 0.3 / 0.5 / 1, 0.3 read both benchmark clips best: median rotation error 2.61 / 2.80 degrees
#: on the photo / model clip, 2.72 / 3.06 at 0.5; ``docs/video.md``).
MEDIAPIPE_JAW_WEIGHT = 0.3
MEDIAPIPE_TRACKING = {"jaw_weight": MEDIAPIPE_JAW_WEIGHT, "upright": False}


def tracker_defaults(landmarks: str = "dlib") -> "TrackerConfig":
    """The default :class:`TrackerConfig` for a landmark source: ``"dlib"`` or ``"mediapipe"``."""
    if landmarks == "dlib":
        return TrackerConfig()
    if landmarks == "mediapipe":
        return TrackerConfig(**MEDIAPIPE_TRACKING)
    raise ValueError(f"landmarks: expected 'dlib' or 'mediapipe', got {landmarks!r}")


@dataclass
class TrackedFace:
    """One face in one frame.

    face_id: stable id. landmarks: [68, 2] the predictor's (or detector's) points. box: [4] the box
    they were found in. rotation [3] (Euler rx, ry, rz radians, R = Rz Ry Rx), translation [3] mm,
    shape [m_s], expression [m_e], fit_landmarks [68, 2], fit_nme: the landmark fit in the frame's
    camera. score: the detector's score when detected (or matched) this frame, else NaN.
    detected: this frame's landmarks came from a full detection.
    """

    face_id: int
    landmarks: np.ndarray
    box: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    fit_landmarks: np.ndarray
    fit_nme: float
    score: float = float("nan")
    detected: bool = False
    age: int = field(default=0)
    held: int = field(default=0)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """The dlib-style square box ``x0, y0, x1, y1`` around 68 landmarks (module docstring)."""
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm.min(0), lm.max(0)
    side = BOX_SIDE * float((hi - lo).sum()) / 2
    cx, cy = (lo + hi) / 2
    cy -= BOX_RAISE * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def pose_box(rotation: np.ndarray, translation: np.ndarray, centroid: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """The dlib-style box ``x0, y0, x1, y1`` of a fitted face (module docstring): Euler ``rotation`` [3],
    ``translation`` [3] mm, ``centroid`` [3] model-space centre of the inner landmarks, ``intrinsics`` [4]."""
    from .landmark_fit import euler_to_matrix_np

    r = euler_to_matrix_np(np.asarray(rotation, np.float64)[None])[0]
    p = r @ centroid + translation
    z = max(float(p[2]), 1e-6)
    k = intrinsics
    side = BOX_SIDE_MM * k[0] / z
    cx = k[0] * p[0] / z + k[2] + BOX_SHIFT_YAW * math.sin(float(rotation[1])) * side
    cy = k[1] * p[1] / z + k[3] + BOX_SHIFT_DOWN * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def upright_landmarks(landmarks_in_boxes, image: np.ndarray, box: np.ndarray, roll: float):
    """The shape predictor on a patch of ``image`` turned so that a face rolled by ``roll`` (radians,
    the Euler rz of the fit) stands upright; landmarks [68, 2] mapped back into ``image`` (or None).

    dlib's predictor starts from an upright mean shape in an axis-aligned box and follows a rolled
    face only part of the way: on the synthetic clip the roll of its points came out 0.72x the truth.
    """
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = box[2] - box[0]
    p = int(math.ceil(2 * side))
    c, s = math.cos(roll), math.sin(roll)  # patch = rot(roll) (image - centre) + p / 2, as getRotationMatrix2D
    m = np.array([[c, s, p / 2 - c * cx - s * cy], [-s, c, p / 2 + s * cx - c * cy]])
    patch = cv2.warpAffine(image, m, (p, p), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lm = landmarks_in_boxes(np.ascontiguousarray(patch), [np.array([p / 2 - side / 2, p / 2 - side / 2,
                                                                     p / 2 + side / 2, p / 2 + side / 2])])[0]
    if lm is None:
        return None
    back = np.asarray(lm, np.float64) - m[:, 2]
    return back @ m[:, :2]  # the inverse of a rotation is its transpose


#: :func:`facing_weight`: the cosine range over which an inner point's weight rises from its floor to 1.
FACING_COS = (0.2, 0.6)
FACING_FLOOR = 0.25


def facing_weight(fitter, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Weights [51] of the inner landmarks (17-67) for a face at Euler ``rotation`` [3], ``translation``
    [3] mm: from :data:`FACING_FLOOR` (vertex normal at or beyond ``FACING_COS[0]`` to the view ray)
    up to 1 (at ``FACING_COS[1]`` and more frontal), on the fitter's mean face."""
    from .landmark_fit import euler_to_matrix_np

    r = euler_to_matrix_np(np.asarray(rotation, np.float64)[None])[0]
    idx = fitter.fixed_local[17:]
    cam = fitter.mean[idx] @ r.T + translation
    n = fitter.normals[idx] @ r.T
    cos = -(n * cam).sum(1) / np.maximum(np.linalg.norm(cam, axis=1) * np.linalg.norm(n, axis=1), 1e-12)
    t = np.clip((cos - FACING_COS[0]) / (FACING_COS[1] - FACING_COS[0]), 0.0, 1.0)
    return FACING_FLOOR + (1 - FACING_FLOOR) * t * t * (3 - 2 * t)


def identity_fitter(fitter, shape: np.ndarray):
    """A copy of ``fitter`` (:class:`~fml_taichi.recon.landmark_fit.LandmarkFitter`) for one known
    face shape: its mean face moved by the shape coefficients ``shape`` [m_s], whose prior is made so
    tight that the fit leaves them at zero (the returned ``shape`` is then the change from ``shape``,
    ~0). Pose and expression are fitted as before, without the shape / pose trade-off of one frame."""
    import copy

    ms = fitter.m_shape
    s = np.asarray(shape, np.float64)
    out = copy.copy(fitter)
    out.mean = fitter.mean + np.einsum("ucm,m->uc", fitter.basis[:, :, :ms], s)
    out.mean_inner = out.mean[fitter.fixed_local[17:]]
    out.inner_pinv = np.linalg.pinv(np.concatenate([out.mean_inner, np.ones((len(out.mean_inner), 1))], 1))
    out.prior = fitter.prior.copy()
    out.prior[:ms] *= 1e8
    return out


def _concat_fits(fits: list):
    """One LandmarkFit from several batch fits (field by field)."""
    first = fits[0]
    return dataclasses.replace(first, **{f.name: np.concatenate([getattr(x, f.name) for x in fits])
                                         for f in dataclasses.fields(first)})


def rotation_step_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle (degrees) between two head rotations given as Euler angles [3] (radians)."""
    from .landmark_fit import euler_to_matrix_np

    r = euler_to_matrix_np(np.stack([np.asarray(a, np.float64), np.asarray(b, np.float64)]))
    c = (np.trace(r[0] @ r[1].T) - 1) / 2
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes ``x0, y0, x1, y1``."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Fraction of ``box``'s area inside a ``width`` x ``height`` frame."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    if area <= 0:
        return 0.0
    w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return w * h / area


class FaceTracker:
    """Detect-then-track over a sequence of frames (module docstring).

    Args:
        detect: ``(image) -> list`` of detections with ``.box`` [4], ``.landmarks`` [68, 2], ``.score``
            (e.g. :meth:`fml_taichi.recon.pipeline.FacePipeline.detect`), most confident first.
        landmarks_in_boxes: ``(image, boxes) -> list of [68, 2]`` (None: nothing there) (e.g.
            :meth:`fml_taichi.data.detect.DlibDetector.landmarks_in_boxes`).
        fitter: a :class:`~fml_taichi.recon.landmark_fit.LandmarkFitter`.
        intrinsics: [4] ``[fx, fy, cx, cy]`` of the frames' camera.
        config: :class:`TrackerConfig`.

    Call it once per frame (uint8 RGB [H, W, 3]); it returns the frame's :class:`TrackedFace` list.
    ``n_detections`` counts the full detections run so far.
    """

    def __init__(self, detect, landmarks_in_boxes, fitter, intrinsics, config: TrackerConfig | None = None):
        self.detect, self.landmarks_in_boxes, self.fitter = detect, landmarks_in_boxes, fitter
        self.intrinsics = np.asarray(intrinsics, np.float64).reshape(4)
        self.config = config or TrackerConfig()
        self.tracks: list[TrackedFace] = []
        self.next_id = 0
        self.frame_index = -1
        self.last_detection = None
        self.n_detections = 0
        self.centroid = np.asarray(fitter.mean_inner, np.float64).mean(0)
        self._shapes: dict[int, list] = {}
        self._identities: dict[int, tuple] = {}

    def box(self, face: TrackedFace) -> np.ndarray:
        """Where the shape predictor looks for ``face`` in the next frame."""
        return pose_box(face.rotation, face.translation, self.centroid, self.intrinsics)

    def _fit(self, landmarks: list[np.ndarray], previous: list | None = None):
        """The landmark fit of a batch; ``previous``: each face's track of the last frame (None: new)."""
        fixed = [self._identities.get(tr.face_id) if tr is not None else None for tr in (previous or [])]
        if any(f is not None for f in fixed):
            fits = []
            for i, lm in enumerate(landmarks):
                fitter = self.fitter if fixed[i] is None else fixed[i][1]
                fits.append(self._fit_with(fitter, [lm], [previous[i]]))
                if fixed[i] is not None:
                    fits[-1].shape = fits[-1].shape + fixed[i][0]
            return _concat_fits(fits)
        return self._fit_with(self.fitter, landmarks, previous)

    def refit(self, face: TrackedFace, landmarks: np.ndarray):
        """The tracker's fit of other 68 points ``landmarks`` [68, 2] of ``face`` (this frame's track):
        its fixed identity and facing weights, as its own points were fitted. Returns the LandmarkFit."""
        return self._fit([np.asarray(landmarks, np.float64)], [face])

    def _remember_shape(self, face: TrackedFace) -> None:
        """Collect a track's fitted shapes until ``identity_frames``, then fix its identity."""
        n = self.config.identity_frames
        if n <= 0 or face.face_id in self._identities:
            return
        shapes = self._shapes.setdefault(face.face_id, [])
        shapes.append(face.shape)
        if len(shapes) >= n:
            s = np.median(np.stack(shapes), 0)
            self._identities[face.face_id] = (s, identity_fitter(self.fitter, s))
            del self._shapes[face.face_id]

    def _fit_with(self, fitter, landmarks, previous):
        cfg = self.config
        if cfg.jaw_weight == 1.0 and not (cfg.facing_weights and previous):
            return fitter(np.stack(landmarks), self.intrinsics)
        w = np.ones((len(landmarks), 68))
        w[:, :17] = cfg.jaw_weight
        if cfg.facing_weights and previous:
            for i, tr in enumerate(previous):
                if tr is not None:
                    w[i, 17:] *= facing_weight(self.fitter, tr.rotation, tr.translation)
        return fitter(np.stack(landmarks), self.intrinsics, w)

    def _face(self, face_id, lm, box, fit, i, score=float("nan"), detected=False, age=0) -> TrackedFace:
        return TrackedFace(face_id, np.asarray(lm, np.float64), np.asarray(box, np.float64), fit.rotation[i].copy(),
                           fit.translation[i].copy(), fit.shape[i].copy(), fit.expression[i].copy(),
                           fit.landmarks_2d[i].copy(), float(fit.nme[i]), score, detected, age)

    def _follow(self, frame) -> tuple[list[TrackedFace], bool]:
        """Shape predictor in each live track's box; returns (kept tracks, whether any was lost)."""
        h, w = frame.shape[:2]
        cfg = self.config
        boxes, keep = [], []
        lost = False
        for tr in self.tracks:
            box = self.box(tr)
            if inside_fraction(box, w, h) < cfg.min_inside:
                lost = True
                continue
            boxes.append(box)
            keep.append(tr)
        if not keep:
            return [], lost
        if cfg.upright:
            lms = [upright_landmarks(self.landmarks_in_boxes, frame, b, float(t.rotation[2]))
                   for t, b in zip(keep, boxes)]
        else:
            lms = self.landmarks_in_boxes(frame, boxes)
        # None: the landmark source has nothing in that box
        found = [(tr, box, lm) for tr, box, lm in zip(keep, boxes, lms) if lm is not None]
        lost = lost or len(found) < len(keep)
        if not found:
            return [], lost
        fit = self._fit([f[2] for f in found], [f[0] for f in found])
        out = []
        for i, (tr, box, lm) in enumerate(found):
            if not fit.nme[i] <= cfg.max_fit_nme:
                lost = True
                continue
            if cfg.max_step_deg is not None and rotation_step_deg(tr.rotation, fit.rotation[i]) > cfg.max_step_deg:
                lost = True  # a detection runs this frame
                if tr.held < cfg.max_held:
                    out.append(dataclasses.replace(tr, age=tr.age + 1, held=tr.held + 1, detected=False,
                                                   score=float("nan")))
                continue
            out.append(self._face(tr.face_id, lm, box, fit, i, age=tr.age + 1))
        return out, lost

    def _admit(self, frame, faces: list[TrackedFace]) -> list[TrackedFace]:
        """Run the detector; matched detections refresh a track's score, new ones start tracks."""
        self.n_detections += 1
        self.last_detection = self.frame_index
        dets = list(self.detect(frame))
        todo, taken = [], set()  # (track index or None, landmarks, box, score)
        for d in dets:
            box = np.asarray(d.box, np.float64)
            ious = [box_iou(box, self.box(f)) if j not in taken else 0.0 for j, f in enumerate(faces)]
            j = int(np.argmax(ious)) if ious else -1
            if j >= 0 and ious[j] >= self.config.match_iou:
                taken.add(j)
            elif any(box_iou(box, t[2]) >= self.config.match_iou for t in todo):
                continue
            else:
                j = None
            todo.append((j, np.asarray(d.landmarks, np.float64), box, float(d.score)))
        if not todo:
            return faces
        fit = self._fit([t[1] for t in todo], [faces[t[0]] if t[0] is not None else None for t in todo])
        for i, (j, lm, box, score) in enumerate(todo):
            if not fit.nme[i] <= self.config.max_fit_nme:
                continue
            if j is not None:
                faces[j] = self._face(faces[j].face_id, lm, box, fit, i, score, True, faces[j].age)
                continue
            if self.config.max_faces is not None and len(faces) >= self.config.max_faces:
                continue
            faces.append(self._face(self.next_id, lm, box, fit, i, score, True))
            self.next_id += 1
        return faces

    def __call__(self, frame: np.ndarray) -> list[TrackedFace]:
        self.frame_index += 1
        faces, lost = self._follow(frame)
        due = self.last_detection is None or self.frame_index - self.last_detection >= self.config.redetect_every
        if not faces or lost or due:
            faces = self._admit(frame, faces)
        self.tracks = faces
        for f in faces:
            self._remember_shape(f)
        live = {f.face_id for f in faces}
        for d in (self._shapes, self._identities):
            for i in [i for i in d if i not in live]:
                del d[i]
        return list(faces)


class AnnotatedLandmarks:
    """Per-frame landmarks from a file instead of dlib: one face, ``landmarks`` [T, 68, 2] (x, y px)
    and optional ``valid`` [T] bool in an ``.npz`` (e.g. a video's annotation, or the synthetic
    detector of :mod:`fml_taichi.data.synthetic_clip`). Used by the tracker both as the detector
    (box = the landmarks' :func:`landmark_box`, score ``inf``) and as the shape predictor (the
    frame's landmarks whatever the box): the tracking, fit and smoothing then run as on dlib's points.
    """

    def __init__(self, path):
        z = np.load(path)
        if "landmarks" not in z.files:
            raise ValueError(f"landmark file {path!r}: expected an array 'landmarks' [T, 68, 2]")
        self.landmarks = np.asarray(z["landmarks"], np.float64)
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (68, 2) or not np.isfinite(self.landmarks).all():
            raise ValueError(f"landmark file {path!r}: 'landmarks' must be finite [T, 68, 2], "
                             f"got {self.landmarks.shape}")
        self.valid = np.asarray(z["valid"], bool) if "valid" in z.files else np.ones(len(self.landmarks), bool)

    def _have(self, index: int) -> bool:
        return 0 <= index < len(self.landmarks) and bool(self.valid[index])

    def detect(self, index: int, image=None) -> list:
        if not self._have(index):
            return []
        lm = self.landmarks[index]
        return [_Annotated(landmark_box(lm), lm, float("inf"))]

    def __call__(self, index: int, image, boxes) -> list[np.ndarray]:
        if not self._have(index):
            return [None for _ in boxes]
        return [self.landmarks[index] for _ in boxes]


@dataclass
class _Annotated:
    box: np.ndarray
    landmarks: np.ndarray
    score: float
