"""Single-pass, threaded reconstruction of video files, cameras and streams, with tracking.

``reconstruct_stream(pipe, source, out_dir, name)`` reads ``source`` (a video file, a camera index
such as ``0``, any URL OpenCV can open, or a capture-like object with ``read()``) once:

* a **reader thread** decodes frames (``every``: keep every N-th; files skip the others without
  decoding them) into a bounded queue;
* the **main thread** tracks the faces (:class:`~fml_taichi.recon.tracking.FaceTracker`: dlib's shape
  predictor in boxes from the previous landmarks, full detection only when needed; or another
  landmark source, ``landmark_detector``, e.g. MediaPipe's, which then runs in the reader thread;
  with ``anchor_detector`` the poses are corrected by a second source every few frames,
  :mod:`fml_taichi.recon.pose_anchor`), fits pose /
  shape / expression to each face's landmarks in the frame's own camera
  (:class:`~fml_taichi.recon.landmark_fit.LandmarkFitter`), runs the encoder on the face's crop
  every ``encoder_every`` frames of a track (reflectance, light and correctives; 0 = never), and
  smooths each track (:mod:`fml_taichi.recon.window_smoothing`: local quadratic over ``back`` past and
  ``ahead`` future frames; a frame leaves the main thread once its ``ahead`` successors are in);
* a **writer thread** draws the overlay and encodes the overlay video (and shows it in a window when
  asked: ``q`` or Esc stops).

**Overlay** (``overlay=``): ``"wireframe"`` (default: the fitted base-model mesh, every
:data:`WIREFRAME_STRIDE`-th edge of its camera-facing part, projected with the smoothed pose, plus
the 68 fitted landmarks; ~1 ms a frame), ``"mesh"`` (the same mesh shaded with
:func:`fml_taichi.ops.render.render`, ~10-30 ms a frame), or ``"none"`` (the frames as read).

**Camera**: pinhole ``[f, f, (W-1)/2, (H-1)/2]`` with ``f = focal_px`` (default: the frame width,
a ~53 degree horizontal field of view, typical of webcams; pass the real one when known).

**Outputs** (``OUT/NAME.*``), one row per (frame, face): ``params.npz`` (keys in :func:`write_outputs`),
``params.csv`` (frame, time_s, face_id, rx/ry/rz_deg (smoothed), tx/ty/tz_mm (smoothed),
detector_score (empty unless detected that frame; ``inf`` for annotated or MediaPipe landmarks), fit_nme),
``overlay.mp4`` and ``track.png``
(head angles against time, raw and smoothed, per face id). Files are written to temporary names
and renamed at the end; a failure leaves none of them.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import csv
import io
import math
import os
import queue
import sys
import threading
import time

import cv2
import numpy as np
import torch

from ..common.atomic import atomic_path
from ..data.crop import crop_box_from_landmarks, crop_image
from ..data.video import VideoWriter
from ..io.plots import plot_curves
from ..model import FaceParams
from .landmark_fit import LandmarkFitConfig, LandmarkFitter, euler_to_matrix_np
from .outputs import OutputSet
from .pose_anchor import ANCHOR_EVERY, PoseAnchor
from .tracking import FaceTracker, TrackerConfig, tracker_defaults
from .window_smoothing import DEFAULT_HALF_WINDOW, smooth_window

__all__ = ["CAMERA_LOOKAHEAD", "WIREFRAME_STRIDE", "OVERLAYS", "DETECT_MAX_SIDE", "open_source", "reconstruct_stream",
           "CSV_COLUMNS", "TRACK_FIT", "FAST_TRACK_FIT"]

CAMERA_LOOKAHEAD = 2
WIREFRAME_STRIDE = 8
OVERLAYS = ("wireframe", "mesh", "none")
#: Frames are shrunk to this longer side for full detections (dlib's HOG then finds faces from ~80 px
#: of a 640 px frame; detection time falls ~4x against the full frame with upsampling).
DETECT_MAX_SIDE = 320
CSV_COLUMNS = ("frame", "time_s", "face_id", "rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm",
               "detector_score", "fit_nme")
_QUEUE = 8
SWITCH_INTERVAL_S = 0.0005


# ---- sources ------------------------------------------------------------------------------------------


def open_source(source):
    """``(capture, description, live)`` for a file path, a camera index (int or digits), a URL, or a
    capture-like object (anything with ``read() -> (ok, bgr)``; ``get``/``release`` optional).

    Raises FileNotFoundError / ValueError naming the source when it cannot be opened.
    """
    if hasattr(source, "read"):
        return source, getattr(source, "name", "capture"), True
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"cannot open camera {int(source)} (no such device, or it is busy)")
        return cap, f"camera {int(source)}", True
    text = os.fspath(source)
    if "://" in text:
        cap = cv2.VideoCapture(text)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"cannot open stream {text!r} (unreachable, or a format OpenCV's FFmpeg lacks)")
        return cap, text, True
    if not os.path.exists(text):
        raise FileNotFoundError(f"video file not found: {text!r}")
    if os.path.isdir(text) or os.path.getsize(text) == 0:
        raise ValueError(f"not a video: {text!r} is a directory or empty")
    cap = cv2.VideoCapture(text)
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"cannot decode video {text!r}: not a video, truncated / corrupt, or a codec OpenCV's "
                         "FFmpeg lacks")
    return cap, text, False


def _cap_get(cap, prop, default=0.0) -> float:
    try:
        return float(cap.get(prop) or default)
    except Exception:  # capture-like objects without get()
        return default


class _Reader(threading.Thread):
    """Decodes frames into ``out`` as ``(index, time_s, rgb uint8, grey uint8, points)``; ``None`` ends
    the stream. ``points``: ``annotate(rgb)`` when given (a landmark source run in this thread), else None.
    dlib's detector and shape predictor read grey levels: converting here keeps it off the main thread."""

    def __init__(self, cap, live: bool, every: int, max_frames, fps: float, stop: threading.Event, annotate=None):
        super().__init__(daemon=True)
        self.cap, self.live, self.every, self.max_frames, self.fps, self.stop = cap, live, every, max_frames, fps, stop
        self.annotate = annotate  # (rgb) -> landmarks of the frame's faces, computed here beside the main thread
        self.out: queue.Queue = queue.Queue(_QUEUE)
        self.n_read, self.n_seen, self.error = 0, 0, None
        self.t0 = time.monotonic()

    def _skip(self) -> bool:
        grab = getattr(self.cap, "grab", None)
        if grab is not None and not self.live:
            return bool(grab())
        return bool(self.cap.read()[0])

    def run(self):
        try:
            i = 0
            while not self.stop.is_set() and (self.max_frames is None or i < self.max_frames):
                if i % self.every:
                    if not self._skip():
                        break
                    i += 1
                    self.n_seen = i
                    continue
                ok, bgr = self.cap.read()
                if not ok or bgr is None:
                    break
                t = time.monotonic() - self.t0 if self.live else i / self.fps
                bgr = np.ascontiguousarray(bgr)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self.n_read += 1
                points = self.annotate(rgb) if self.annotate is not None else None
                self._put((i, t, rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), points))
                i += 1
            self.n_seen = i
        except Exception as e:  # reported by the main thread
            self.error = e
        finally:
            self._put(None)

    def _put(self, item):
        while True:
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    return


# ---- overlay ------------------------------------------------------------------------------------------


class _Overlay:
    """Draws faces onto frames (module docstring: wireframe / mesh / none)."""

    def __init__(self, face_model, kind: str, intrinsics: np.ndarray):
        self.kind, self.k = kind, intrinsics
        fm = face_model
        self.mean = fm.mean_geometry.detach().double().numpy()  # [N, 3]
        basis = torch.cat([fm.shape_basis, fm.expression_basis], 2).detach().double().numpy()  # [N, 3, M]
        self.basis = basis.reshape(-1, basis.shape[2])
        self.m_shape = fm.m_shape
        tri = fm.triangles.long().numpy()
        self.triangles = fm.triangles
        edges = np.unique(np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), 1), axis=0)
        from ..model.mesh import vertex_normals

        normals = np.asarray(vertex_normals(self.mean, tri), np.float64)
        # The wireframe needs only its edges' end points: a small basis keeps it ~0.3 ms a frame.
        used, local = np.unique(edges[::WIREFRAME_STRIDE], return_inverse=True)
        self.edges = local.reshape(-1, 2)
        self.wire_mean, self.wire_normals = self.mean[used], normals[used]
        self.wire_basis = basis[used].reshape(-1, basis.shape[2])

    def vertices(self, shape, expression) -> np.ndarray:
        coef = np.concatenate([shape, expression])
        return self.mean + (self.basis @ coef).reshape(-1, 3)

    def prepare(self, rgb: np.ndarray, faces: list[dict]):
        """What must run on the main thread (Taichi launches only from the thread that started it):
        the shaded mesh layer for ``"mesh"``; None otherwise."""
        if self.kind != "mesh" or not faces:
            return None
        return self._mesh_layer(rgb.shape[0], rgb.shape[1], faces)

    def draw(self, rgb: np.ndarray, faces: list[dict], prepared=None) -> np.ndarray:
        if self.kind == "none" or not faces:
            return rgb
        img = rgb.copy()
        if prepared is not None:
            layer, mask = prepared
            img[mask] = (0.35 * img[mask] + 0.65 * layer[mask]).astype(np.uint8)
        for f in faces:
            if self.kind == "wireframe":
                r = euler_to_matrix_np(f["rotation"][None])[0]
                coef = np.concatenate([f["shape"], f["expression"]])
                cam = (self.wire_mean + (self.wire_basis @ coef).reshape(-1, 3)) @ r.T + f["translation"]
                z = np.maximum(cam[:, 2], 1e-6)
                uv = np.stack([self.k[0] * cam[:, 0] / z + self.k[2], self.k[1] * cam[:, 1] / z + self.k[3]], 1)
                facing = ((self.wire_normals @ r.T) * cam).sum(1) < 0
                e = self.edges[facing[self.edges[:, 0]] & facing[self.edges[:, 1]]]
                lines = np.round(uv[e] * 4).astype(np.int32)  # 2 fractional bits
                cv2.polylines(img, list(lines), False, (90, 200, 255), 1, cv2.LINE_8, shift=2)
            for x, y in np.round(f["fit_landmarks"]).astype(int):
                cv2.circle(img, (int(x), int(y)), 2, (255, 60, 60), -1)
            x0, y0 = np.round(f["box"][:2]).astype(int)
            cv2.putText(img, str(f["face_id"]), (int(x0), max(12, int(y0) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 0), 1, cv2.LINE_AA)
        return img

    def _mesh_layer(self, h: int, w: int, faces: list[dict]):
        from ..ops.render import render

        v = torch.as_tensor(np.stack([self.vertices(f["shape"], f["expression"]) for f in faces]), dtype=torch.float32)
        rot = torch.as_tensor(np.stack([f["rotation"] for f in faces]), dtype=torch.float32)
        trans = torch.as_tensor(np.stack([f["translation"] for f in faces]), dtype=torch.float32)
        light = torch.zeros(len(faces), 9, 3)
        light[:, 0] = 2.0  # ambient
        light[:, 3] = -1.2  # from the camera (SH band 1, z)
        ren = render(v.contiguous(), self.triangles, torch.as_tensor(self.k, dtype=torch.float32), h, w,
                     rotation=rot, translation=trans, reflectance=torch.full_like(v, 0.6), light=light,
                     background=None)
        from ..ops.render import draw

        shaded = draw(ren.raster, self.triangles, ren.mesh.colours, (0.0, 0.0, 0.0))
        return (shaded.max(0).values.numpy() * 255).astype(np.uint8), ren.mask.any(0).numpy()


class _Writer(threading.Thread):
    """Draws and encodes frames from ``inbox`` (``(index, rgb, faces)``; ``None`` ends); optional window."""

    def __init__(self, writer, overlay: _Overlay, show: bool, title: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.writer, self.overlay, self.show, self.title, self.stop = writer, overlay, show, title, stop
        self.inbox: queue.Queue = queue.Queue(_QUEUE)
        self.error = None

    def run(self):
        try:
            while True:
                item = self.inbox.get()
                if item is None:
                    break
                _, rgb, faces, prepared = item
                img = self.overlay.draw(rgb, faces, prepared)
                if self.writer is not None:
                    self.writer.write(img)
                if self.show:
                    cv2.imshow(self.title, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        self.stop.set()
        except Exception as e:
            self.error = e
            self.stop.set()
        finally:
            if self.show:
                cv2.destroyAllWindows()


# ---- smoothing of tracks ------------------------------------------------------------------------------


class _TrackHistory:
    """Per face id, the recent per-frame vectors (rotation 3, translation 3, expression, shape)."""

    def __init__(self, back: int, ahead: int):
        self.back, self.ahead = back, ahead
        self.samples: dict[int, collections.deque] = {}

    @staticmethod
    def vector(face) -> np.ndarray:
        return np.concatenate([face.rotation, face.translation, face.expression, face.shape])

    def add(self, index: int, face) -> None:
        d = self.samples.setdefault(face.face_id, collections.deque(maxlen=self.back + self.ahead + 1))
        v = self.vector(face)
        if d:  # Euler angles must not jump by 2 pi between samples
            v[:3] = d[-1][1][:3] + (v[:3] - d[-1][1][:3] + math.pi) % (2 * math.pi) - math.pi
        d.append((index, v))

    def smoothed(self, index: int, face_id: int) -> np.ndarray:
        d = self.samples[face_id]
        idx = [s[0] for s in d]
        at = idx.index(index)
        lo = max(0, at - self.back)
        return smooth_window(np.stack([s[1] for s in list(d)[lo:at + self.ahead + 1]]), at - lo)

    def prune(self, oldest_needed: int) -> None:
        """Forget ids whose last sample is older than every frame still to be emitted."""
        for i in [i for i, d in self.samples.items() if d[-1][0] < oldest_needed]:
            del self.samples[i]


# ---- the run ------------------------------------------------------------------------------------------


def _safe_name(description: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in description)
    return keep.strip("_") or "stream"


class _Encoder:
    """The encoder on a face's crop every ``every`` frames of its track; the latest result per id."""

    def __init__(self, pipe, every: int):
        self.pipe, self.every = pipe, every
        self.latest: dict[int, tuple[int, dict]] = {}
        self.seconds = 0.0

    def __call__(self, index: int, rgb: np.ndarray, faces) -> None:
        if self.every <= 0:
            return
        due = [f for f in faces if f.face_id not in self.latest or f.age % self.every == 0]
        if not due:
            return
        t0 = time.perf_counter()
        img = rgb.astype(np.float32) / 255.0
        if self._needs_start():
            params = self._anchored(img, due)
        else:
            crops = np.stack([crop_image(img, crop_box_from_landmarks(f.landmarks, self.pipe.landmarks_3d),
                                         self.pipe.size) for f in due])
            params, _, _ = self.pipe.runner(torch.from_numpy(crops))
        for i, f in enumerate(due):
            self.latest[f.face_id] = (index, {n: getattr(params, n)[i].detach().numpy() for n in FaceParams.names()})
        self.seconds += time.perf_counter() - t0


    def _needs_start(self) -> bool:
        """A checkpoint whose encoder reads the landmark start or whose reflectance is fitted runs the
        photo pipeline's landmark path on the tracked points (its encoder cannot run on crops alone)."""
        pipe = self.pipe
        return bool(getattr(pipe, "encoder_takes_start", False)) or pipe.reconstructor.reflectance_prior is not None

    def _anchored(self, img: np.ndarray, faces) -> FaceParams:
        from ..data.detect import Detection

        dets = [Detection(box=np.r_[f.landmarks.min(0), f.landmarks.max(0)].astype(np.float64),
                          landmarks=np.asarray(f.landmarks, np.float32), score=float(f.score), fit_error=0.0,
                          confidence=1.0, source="track") for f in faces]
        boxes, crops = zip(*(self.pipe.crop(img, d) for d in dets))
        params, _ = self.pipe.reconstruct_landmarks(img, dets, list(boxes), np.stack(crops))
        return params


def reconstruct_stream(pipe, source, out_dir: str, name: str | None = None, *, every: int = 1,
                       max_frames: int | None = None, back: int = DEFAULT_HALF_WINDOW, ahead: int | None = None,
                       tracker_config: TrackerConfig | None = None, overlay: str = "wireframe",
                       encoder_every: int = 10, focal_px: float | None = None, show: bool | None = None,
                       detect_max_side: int = DETECT_MAX_SIDE, landmark_source=None,
                       fit_config: LandmarkFitConfig | None = None, landmark_detector=None,
                       landmark_threaded: bool = True, anchor_detector=None, anchor_every: int = ANCHOR_EVERY) -> dict:
    """Reconstruct every face of a video, camera or stream in one pass (module docstring).

    Args:
        pipe: a :class:`~fml_taichi.recon.pipeline.FacePipeline` (its detector, face model, encoder).
        source: see :func:`open_source`. name: output base name (default: from the source).
        every: keep every N-th frame. max_frames: stop after this many source frames.
        back, ahead: smoothing window (frames of the kept sequence); ``ahead`` default: ``back`` for
            files, :data:`CAMERA_LOOKAHEAD` for live sources; ``back = ahead = 0`` turns smoothing off.
        tracker_config: :class:`~fml_taichi.recon.tracking.TrackerConfig`. overlay: one of :data:`OVERLAYS`.
        encoder_every: run the encoder every N frames of a track (0: never).
        focal_px: the camera's focal length (default: the frame width).
        show: live window (default: for live sources when ``$DISPLAY`` is set; never without it).
        detect_max_side: frames are shrunk to this for full detections.
        landmark_source: optional ``(frame_index, image, boxes) -> list of [68, 2]`` replacing dlib's
            shape predictor (and ``(frame_index, image) -> detections`` via ``.detect``): for measuring
            the chain with synthetic landmarks.
        fit_config: the per-frame landmark fit (default :data:`TRACK_FIT`; :data:`FAST_TRACK_FIT` is faster).
        landmark_detector: detector + landmarks in boxes for tracking instead of ``pipe.detector``
            (e.g. :class:`~fml_taichi.data.mediapipe_landmarks.MediaPipeDetector`); one with
            ``handles_roll`` gets no upright patches, one with ``wants_colour`` the RGB frames.
        landmark_threaded: a ``landmark_detector`` with ``follow`` (MediaPipe) runs in the decoding
            thread, following each face in crops around its own previous points, beside the main
            thread's fit (False: in the main thread, in the boxes of the tracker's 3D fit).
        anchor_detector: a second landmark source with ``follow`` (MediaPipe) run every
            ``anchor_every``-th frame in the decoding thread; its points correct the tracked poses
            (:class:`~fml_taichi.recon.pose_anchor.PoseAnchor`). Not with ``landmark_detector``.

    Returns a summary dict (frames, frames_with_face, face_ids, detections, seconds, cpu_seconds (the
    process's CPU time over the pass, all threads), fps, outputs, ...).
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every: expected an int >= 1, got {every!r}")
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay: expected one of {OVERLAYS}, got {overlay!r}")
    if back < 0 or (ahead is not None and ahead < 0):
        raise ValueError(f"back, ahead: expected >= 0, got {back}, {ahead}")
    if anchor_detector is not None and (landmark_detector is not None or landmark_source is not None):
        raise ValueError("anchor_detector corrects the default landmark source: not with landmark_detector / landmark_source")
    if not isinstance(anchor_every, int) or anchor_every < 1:
        raise ValueError(f"anchor_every: expected an int >= 1, got {anchor_every!r}")
    cap, description, live = open_source(source)
    switch = sys.getswitchinterval()
    # The main thread's many short C calls release the GIL; with the default 5 ms switch interval
    # each one can wait that long for the decoder / writer threads to hand it back.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return _run(pipe, cap, description, live, out_dir, name, every, max_frames, back, ahead, tracker_config,
                    overlay, encoder_every, focal_px, show, detect_max_side, landmark_source, fit_config,
                    landmark_detector, landmark_threaded, anchor_detector, anchor_every)
    finally:
        sys.setswitchinterval(switch)
        release = getattr(cap, "release", None)
        if release is not None:
            release()


def _run(pipe, cap, description, live, out_dir, name, every, max_frames, back, ahead, tracker_config, overlay,
         encoder_every, focal_px, show, detect_max_side, landmark_source, fit_config=None,
         landmark_detector=None, landmark_threaded=True, anchor_detector=None, anchor_every=ANCHOR_EVERY) -> dict:
    fps = _cap_get(cap, cv2.CAP_PROP_FPS, 0.0)
    fps = fps if 1.0 <= fps <= 1000.0 else 30.0
    declared = int(_cap_get(cap, cv2.CAP_PROP_FRAME_COUNT, 0))
    if ahead is None:
        ahead = CAMERA_LOOKAHEAD if live else back
    ahead = min(ahead, back) if back else ahead
    stop = threading.Event()
    threaded = (landmark_source is None and landmark_detector is not None and landmark_threaded
                and hasattr(landmark_detector, "follow"))
    if threaded:
        landmark_source = _FrameLandmarks()
        tracker_config = tracker_config or tracker_defaults(getattr(landmark_detector, "source", "dlib"))
    anchor = PoseAnchor() if anchor_detector is not None else None
    annotate = (landmark_detector.follow if threaded
                else _EveryNth(anchor_detector.follow, anchor_every) if anchor is not None else None)
    reader = _Reader(cap, live, every, max_frames, fps, stop, annotate)
    reader.start()
    first = reader.out.get()
    if first is None:
        reader.join()
        if reader.error is not None:
            raise ValueError(f"cannot read {description!r}: {reader.error}")
        raise ValueError(f"cannot decode video {description!r}: no frame could be decoded")
    h, w = first[2].shape[:2]
    f = float(focal_px) if focal_px else float(w)
    k = np.array([f, f, (w - 1) / 2, (h - 1) / 2])
    tracker = _make_tracker(pipe, k, tracker_config, detect_max_side, landmark_source, fit_config, landmark_detector)
    colour = landmark_source is None and getattr(landmark_detector or pipe.detector, "wants_colour", False)
    encoder = _Encoder(pipe, encoder_every)
    history = _TrackHistory(back, ahead)
    base = os.path.join(out_dir, *(name or _safe_name(description)).split("/"))
    display = bool(os.environ.get("DISPLAY"))
    show = display and (live if show is None else bool(show))
    rows: list[dict] = []
    with OutputSet() as outputs:
        outputs.add(base + ".overlay.mp4")
        video = VideoWriter(base + ".overlay.mp4", fps / every, (w, h))
        writer = _Writer(video, _Overlay(pipe.face_model, overlay, k), show, description, stop)
        writer.start()
        pending: collections.deque = collections.deque()
        t_start, cpu_start = time.perf_counter(), time.process_time()
        n_frames = n_with_face = 0
        item = first
        interrupted = False
        try:
            while item is not None:
                index, t_s, rgb, grey, points = item
                if threaded:
                    landmark_source.faces = points
                faces = tracker(rgb if colour else grey) if landmark_source is None else tracker(grey, index)
                if anchor is not None:
                    faces = anchor(faces, points, tracker.refit)
                encoder(index, rgb, faces)
                for fc in faces:
                    history.add(index, fc)
                pending.append((index, t_s, rgb, faces))
                history.prune(pending[0][0])
                n_frames += 1
                n_with_face += bool(faces)
                while len(pending) > ahead:
                    _emit(pending.popleft(), history, encoder, rows, writer)
                if writer.error is not None or stop.is_set():
                    interrupted = True
                    break
                item = _next(reader)
        except KeyboardInterrupt:  # a live source ends with Ctrl-C: keep what was seen
            if not live:
                raise
            interrupted = True
        finally:
            stop.set()
        while pending:
            _emit(pending.popleft(), history, encoder, rows, writer)
        writer.inbox.put(None)
        writer.join()
        seconds = time.perf_counter() - t_start
        cpu_seconds = time.process_time() - cpu_start  # every thread of the process
        reader.join(timeout=5)
        if writer.error is not None:
            video.abort()
            raise OSError(f"cannot write {base + '.overlay.mp4'!r}: {writer.error}")
        if not rows:
            video.abort()
            from .pipeline import NoFaceFound

            raise NoFaceFound(f"no face found in any frame of {description!r}")
        video.close()
        arrays = _arrays(rows, fps, (w, h), k, every, back, ahead)
        outputs.add(base + ".params.npz", base + ".params.csv", base + ".track.png")
        with atomic_path(base + ".params.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        _write_csv(base + ".params.csv", arrays)
        _plot(base + ".track.png", arrays)
    truncated = (not live and max_frames is None and not interrupted and declared > 0 and reader.n_seen < declared)
    det_s = tracker.detection_seconds
    return {"source": description, "frames": n_frames, "frames_with_face": n_with_face,
            "face_ids": sorted({int(r["face_id"]) for r in rows}), "detections": tracker.n_detections,
            "seconds": seconds, "cpu_seconds": cpu_seconds, "detection_seconds": det_s,
            "encoder_seconds": encoder.seconds,
            "fps_end_to_end": n_frames / seconds if seconds > 0 else float("inf"),
            "fps_without_detection": n_frames / max(seconds - det_s, 1e-9), "video_fps": fps,
            "truncated": bool(truncated), "outputs": outputs.paths,
            "anchor_updates": anchor.n_updates if anchor is not None else 0}


def _next(reader: _Reader):
    """The reader's next item; None once it has stopped (also when a stop dropped its end marker)."""
    while True:
        try:
            return reader.out.get(timeout=0.2)
        except queue.Empty:
            if not reader.is_alive():
                return None


class _EveryNth:
    """``fn(x)`` on the 1st, (n+1)-th, ... call, None on the others."""

    def __init__(self, fn, n: int):
        self.fn, self.n, self.calls = fn, n, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x) if (self.calls - 1) % self.n == 0 else None


class _FrameLandmarks:
    """The current frame's faces (``faces``: [68, 2] arrays, set per frame) as a tracker's landmark
    source: each box gets the face whose points' centre lies nearest its own, within half its side."""

    faces: list = []

    def detect(self, index, image=None) -> list:
        from .tracking import landmark_box

        return [_Found(landmark_box(f), f, float("inf")) for f in self.faces]

    def __call__(self, index, image, boxes) -> list:
        out = []
        for b in boxes:
            c, side = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]), b[2] - b[0]
            dist = [float(np.linalg.norm(f.mean(0) - c)) for f in self.faces]
            out.append(self.faces[int(np.argmin(dist))] if dist and min(dist) < side / 2 else None)
        return out


@dataclasses.dataclass
class _Found:
    box: np.ndarray
    landmarks: np.ndarray
    score: float


class _TimedTracker(FaceTracker):
    """A FaceTracker that also adds up the seconds spent in full detections."""

    detection_seconds = 0.0

    def __init__(self, detect, *args, **kwargs):
        def timed(image):
            t0 = time.perf_counter()
            try:
                return detect(image)
            finally:
                self.detection_seconds += time.perf_counter() - t0

        super().__init__(timed, *args, **kwargs)


class _SourceTracker(_TimedTracker):
    """Tracker whose landmarks come from ``landmark_source`` (frame index given per call)."""

    def __init__(self, source, *args, **kwargs):
        self._source, self._index = source, 0
        super().__init__(lambda image: source.detect(self._index, image),
                         lambda image, boxes: source(self._index, image, boxes), *args, **kwargs)

    def __call__(self, frame, index=0):
        self._index = index
        return super().__call__(frame)


#: The per-frame landmark fit of tracking: 4 pose / contour / shape rounds (2 pose steps first), as
#: for single images, with the expression prior widened 2x. On the photo-textured clip with dlib the
#: full rounds cut the median rotation error from 5.1 to 4.5 degrees against :data:`FAST_TRACK_FIT`
#: (~10 % of bench_video's end-to-end frame rate), and the wider prior from 4.3 to 3.9: the photo's smile sits ~2
#: prior SDs out (RMS over the modes), and a tight prior traded the missing expression for pitch.
TRACK_FIT = LandmarkFitConfig(expression_scale=2.0)
#: 2 rounds of 1 pose step: ~2x faster fits; on the model clip's truth + noise landmarks the median
#: rotation error goes from 1.4 to 2.0 degrees before smoothing.
FAST_TRACK_FIT = LandmarkFitConfig(iterations=2, pose_steps=1)


def _make_tracker(pipe, k, config, detect_max_side, landmark_source, fit_config=None,
                  landmark_detector=None) -> FaceTracker:
    fitter = LandmarkFitter(pipe.face_model, fit_config or TRACK_FIT)
    if landmark_source is not None:  # its points are the frame's, whatever patch the tracker would turn
        return _SourceTracker(landmark_source, fitter, k, dataclasses.replace(config or TrackerConfig(), upright=False))
    det = landmark_detector or pipe.detector
    if not hasattr(det, "landmarks_in_boxes"):
        raise ValueError("video tracking needs a detector with landmarks_in_boxes (dlib, mediapipe)")
    if getattr(det, "handles_roll", False):
        config = dataclasses.replace(config or tracker_defaults(det.source), upright=False)
    if hasattr(det, "max_side"):
        det = copy.copy(det)  # the same predictor, detection on shrunk frames
        det.max_side = min(det.max_side, int(detect_max_side))

    def detect(image):
        faces = [d for d in det(image) if d.confidence >= pipe.min_confidence]
        return sorted(faces, key=lambda d: -d.confidence)

    return _TimedTracker(detect, det.landmarks_in_boxes, fitter, k, config)


def _emit(entry, history, encoder, rows, writer) -> None:
    index, t_s, rgb, faces = entry
    drawn = []
    for fc in faces:
        s = history.smoothed(index, fc.face_id)
        ne = len(fc.expression)
        row = {"frame": index, "time_s": t_s, "face_id": fc.face_id, "rotation_raw": fc.rotation,
               "translation_raw": fc.translation, "expression_raw": fc.expression, "rotation": s[:3],
               "translation": s[3:6], "expression": s[6:6 + ne], "shape": s[6 + ne:], "landmarks": fc.landmarks,
               "fit_landmarks": fc.fit_landmarks, "box": fc.box, "detector_score": fc.score, "fit_nme": fc.fit_nme,
               "detected": fc.detected}
        enc = encoder.latest.get(fc.face_id)
        if enc is not None:
            row["encoder_frame"] = enc[0]
            row.update({f"param_{n}": v for n, v in enc[1].items()})
        rows.append(row)
        drawn.append(row)
    prepared = writer.overlay.prepare(rgb, drawn)
    while True:
        try:
            writer.inbox.put((index, rgb, drawn, prepared), timeout=0.1)
            return
        except queue.Full:
            if writer.error is not None:
                return


def _arrays(rows, fps, frame_size, k, every, back, ahead) -> dict:
    """The NPZ: one row per (frame, face). ``frame`` [R] (source frame index), ``time_s`` [R],
    ``face_id`` [R], ``rotation`` / ``translation`` / ``expression`` / ``shape`` [R, ...] smoothed
    (frame camera; radians, mm, model coefficients), ``rotation_raw`` / ``translation_raw`` /
    ``expression_raw`` unsmoothed, ``landmarks`` [R, 68, 2] (shape predictor / detector),
    ``fit_landmarks`` [R, 68, 2] (the fit's projections), ``box`` [R, 4], ``detector_score`` [R] (NaN when
    tracked), ``fit_nme`` [R], ``detected`` [R] bool; ``encoder_frame`` [R] (-1: none yet) and
    ``param_<name>`` [R, ...] the encoder's latest FaceParams fields for that face (NaN before its
    first run); scalars ``fps`` (source), ``every``, ``smooth_back``, ``smooth_ahead``, ``frame_size``
    [W, H], ``intrinsics`` [4]."""
    out = {"fps": np.float64(fps), "every": np.int64(every), "smooth_back": np.int64(back),
           "smooth_ahead": np.int64(ahead), "frame_size": np.array(frame_size, np.int64), "intrinsics": k}
    for key in ("frame", "face_id"):
        out[key] = np.array([r[key] for r in rows], np.int64)
    for key in ("time_s", "detector_score", "fit_nme"):
        out[key] = np.array([r[key] for r in rows], np.float64)
    out["detected"] = np.array([r["detected"] for r in rows], bool)
    for key in ("rotation", "translation", "expression", "shape", "rotation_raw", "translation_raw", "expression_raw",
                "landmarks", "fit_landmarks", "box"):
        out[key] = np.stack([np.asarray(r[key], np.float64) for r in rows])
    out["encoder_frame"] = np.array([r.get("encoder_frame", -1) for r in rows], np.int64)
    shapes = next((r for r in rows if "encoder_frame" in r), None)
    if shapes is not None:
        for n in FaceParams.names():
            like = np.asarray(shapes[f"param_{n}"], np.float32)
            out[f"param_{n}"] = np.stack([np.asarray(r.get(f"param_{n}", np.full_like(like, np.nan)), np.float32)
                                          for r in rows])
    return out


def _write_csv(path: str, a: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    rot, tr = np.degrees(a["rotation"]), a["translation"]
    for i in range(len(a["frame"])):
        score = a["detector_score"][i]
        w.writerow([int(a["frame"][i]), f"{a['time_s'][i]:.4f}", int(a["face_id"][i]),
                    *(f"{v:.3f}" for v in rot[i]), *(f"{v:.2f}" for v in tr[i]),
                    "" if np.isnan(score) else "inf" if np.isinf(score) else f"{score:.4f}", f"{a['fit_nme'][i]:.4f}"])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        fh.write(buf.getvalue())


def _plot(path: str, a: dict) -> None:
    series = {}
    for fid in np.unique(a["face_id"]):
        sel = a["face_id"] == fid
        x = a["frame"][sel]
        tag = f" #{fid}" if len(np.unique(a["face_id"])) > 1 else ""
        for i, n in enumerate(("pitch", "yaw", "roll")):
            series[f"{n}{tag} raw"] = (x, np.degrees(a["rotation_raw"][sel, i]))
            series[f"{n}{tag}"] = (x, np.degrees(a["rotation"][sel, i]))
    plot_curves(path, series, title="head rotation (frame camera; smoothed and raw)", xlabel="frame",
                ylabel="degrees")
