"""Video reconstruction: one tracked face per video, per-frame parameters, temporal smoothing, overlay video.

Two passes over the file (frames are never all held in memory):

1. Per frame: detect, keep the face nearest to the previous frame's (the most confident one at the
   start or after a loss), crop, regress (optionally ``--refine``). Frames without a face are marked.
2. Smooth pose and expression over time, then decode again and draw the overlay video.

**One camera for the whole video.** Each frame's pose is regressed in its own *crop camera*, whose
focal length and centre follow the detector box: box jitter would become pose jitter. Before
smoothing, every frame's pose is re-expressed in one fixed pinhole camera for the video (focal =
median of the crop cameras', centre = frame centre): the head centre keeps its pixel position and
apparent size (depth scaled by the focal ratio), and the head is turned by the rotation between the
two viewing rays, so it is seen from the same direction. Pose (Euler angles, translation), the
expression coefficients and the geometry correctives (which carry expression detail) are then
smoothed with the One-Euro filter of :mod:`fml_taichi.recon.smoothing` (``--smooth`` Hz), and the
smoothed poses are mapped back into each frame's own camera for drawing (the exact inverse, so an
unsmoothed track draws exactly what each frame regressed).

Outputs (``OUT/NAME.*``): ``overlay.mp4`` (final level over every frame, from the smoothed track),
``params.npz`` (per-frame arrays, keys in :func:`track_arrays`), ``track.png`` (raw vs smoothed
head angles over time: what the filter did).
"""
from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.atomic import atomic_path
from ..data.crop import CropBox
from ..data.video import VideoReader, VideoWriter
from ..io.figures import overlay
from ..io.plots import plot_curves
from ..model import FaceParams
from ..reference.image_formation import euler_to_matrix
from .outputs import OutputSet, render_layers
from .pipeline import NoFaceFound, landmarks_in_image
from .refine import refine_results
from .smoothing import DEFAULT_MIN_CUTOFF, one_euro

__all__ = ["VIDEO_OVERLAY_MAX_SIDE", "reconstruct_video", "matrix_to_euler", "to_video_camera", "from_video_camera",
           "track_arrays"]

VIDEO_OVERLAY_MAX_SIDE = 1280
SMOOTHED = ("rotation", "translation", "expression", "delta_geometry")


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of ``R = Rz(rz) Ry(ry) Rx(rx)`` (docs/conventions.md): [..., 3, 3] -> [..., 3] radians."""
    r = np.asarray(rot, dtype=np.float64)
    ry = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    rx = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    rz = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([rx, ry, rz], -1)


def _euler_to_matrix(rotation: np.ndarray) -> np.ndarray:
    return euler_to_matrix(torch.as_tensor(rotation, dtype=torch.float64)).numpy()


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b`` (Rodrigues)."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def _head_ray(t: np.ndarray, k_from: np.ndarray, k_to: np.ndarray) -> np.ndarray:
    """Unit ray, in camera ``k_to``, through the pixel where camera ``k_from`` shows point ``t``."""
    u = k_from[0] * t[0] / t[2] + k_from[2]
    v = k_from[1] * t[1] / t[2] + k_from[3]
    ray = np.array([(u - k_to[2]) / k_to[0], (v - k_to[3]) / k_to[1], 1.0])
    return ray / np.linalg.norm(ray)


def _move_pose(rotation, translation, k_from, k_to) -> tuple[np.ndarray, np.ndarray]:
    """One pose from camera ``k_from`` to camera ``k_to`` (same centre of projection, other intrinsics):
    the head centre keeps its pixel, its apparent size (distance scaled by the focal ratio) and the
    direction it is seen from (the head turns with the viewing ray)."""
    t = np.asarray(translation, np.float64)
    ray = _head_ray(t, k_from, k_to)
    turn = _rotation_between(t / np.linalg.norm(t), ray)
    rot = matrix_to_euler(turn @ _euler_to_matrix(np.asarray(rotation)[None])[0])
    return rot, ray * np.linalg.norm(t) * k_to[0] / k_from[0]


def to_video_camera(rotation: np.ndarray, translation: np.ndarray, image_intrinsics: np.ndarray,
                    camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-express per-frame crop-camera poses in one fixed camera (module docstring).

    rotation, translation [T, 3] (crop camera); image_intrinsics [T, 4] (each frame's crop camera as
    seen in the frame); camera [4] the fixed ``[f, f, cx, cy]``. Returns (rotation [T, 3], translation [T, 3]).
    A crop is an on-axis view of an off-axis window, so the two cameras' images of a head differ by a
    slight radial stretch (1 / cos of the off-axis angle): the fixed camera is for smoothing, and
    :func:`from_video_camera` maps the smoothed poses back to each frame's camera for drawing.
    """
    out = [_move_pose(r, t, k, camera) for r, t, k in zip(rotation, translation, image_intrinsics)]
    return np.array([o[0] for o in out]).reshape(-1, 3), np.array([o[1] for o in out]).reshape(-1, 3)


def from_video_camera(rotation: np.ndarray, translation: np.ndarray, image_intrinsics: np.ndarray,
                      camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact inverse of :func:`to_video_camera`: fixed-camera poses back into each frame's crop camera."""
    out = [_move_pose(r, t, camera, k) for r, t, k in zip(rotation, translation, image_intrinsics)]
    return np.array([o[0] for o in out]).reshape(-1, 3), np.array([o[1] for o in out]).reshape(-1, 3)


def _pick(detections, previous: CropBox | None, boxes):
    """Index of the detection to follow: nearest to the previous crop centre if close, else the first."""
    if previous is None or not detections:
        return 0
    d = [math.hypot(b.cx - previous.cx, b.cy - previous.cy) for b in boxes]
    i = int(np.argmin(d))
    return i if d[i] < 0.5 * previous.side else 0


def _track(pipe, reader: VideoReader, refine: int, progress: bool) -> list:
    """Pass 1: one FaceResult (or None) per frame."""

    frames, previous = [], None
    total = reader.max_frames or reader.n_frames_declared or None
    for frame in tqdm(reader, total=total, desc=os.path.basename(reader.path), unit="frame", disable=not progress,
                      leave=False):
        dets = pipe.detect(frame)
        if not dets:
            frames.append(None)
            continue
        cropped = [pipe.crop(frame, d) for d in dets]
        i = _pick(dets, previous, [b for b, _ in cropped])
        box, crop = cropped[i]
        res = pipe.reconstruct_detections(frame, [dets[i]], [box], crop[None])
        if refine:
            res = refine_results(res, pipe.multilevel, refine)
        frames.append(res[0])
        previous = box
    return frames


def _stack(frames, name: str) -> np.ndarray:
    return np.concatenate([getattr(f.params, name).detach().numpy() for f in frames if f is not None])


def track_arrays(frames, fps: float, frame_size, min_cutoff: float) -> dict:
    """Per-frame arrays of the parameter file (T frames, F of them with a face; 0 where none):
    ``fps``, ``frame_size`` [W, H], ``smooth_cutoff_hz``, ``detected`` [T] bool, ``confidence`` [T],
    ``bbox`` [T, 4] (detector box), ``crop_box`` [T, 4], ``detected_landmarks`` [T, 68, 2],
    ``crop_image_intrinsics`` [T, 4], ``param_<name>`` [T, ...] every FaceParams field as regressed (crop
    camera), ``camera`` [4] the video's fixed camera, ``video_rotation`` / ``video_translation`` [T, 3]
    the raw pose in it, ``smoothed_<name>`` [T, ...] for rotation, translation (fixed camera),
    expression and delta_geometry, and ``smoothed_crop_rotation`` / ``smoothed_crop_translation``, the
    smoothed pose back in each frame's crop camera (project with ``crop_image_intrinsics``), and
    ``landmarks_2d`` [T, 68, 2] the smoothed final level's landmarks in the frame (added by the overlay pass).
    """
    t = len(frames)
    ok = np.array([f is not None for f in frames])
    if not ok.any():
        raise NoFaceFound("no face found in any frame")

    def fill(values: np.ndarray) -> np.ndarray:  # F rows -> T rows, zeros where no face
        full = np.zeros((t,) + values.shape[1:], values.dtype)
        full[ok] = values
        return full

    arrays = {"fps": np.float64(fps), "frame_size": np.array(frame_size, np.int64),
              "smooth_cutoff_hz": np.float64(min_cutoff), "detected": ok}
    real = [f for f in frames if f is not None]
    arrays["confidence"] = fill(np.array([f.detection.confidence for f in real]))
    arrays["bbox"] = fill(np.array([f.detection.box for f in real]))
    arrays["crop_box"] = fill(np.array([f.crop_box.as_list() for f in real]))
    arrays["detected_landmarks"] = fill(np.array([f.detection.landmarks for f in real], np.float32))
    k_img = np.array([f.image_intrinsics for f in real])
    arrays["crop_image_intrinsics"] = fill(k_img)
    for name in FaceParams.names():
        arrays[f"param_{name}"] = fill(_stack(frames, name))
    w, h = frame_size
    camera = np.array([np.median(k_img[:, 0]), np.median(k_img[:, 0]), (w - 1) / 2, (h - 1) / 2])
    rot, trans = to_video_camera(_stack(frames, "rotation"), _stack(frames, "translation"), k_img, camera)
    rot = np.unwrap(rot, axis=0)  # Euler angles must not jump by 2 pi between frames before filtering
    arrays.update(camera=camera, video_rotation=fill(rot), video_translation=fill(trans))
    raw = {"rotation": arrays["video_rotation"], "translation": arrays["video_translation"],
           "expression": arrays["param_expression"], "delta_geometry": arrays["param_delta_geometry"]}
    for name in SMOOTHED:
        arrays[f"smoothed_{name}"] = one_euro(raw[name], fps, min_cutoff, valid=ok).astype(np.float32)
    # Back into each frame's own camera for drawing (exact when nothing was smoothed).
    rot_c, trans_c = from_video_camera(arrays["smoothed_rotation"][ok], arrays["smoothed_translation"][ok], k_img,
                                       camera)
    arrays.update(smoothed_crop_rotation=fill(rot_c.astype(np.float32)),
                  smoothed_crop_translation=fill(trans_c.astype(np.float32)))
    return arrays


def _smoothed_params(arrays: dict, t: int) -> FaceParams:
    p = {n: torch.as_tensor(arrays[f"param_{n}"][t:t + 1], dtype=torch.float32) for n in FaceParams.names()}
    for n in ("expression", "delta_geometry"):
        p[n] = torch.as_tensor(arrays[f"smoothed_{n}"][t:t + 1], dtype=torch.float32)
    for n in ("rotation", "translation"):
        p[n] = torch.as_tensor(arrays[f"smoothed_crop_{n}"][t:t + 1], dtype=torch.float32)
    return FaceParams(**p)


def _overlay_video(pipe, path: str, arrays: dict, target: str, max_frames, progress: bool) -> np.ndarray:
    """Pass 2: the overlay video from the smoothed track; returns the final-level 2D landmarks [T, 68, 2]."""
    fm = pipe.face_model
    w, h = (int(v) for v in arrays["frame_size"])
    f = min(1.0, VIDEO_OVERLAY_MAX_SIDE / max(w, h))
    size = (max(2, round(w * f)) // 2 * 2, max(2, round(h * f)) // 2 * 2)  # codecs want even sizes
    sx, sy = size[0] / w, size[1] / h
    identity = CropBox((w - 1) / 2, (w - 1) / 2, float(w))  # image pixels stay image pixels
    lm_all = np.zeros((len(arrays["detected"]), 68, 2), np.float32)
    with VideoReader(path, max_frames) as reader, VideoWriter(target, reader.fps, size) as writer:
        for t, frame in enumerate(tqdm(reader, total=len(arrays["detected"]), desc="overlay", unit="frame",
                                       disable=not progress, leave=False)):
            if t >= len(arrays["detected"]):
                break
            img = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if size != (w, h) else frame
            if arrays["detected"][t]:
                p = _smoothed_params(arrays, t)
                with torch.no_grad():
                    out = pipe.multilevel(p)
                k = arrays["crop_image_intrinsics"][t]
                scaled = np.array([k[0] * sx, k[1] * sy, (k[2] + 0.5) * sx - 0.5, (k[3] + 0.5) * sy - 0.5])
                ren = render_layers(out.final_geometry, out.final_reflectance, p, fm.triangles, scaled, size[1], size[0])
                img = overlay(img, ren["shaded"][0], ren["mask"][0], 0.7)
                det = arrays["detected_landmarks"][t:t + 1]
                lm, _ = landmarks_in_image(out, p, fm, det, k, identity, w)
                lm_all[t] = lm[0]
            writer.write(img)
    return lm_all


def _plot_track(path: str, arrays: dict) -> None:
    ok = arrays["detected"]
    x = np.nonzero(ok)[0]
    series = {}
    for i, name in enumerate(("pitch", "yaw", "roll")):
        series[f"{name} raw"] = (x, np.degrees(arrays["video_rotation"][ok, i]))
        series[f"{name} smoothed"] = (x, np.degrees(arrays["smoothed_rotation"][ok, i]))
    plot_curves(path, series, title=f"head rotation (One-Euro, {float(arrays['smooth_cutoff_hz']):g} Hz)",
                xlabel="frame", ylabel="degrees")


def reconstruct_video(pipe, path: str, out_dir: str, name: str, min_cutoff: float = DEFAULT_MIN_CUTOFF,
                      refine: int = 0, max_frames: int | None = None, progress: bool = True) -> dict:
    """Reconstruct the main face of a video (module docstring); returns a summary dict.

    Raises ValueError (undecodable video), :class:`NoFaceFound` (no face in any frame), OSError (output).
    """
    with VideoReader(path, max_frames) as reader:
        frames = _track(pipe, reader, refine, progress)
        fps, frame_size, truncated = reader.fps, reader.size, reader.truncated
    arrays = track_arrays(frames, fps, frame_size, min_cutoff)
    base = os.path.join(out_dir, *name.split("/"))
    with OutputSet() as outputs:
        outputs.add(base + ".overlay.mp4")
        arrays["landmarks_2d"] = _overlay_video(pipe, path, arrays, base + ".overlay.mp4", len(frames), progress)
        outputs.add(base + ".params.npz")
        with atomic_path(base + ".params.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        outputs.add(base + ".track.png")
        _plot_track(base + ".track.png", arrays)
    jitter = {}
    for key, raw in (("rotation", "video_rotation"), ("translation", "video_translation")):
        ok = arrays["detected"]
        if ok.sum() >= 3:
            jitter[key] = [float(np.abs(np.diff(arrays[raw][ok], 2, axis=0)).mean()),
                           float(np.abs(np.diff(arrays[f"smoothed_{key}"][ok], 2, axis=0)).mean())]
    return {"frames": len(frames), "frames_with_face": int(arrays["detected"].sum()), "fps": fps,
            "truncated": bool(truncated), "outputs": outputs.paths,
            "jitter_raw_vs_smoothed": jitter}
