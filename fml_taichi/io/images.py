"""The one place images are read (and PNGs written), plus channels-last <-> network layout helpers.

Everything in the project sees images as float32 RGB in [0, 1], shape [H, W, 3] (``docs/conventions.md``).
OpenCV decodes to BGR(A) in the file's bit depth; this module converts once, here, so no caller ever
handles BGR, grey, alpha or 16-bit data. Decoding goes through ``cv2.imdecode`` on the file's bytes
(rather than ``cv2.imread``) so that a missing file and an undecodable one give different, clear errors
and non-ASCII paths work.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..common.atomic import write_bytes
from ..common.images import as_numpy, to_uint8

__all__ = ["load_image", "load_images", "write_png", "to_uint8", "to_network", "from_network"]


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"not an image file (a directory): {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"not an image: {path!r} is empty")
    return data


def _to_float(img: np.ndarray, path: str) -> np.ndarray:
    """Any integer or float pixel type -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):  # HDR / float TIFF: clip into the display range
        img = img.astype(np.float32)
        if not np.isfinite(img).all():
            raise ValueError(f"image {path!r} contains NaN or inf pixels")
        return np.clip(img, 0.0, 1.0)
    raise ValueError(f"image {path!r}: unsupported pixel type {img.dtype}")


def _to_rgb(img: np.ndarray, path: str) -> np.ndarray:
    """OpenCV's grey / grey+alpha / BGR / BGRA -> RGB (alpha dropped: we never composite on load)."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 2:  # grey + alpha
        return np.repeat(img[:, :, :1], 3, axis=2)
    if channels in (3, 4):
        return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB
    raise ValueError(f"image {path!r}: unsupported channel count {channels}")


def _check_size_arg(size):
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size: expected a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def load_image(path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1], shape [H, W, 3].

    Args:
        path: any format OpenCV decodes (PNG, JPEG, BMP, TIFF, ...), 8 or 16 bit, grey, grey+alpha,
            RGB or RGBA (alpha is dropped). Pixels are taken as stored: EXIF orientation tags are
            not applied (datasets store faces upright; rotating on load would move landmarks).
        size: optional output size, an int (square) or (height, width); resampled with area
            averaging when shrinking, bilinear when enlarging.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: the file is empty, a directory, not an image, truncated or corrupt (names it).
    """
    size = _check_size_arg(size)
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # keeps bit depth and alpha
    except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV's limit
        raise ValueError(f"not a loadable image: {path!r} ({str(e).strip().splitlines()[-1]})") from e
    if img is None or img.size == 0:
        raise ValueError(f"not an image, or a truncated / corrupt one: {path!r}")
    img = _to_float(_to_rgb(img, path), path)
    if size is not None and img.shape[:2] != size:
        shrink = size[0] * size[1] < img.shape[0] * img.shape[1]
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img, dtype=np.float32)


def load_images(paths, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Several images as one float32 batch [B, H, W, 3]; without ``size`` all must share one size."""
    images = [load_image(p, size) for p in paths]
    if not images:
        raise ValueError("paths: no image paths given")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"paths: images differ in size {sorted(shapes)}; pass size= to resample them")
    return np.stack(images)


def write_png(path, image) -> None:
    """Write ``image`` ([H, W, 3] or [H, W] float in [0, 1] or uint8, numpy or torch) as an RGB PNG.

    Floats are clipped to [0, 1]. The write is atomic (a temp file renamed over ``path``).
    """
    rgb = to_uint8(image)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
    if not ok:
        raise ValueError(f"image: OpenCV could not encode a PNG of shape {rgb.shape}")
    write_bytes(path, buf.tobytes())


def to_network(images) -> torch.Tensor:
    """Channels-last images [B, H, W, 3] or [H, W, 3] (numpy or torch) -> contiguous float32 [B, 3, H, W]."""
    t = torch.as_tensor(as_numpy("images", images)) if not isinstance(images, torch.Tensor) else images
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"images: expected shape (B, H, W, 3) or (H, W, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"images: expected float values in [0, 1], got {t.dtype}")
    return t.permute(0, 3, 1, 2).to(torch.float32).contiguous()


def from_network(images: torch.Tensor) -> torch.Tensor:
    """Network layout [B, 3, H, W] -> contiguous channels-last [B, H, W, 3] (same dtype)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (B, 3, H, W), got {shape}")
    return images.permute(0, 2, 3, 1).contiguous()
