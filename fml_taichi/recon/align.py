"""Aligned face crops: a similarity transform that removes roll and scale, with the exact camera of the crop.

Five points derived from the 68 landmarks (the two eye centres, the nose tip, the mouth corners) are
mapped by a least-squares 2D similarity onto a canonical template: the same points of the model's
mean face seen frontally in a 240 px crop framed like the training faces
(:mod:`fml_taichi.data.crop`). A 2D similarity of an image with square pixels is exactly a camera
rotation about its optical axis plus new intrinsics::

    crop pixel  p' = s Rot(theta) p + b  =  K' Rz(theta) K^-1 p     (homogeneous)
    K' = [s f, s f, b_x + s (cos cx - sin cy), b_y + s (sin cx + cos cy)]

so a mesh posed in the crop's camera, ``v_crop = R_c v + t_c``, is posed in the photo's camera by
``R = Rz^T R_c, t = Rz^T t_c`` (:meth:`AlignedCrop.pose_to_image`), and its projection through the
photo's intrinsics is identical to the crop projection mapped back by the similarity.
:func:`align_training_sample` does the same for a training image with a known pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AlignedCrop", "alignment_points", "canonical_template", "similarity_2d", "align_face",
           "warp_aligned", "aligned_crop", "align_training_sample"]

LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
NOSE_TIP = 30
MOUTH_CORNERS = (48, 54)


def alignment_points(landmarks) -> np.ndarray:
    """[..., 5, 2] eye centres, nose tip and mouth corners from [..., 68, 2] (or [..., 68, 3]) landmarks."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[..., LEFT_EYE, :].mean(-2), lm[..., RIGHT_EYE, :].mean(-2), lm[..., NOSE_TIP, :],
                     lm[..., MOUTH_CORNERS[0], :], lm[..., MOUTH_CORNERS[1], :]], -2)


def canonical_template(landmarks_3d, size: int = 240) -> np.ndarray:
    """[5, 2] template: the mean face's five points, frontal, in a ``size`` crop framed like training."""
    from ..common.camera import DEFAULT_FOCAL_PX, DEFAULT_IMAGE_SIZE
    from ..data.crop import FACE_FRACTION

    x3 = np.asarray(landmarks_3d, np.float64)
    centre = (x3.min(0) + x3.max(0)) / 2
    width = float(np.ptp(x3[:, 0]))
    f = DEFAULT_FOCAL_PX * size / DEFAULT_IMAGE_SIZE
    depth = f * width / (FACE_FRACTION * size)
    p = alignment_points(x3) - centre + np.array([0.0, 0.0, depth])
    c = (size - 1) / 2
    return np.stack([f * p[:, 0] / p[:, 2] + c, f * p[:, 1] / p[:, 2] + c], 1)


def similarity_2d(src, dst) -> tuple[float, float, np.ndarray]:
    """Least-squares ``dst ~ s Rot(theta) src + b`` (Umeyama in 2D): ``(s, theta, b [2])``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, d = src - ms, dst - md
    var = (a ** 2).sum()
    if var <= 1e-12:
        raise ValueError("landmarks: the alignment points coincide; no similarity is defined")
    cos_part = (a * d).sum()
    sin_part = (a[:, 0] * d[:, 1] - a[:, 1] * d[:, 0]).sum()
    theta = float(np.arctan2(sin_part, cos_part))
    s = float(np.hypot(cos_part, sin_part) / var)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return s, theta, md - s * rot @ ms


@dataclass(frozen=True)
class AlignedCrop:
    """The similarity ``matrix`` [2, 3] (image px -> crop px), the crop's ``intrinsics`` K' [4], the
    in-plane ``camera_rotation`` Rz [3, 3] (``v_crop_cam = Rz v_image_cam``), ``size``, and the
    similarity's ``scale`` and ``angle`` (radians; the face's roll in the image is ``-angle``)."""

    matrix: np.ndarray
    intrinsics: np.ndarray
    camera_rotation: np.ndarray
    size: int
    scale: float
    angle: float

    def to_crop(self, points) -> np.ndarray:
        p = np.asarray(points, np.float64)
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_image(self, points) -> np.ndarray:
        p = np.asarray(points, np.float64) - self.matrix[:, 2]
        return p @ np.linalg.inv(self.matrix[:, :2]).T

    def pose_to_image(self, rotation_matrix, translation) -> tuple[np.ndarray, np.ndarray]:
        """A pose in the crop camera -> the same pose in the photo's camera (module docstring)."""
        rz_t = self.camera_rotation.T
        return rz_t @ np.asarray(rotation_matrix, np.float64), np.asarray(translation, np.float64) @ rz_t.T

    def pose_to_crop(self, rotation_matrix, translation) -> tuple[np.ndarray, np.ndarray]:
        """A pose in the photo's camera -> the crop camera."""
        rz = self.camera_rotation
        return rz @ np.asarray(rotation_matrix, np.float64), np.asarray(translation, np.float64) @ rz.T


def align_face(landmarks, intrinsics, template, size: int = 240) -> AlignedCrop:
    """The :class:`AlignedCrop` of one face: landmarks [68, 2] in an image with ``intrinsics``
    ``[f, f, cx, cy]`` (square pixels), template [5, 2] (:func:`canonical_template`)."""
    k = np.asarray(intrinsics, np.float64).reshape(4)
    if not abs(float(k[0]) - float(k[1])) <= 1e-8 + 1e-6 * abs(float(k[1])):  # np.isclose's test, without its ~30 us
        raise ValueError(f"intrinsics: aligned crops need square pixels (fx == fy), got fx={k[0]}, fy={k[1]}")
    s, theta, b = similarity_2d(alignment_points(landmarks), template)
    c, sn = np.cos(theta), np.sin(theta)
    matrix = np.array([[s * c, -s * sn, b[0]], [s * sn, s * c, b[1]]])
    k_new = np.array([s * k[0], s * k[1], b[0] + s * (c * k[2] - sn * k[3]), b[1] + s * (sn * k[2] + c * k[3])])
    rz = np.array([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]])
    return AlignedCrop(matrix, k_new, rz, int(size), s, theta)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine with an integer area pre-shrink when the crop shrinks by 2x or more (no aliasing)."""
    img = np.asarray(image, np.float32)
    k = int(1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    m = matrix
    if k >= 2 and min(img.shape[:2]) >= 2 * k:
        h, w = img.shape[0] // k, img.shape[1] // k
        img = cv2.resize(img[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA)
        # small pixel q covers original k q + (k - 1) / 2: compose that into the matrix
        m = np.concatenate([matrix[:, :2] * k, (matrix[:, 2] + matrix[:, :2] @ np.full(2, (k - 1) / 2))[:, None]], 1)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0, out=out)  # warpAffine's result is a fresh contiguous float32 array


def warp_aligned(image, aligned: AlignedCrop) -> np.ndarray:
    """The crop [size, size, 3] float32 of an :class:`AlignedCrop` (the warp of :func:`aligned_crop`)."""
    return _warp(image, aligned.matrix, aligned.size)


def aligned_crop(image, landmarks, intrinsics, template, size: int = 240) -> tuple[np.ndarray, AlignedCrop]:
    """``(crop [size, size, 3], AlignedCrop)`` of one face (see :func:`align_face`)."""
    al = align_face(landmarks, intrinsics, template, size)
    return warp_aligned(image, al), al


def align_training_sample(image, landmarks, intrinsics, rotation_matrix, translation, template,
                          size: int = 240) -> dict:
    """A training image with a known pose, aligned: ``{"image", "landmarks", "intrinsics",
    "rotation_matrix", "translation", "aligned"}`` with the pose and landmarks in the crop's camera,
    so that losses on the crop see exactly the image's geometry (module docstring)."""
    crop, al = aligned_crop(image, landmarks, intrinsics, template, size)
    rot, t = al.pose_to_crop(rotation_matrix, translation)
    return {"image": crop, "landmarks": al.to_crop(landmarks).astype(np.float32), "intrinsics": al.intrinsics,
            "rotation_matrix": rot, "translation": t, "aligned": al}
