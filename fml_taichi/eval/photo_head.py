"""A face model head textured from a real photo, for video clips with known pose that look like a face.

dlib is trained on real faces; the synthetic clip's plain model albedo with painted brows is out of
its domain, and its points on that face are off by ~0.1 inter-ocular distances. :func:`photo_head`
puts a real photo on the model instead:

1. dlib's detector and 68-point predictor on the photo; the landmark fit
   (:class:`~fml_taichi.recon.landmark_fit.LandmarkFitter`, single-image defaults) gives pose,
   shape and expression in a pinhole camera of focal ``focal_factor`` x the photo's width
   (:data:`PORTRAIT_FOCAL_FACTOR`);
2. every vertex of the fitted mesh is projected into the photo: that pixel is its texture
   coordinate (a projective texture, sampled per pixel at render time, so the face keeps the photo's
   resolution rather than the mesh's);
3. each vertex's weight ``seen`` is how well the photo shows it: 0 when it faces away from the
   photo's camera or is hidden (z-buffer of the fitted mesh), rising to 1 as the view becomes
   frontal (:data:`SEEN_COS` range of the cosine between normal and view ray): at grazing angles one
   photo pixel covers a long strip of the surface;
4. where the photo does not see the head (``seen`` < 1), the model's mean reflectance, scaled per
   colour channel so that it matches the photo's colour on the well-seen skin, fills in.

The result, a :class:`~fml_taichi.data.synthetic_clip.PhotoAppearance`, drives
:func:`fml_taichi.data.synthetic_clip.render_clip` (``ClipConfig(appearance="photo")``). Its
truth is the render's pose; the fit in step 1 only has to put the photo's features on the mesh's
landmark vertices, and it does so to its residual (``fit_nme``, reported).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.synthetic_clip import PhotoAppearance
from ..ops.render import render
from ..recon.landmark_fit import LandmarkFitter

__all__ = ["PORTRAIT_FOCAL_FACTOR", "SEEN_COS", "photo_head", "default_photo"]

#: The photo camera's focal length over the photo's width. A studio head-and-shoulders portrait is
#: taken from a few metres with a long lens: at 4 x the width, the astronaut's face (~140 mm across
#: ~85 px of 512) sits ~3.4 m from the camera. The focal decides how perspective is read from the
#: photo: at 1.5 x (~1.2 m, a webcam's view) the landmark fit of the head's own renders read its
#: pitch 2-6 degrees above the render's (docs/video.md).
PORTRAIT_FOCAL_FACTOR = 4.0

#: The cosine (vertex normal against the ray to the photo's camera) where ``seen`` starts to rise and
#: where it reaches 1.
SEEN_COS = (0.25, 0.55)


def default_photo() -> np.ndarray:
    """The public-domain NASA portrait shipped with the tests (``tests/data/astronaut.jpg`` of a source
    checkout: the file is not part of an installed package), uint8 RGB."""
    import os

    import cv2

    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "astronaut.jpg")
    bgr = cv2.imread(os.path.normpath(path))
    if bgr is None:
        raise FileNotFoundError(f"photo not found: {os.path.normpath(path)!r} (the repository's tests/data)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def photo_head(photo: np.ndarray, face_model, detector=None,
               focal_factor: float = PORTRAIT_FOCAL_FACTOR) -> PhotoAppearance:
    """The :class:`PhotoAppearance` of the most confident face in ``photo`` (uint8 RGB [H, W, 3]) on
    ``face_model`` (module docstring). ``detector``: a :class:`~fml_taichi.data.detect.DlibDetector`
    (default: a new one). Raises ValueError when no face is found."""
    from ..data.crop import mean_landmarks_3d
    from ..data.detect import DlibDetector

    img = np.ascontiguousarray(photo)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"photo: expected uint8 RGB [H, W, 3], got {img.dtype} {img.shape}")
    det = detector or DlibDetector(landmarks_3d=mean_landmarks_3d(face_model))
    found = det(img)
    if not found:
        raise ValueError("photo: no face found by dlib's detector")
    h, w = img.shape[:2]
    f = focal_factor * w
    k = np.array([f, f, (w - 1) / 2, (h - 1) / 2])
    fit = LandmarkFitter(face_model)(found[0].landmarks[None], k)
    shape = torch.as_tensor(fit.shape[0], dtype=torch.float32)
    expression = torch.as_tensor(fit.expression[0], dtype=torch.float32)
    geometry = face_model.geometry(shape[None], expression[None])
    albedo = face_model.mean_reflectance[None]
    rot = torch.as_tensor(fit.rotation, dtype=torch.float32)
    trans = torch.as_tensor(fit.translation, dtype=torch.float32)
    kt = torch.as_tensor(k, dtype=torch.float32)
    ren = render(geometry.contiguous(), face_model.triangles, kt, h, w, rotation=rot, translation=trans,
                 colours=torch.zeros_like(geometry), background=None)
    v_cam, normals = ren.mesh.v_cam[0].double().numpy(), ren.mesh.normals[0].double().numpy()
    z = np.maximum(v_cam[:, 2], 1e-6)
    uv = np.stack([f * v_cam[:, 0] / z + k[2], f * v_cam[:, 1] / z + k[3]], 1)
    ray = v_cam / np.linalg.norm(v_cam, axis=1, keepdims=True)
    cos = -(normals * ray).sum(1)
    px = np.clip(np.round(uv).astype(int), 0, [w - 1, h - 1])
    depth = ren.depth[0].double().numpy()[px[:, 1], px[:, 0]]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
    unoccluded = (depth <= 0) | (v_cam[:, 2] <= depth + 2.0)
    seen = _smoothstep(cos, *SEEN_COS) * inside * unoccluded
    colour = _sample(img, uv)
    a = albedo[0].detach().double().numpy()
    well = seen > 0.9
    gain = np.median(colour[well], 0) / np.maximum(np.median(a[well], 0), 1e-6) if well.any() else np.ones(3)
    return PhotoAppearance(photo=img, uv=torch.as_tensor(uv, dtype=torch.float32),
                           seen=torch.as_tensor(seen, dtype=torch.float32),
                           shape=shape, expression=expression,
                           fallback=torch.as_tensor(np.clip(a * gain, 0, 1), dtype=torch.float32),
                           fit_nme=float(fit.nme[0]), photo_rotation=fit.rotation[0].copy(),
                           photo_intrinsics=k)


def _sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear colours [N, 3] in [0, 1] of ``img`` at pixel positions ``uv`` [N, 2]."""
    import cv2

    m = uv.astype(np.float32).reshape(-1, 1, 2)
    out = cv2.remap(img, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3).astype(np.float64) / 255.0
