"""Image dtype helpers shared by every layer that reads or writes pixels: float [0, 1] <-> uint8."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_numpy", "to_uint8"]


def as_numpy(name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    return x


def to_uint8(image, name: str = "image") -> np.ndarray:
    """[H, W, 3] (or [H, W]) float in [0, 1] (clipped) or uint8 -> uint8 [H, W, 3], rounded."""
    img = as_numpy(name, image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name}: expected shape (H, W, 3) or (H, W), got {img.shape}")
    if img.dtype == np.uint8:
        return img
    if not (np.issubdtype(img.dtype, np.floating) or img.dtype == np.bool_):
        raise ValueError(f"{name}: expected float in [0, 1] or uint8, got {img.dtype}")
    img = img.astype(np.float32)
    if not np.isfinite(img).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
