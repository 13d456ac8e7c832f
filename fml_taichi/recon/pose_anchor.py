"""Pose anchoring: one landmark source's tracked poses corrected by a second, sparser source.

dlib's tracked points are cheap (~2 ms a frame) but read the head's turn short (on the benchmark's
photo clip yaw 0.90x, pitch 0.62x); MediaPipe's read it better but cost ~10 ms a frame
(``docs/video.md``). :class:`PoseAnchor` keeps, per face id, the rotation that takes the tracker's
pose (dlib's points) to the pose of the anchor's points (MediaPipe's, fitted by the same tracker:
same identity, same weights), measured every ``every``-th frame, and applies the latest one to the
poses of the frames between. The error of dlib's points changes slowly with the pose, so a held
offset follows it; the held steps are what the window smoothing removes.

Measured on both clips of ``benchmarks/bench_video.py`` (``docs/video.md``): every 4th frame, the
median rotation error is 2.36 degrees on the photo clip (dlib alone 3.22, MediaPipe every frame
2.61) and 2.96 on the model clip (12.56 / 2.80); the CLI's default (``--landmarks auto``) where
MediaPipe is installed. Offsets are held, not averaged (an average lags the pose-dependent bias:
3.4-5.1 degrees on the model clip).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .landmark_fit import euler_to_matrix_np, matrix_to_euler, rodrigues

__all__ = ["ANCHOR_EVERY", "PoseAnchor", "rotation_vector"]

ANCHOR_EVERY = 4


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Rotation vector [3] of a rotation matrix [3, 3] (angle below 180 degrees)."""
    c = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    theta = float(np.arccos(c))
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    s = np.sin(theta)
    return v * (theta / (2 * s) if s > 1e-9 else 0.5)


class PoseAnchor:
    """Per-face rotation offsets from an anchor landmark source (module docstring).

    ``__call__(faces, anchor_points, refit)``: ``faces`` this frame's tracked faces
    (:class:`~fml_taichi.recon.tracking.TrackedFace`); ``anchor_points`` the anchor source's faces in
    this frame (list of [68, 2]) or None on frames it did not run; ``refit(face, points)`` fits points
    as the tracker would (:meth:`~fml_taichi.recon.tracking.FaceTracker.refit`). Returns copies of
    the faces with corrected rotations (the tracker's own state is left as it was: its boxes are
    placed from its own fits).
    """

    def __init__(self, max_offset_deg: float = 45.0):
        self.offsets: dict[int, np.ndarray] = {}
        self.max_offset = np.radians(max_offset_deg)
        self.n_updates = 0

    def _update(self, face, anchor_points, refit) -> None:
        c = face.landmarks.mean(0)
        size = float((face.landmarks.max(0) - face.landmarks.min(0)).max())
        dist = [float(np.linalg.norm(p.mean(0) - c)) for p in anchor_points]
        if not dist or min(dist) > size / 3:
            return  # the anchor did not see this face
        fit = refit(face, anchor_points[int(np.argmin(dist))])
        r_face = euler_to_matrix_np(face.rotation[None])[0]
        off = rotation_vector(fit.matrix[0] @ r_face.T)
        if np.linalg.norm(off) <= self.max_offset:  # a larger one is a wrong match, not a bias
            self.offsets[face.face_id] = off
            self.n_updates += 1

    def __call__(self, faces: list, anchor_points, refit) -> list:
        live = {f.face_id for f in faces}
        for i in [i for i in self.offsets if i not in live]:
            del self.offsets[i]
        out = []
        for f in faces:
            if anchor_points is not None:
                self._update(f, anchor_points, refit)
            off = self.offsets.get(f.face_id)
            if off is None:
                out.append(f)
                continue
            r = rodrigues(off[None]) @ euler_to_matrix_np(f.rotation[None])
            out.append(dataclasses.replace(f, rotation=matrix_to_euler(r)[0]))
        return out
