"""The face crop rule shared by preprocessing and reconstruction: a square around 68 landmarks that
frames a real face the way the synthetic training images frame theirs.

How the synthetic faces are framed (:class:`fml_taichi.data.synthetic.SyntheticConfig`): the centre of
the mean face's 3D landmark box sits at the image centre, and the *frontal* width of that box (the x
extent of the 68 mean landmarks, in mm, seen at the face's depth) is a fraction ``face_fraction`` of
the 240 px image, drawn in ``(0.55, 0.7)``. The rule here inverts that for a detected face:

1. Fit an affine camera ``x = A X + b`` (A 2x3) from the mean face's 3D landmarks ``X`` to the detected
   2D landmarks, using the inner-face points 17-67 only: the jaw points slide along the silhouette
   with head rotation, the inner ones do not.
2. The image scale of the face is ``s = (|A_0| + |A_1|) / 2`` px per mm (the row norms of a scaled
   rotation, which is what an affine fit of a rigid face recovers): unlike the 2D landmark box, it
   does not shrink when the head turns.
3. Crop centre = ``A c + b`` with ``c`` the 3D landmark box centre; crop side = ``s * width_mm /
   FACE_FRACTION`` image pixels, with :data:`FACE_FRACTION` the middle of the training range (``s``
   first corrected from the inner landmarks' depth to the box centre's, as the training camera sees it).

On synthetic faces (ground-truth landmarks) this recovers the rendered framing: side within a few
percent, centre within a few pixels (``tests/test_detect_crop.py`` checks it).

Coordinates (``docs/conventions.md``): pixel centres at integer coordinates, so pixel ``i`` covers
``[i - 0.5, i + 0.5]``. A :class:`CropBox` covers the image square ``[cx - side/2, cx + side/2]`` x
``[cy - side/2, cy + side/2]``; crop pixel ``u`` (of ``size``) maps to image ``x = left + (u + 0.5)
side / size``. Crops outside the image repeat its border pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..common.camera import DEFAULT_FOCAL_PX, DEFAULT_IMAGE_SIZE

__all__ = ["CROP_SIZE", "FACE_FRACTION", "INNER_LANDMARKS", "CropBox", "fit_affine_camera", "crop_box_from_landmarks",
           "crop_image", "mean_landmarks_3d"]

#: Side of the network's input crop (the paper's and the synthetic data's 240 px).
CROP_SIZE = 240
#: The framing of the synthetic training faces: the middle of ``SyntheticConfig.face_fraction``
#: (0.55, 0.7). A test checks the two stay equal.
FACE_FRACTION = 0.625
#: iBUG points that keep their place on the face under head rotation (brows, nose, eyes, mouth).
INNER_LANDMARKS = np.arange(17, 68)


@dataclass(frozen=True)
class CropBox:
    """A square image region: centre ``(cx, cy)`` and ``side`` in input-image pixels (module docstring)."""

    cx: float
    cy: float
    side: float

    def __post_init__(self):
        vals = (self.cx, self.cy, self.side)
        if not all(np.isfinite(v) for v in vals) or self.side <= 0:
            raise ValueError(f"crop box: expected a finite centre and a positive side, got {vals}")

    @property
    def left(self) -> float:
        return self.cx - self.side / 2

    @property
    def top(self) -> float:
        return self.cy - self.side / 2

    def as_list(self) -> list[float]:
        """``[x0, y0, x1, y1]``: the square's edges in image pixel coordinates."""
        return [self.left, self.top, self.left + self.side, self.top + self.side]

    def to_crop(self, points, size: int = CROP_SIZE) -> np.ndarray:
        """Image pixel coordinates ``[..., 2]`` -> crop pixel coordinates (crop of ``size`` px)."""
        p = np.asarray(points, dtype=np.float64)
        k = size / self.side
        return np.stack([(p[..., 0] - self.left) * k - 0.5, (p[..., 1] - self.top) * k - 0.5], -1)

    def to_image(self, points, size: int = CROP_SIZE) -> np.ndarray:
        """Crop pixel coordinates ``[..., 2]`` -> image pixel coordinates (inverse of :meth:`to_crop`)."""
        p = np.asarray(points, dtype=np.float64)
        k = self.side / size
        return np.stack([self.left + (p[..., 0] + 0.5) * k, self.top + (p[..., 1] + 0.5) * k], -1)

    def affine(self, size: int = CROP_SIZE) -> np.ndarray:
        """The 2x3 matrix mapping image to crop coordinates (what ``cv2.warpAffine`` takes)."""
        k = size / self.side
        return np.array([[k, 0.0, -self.left * k - 0.5], [0.0, k, -self.top * k - 0.5]])

    def image_intrinsics(self, crop_intrinsics, size: int = CROP_SIZE) -> np.ndarray:
        """``[fx, fy, cx, cy]`` that project camera-space points straight into the input image.

        A model posed for the crop camera (``crop_intrinsics``, for a ``size`` crop) lands, seen
        through these intrinsics, where its crop projection maps to in the input image: the crop is
        a scaled, shifted view of the image, so only the focal length and the centre change.
        """
        fx, fy, ccx, ccy = (float(v) for v in np.asarray(crop_intrinsics, dtype=np.float64).reshape(4))
        k = self.side / size
        return np.array([fx * k, fy * k, self.left + (ccx + 0.5) * k, self.top + (ccy + 0.5) * k])

    def scaled(self, factor: float) -> "CropBox":
        """The box in an image resized by ``factor`` (pixel centres move as ``(x + 0.5) f - 0.5``)."""
        return CropBox((self.cx + 0.5) * factor - 0.5, (self.cy + 0.5) * factor - 0.5, self.side * factor)


def mean_landmarks_3d(face_model) -> np.ndarray:
    """The 68 landmark positions of ``face_model``'s mean face, [68, 3] mm (model space)."""
    lm = face_model.mean_geometry[face_model.landmarks.long()]
    return lm.detach().cpu().double().numpy()


def _check_landmarks(name: str, x, n_cols: int) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.shape != (68, n_cols):
        raise ValueError(f"{name}: expected shape (68, {n_cols}), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return a


def fit_affine_camera(landmarks_2d, landmarks_3d, points=INNER_LANDMARKS) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares affine camera ``x = A X + b`` from 3D model points to 2D image points.

    Args:
        landmarks_2d: [68, 2] image pixels. landmarks_3d: [68, 3] model-space mm.
        points: which landmarks to fit (default: the inner face, 17-67).

    Returns:
        ``(A [2, 3], b [2], rms)``: the camera and the RMS residual (pixels) over ``points``.

    Raises:
        ValueError if the points are degenerate (e.g. all on one spot or one line).
    """
    x2 = _check_landmarks("landmarks_2d", landmarks_2d, 2)[points]
    x3 = _check_landmarks("landmarks_3d", landmarks_3d, 3)[points]
    design = np.hstack([x3, np.ones((len(x3), 1))])
    sol, _, rank, _ = np.linalg.lstsq(design, x2, rcond=None)
    spread = np.ptp(x2, axis=0)
    if rank < 4 or spread.min() < 1e-6:
        raise ValueError("landmarks_2d: degenerate landmarks (collapsed to a point or a line): no face to crop")
    resid = design @ sol - x2
    return sol[:3].T, sol[3], float(np.sqrt((resid ** 2).sum(1).mean()))


def crop_box_from_landmarks(landmarks_2d, landmarks_3d, face_fraction: float = FACE_FRACTION) -> CropBox:
    """The crop rule of the module docstring: a :class:`CropBox` in the landmarks' image.

    Args:
        landmarks_2d: [68, 2] detected landmarks (iBUG order, image pixels).
        landmarks_3d: [68, 3] the mean face's landmarks (:func:`mean_landmarks_3d`).
        face_fraction: frontal face width / crop side (default: the training framing).
    """
    if not 0 < face_fraction <= 1.5:
        raise ValueError(f"face_fraction: expected a value in (0, 1.5], got {face_fraction!r}")
    a, b, _ = fit_affine_camera(landmarks_2d, landmarks_3d)
    x3 = np.asarray(landmarks_3d, dtype=np.float64)
    centre = (x3.min(0) + x3.max(0)) / 2
    width_mm = float(np.ptp(x3[:, 0]))
    scale = float(np.linalg.norm(a, axis=1).mean())  # px per mm at the inner landmarks' depth
    # The training framing refers to the box centre's depth, which lies behind the inner landmarks
    # (the jaw reaches back): in the training camera that is ``depth_offset`` mm further, at a distance
    # of ``f width / (fraction size)`` mm, so the face there looks smaller by this factor (~4%).
    depth_offset = float(centre[2] - x3[INNER_LANDMARKS, 2].mean())
    distance = DEFAULT_FOCAL_PX * width_mm / (face_fraction * DEFAULT_IMAGE_SIZE)
    scale /= 1.0 + depth_offset / distance
    cx, cy = a @ centre + b
    return CropBox(float(cx), float(cy), scale * width_mm / face_fraction)


def crop_image(image: np.ndarray, box: CropBox, size: int = CROP_SIZE) -> np.ndarray:
    """Cut ``box`` out of ``image`` ([H, W, 3] float32 in [0, 1]) as a ``size`` x ``size`` crop.

    Shrinking by more than 2x first area-averages the image by an integer factor (bilinear warping
    alone would alias: a 1000 px face becomes a 150 px one). Outside the image, border pixels repeat.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image: expected shape (H, W, 3), got {img.shape}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size: expected an int >= 8, got {size!r}")
    img = img.astype(np.float32, copy=False)
    k = int(box.side / size)  # integer pre-shrink factor
    if k >= 2 and min(img.shape[:2]) >= 2 * k:
        h, w = img.shape[0] // k, img.shape[1] // k
        img = cv2.resize(img[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA)
        # INTER_AREA with an integer factor: new pixel j averages old [jk, jk + k - 1], centred at
        # jk + (k - 1) / 2, so old x maps to (x - (k - 1) / 2) / k = (x + 0.5) / k - 0.5.
        box = box.scaled(1.0 / k)
    out = cv2.warpAffine(img, box.affine(size), (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
