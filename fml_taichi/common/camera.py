"""Pinhole camera intrinsics shared by data, training, evaluation and apps.

Conventions (``docs/conventions.md``): OpenCV camera frame (x right, y down, z forward),
``u = fx x / z + cx``, ``v = fy y / z + cy`` in pixels, pixel centres at integer coordinates.
Intrinsics travel as a float tensor ``[fx, fy, cx, cy]`` of shape (4,) or (B, 4).
"""
from __future__ import annotations

import torch

# A 240 px crop of a face ~0.5 m from a camera with a ~22 degree field of view. The face model's
# default translation (see DEFAULT_DISTANCE_MM) puts a mean face (~150 mm wide) at ~180 px.
DEFAULT_IMAGE_SIZE = 240
DEFAULT_FOCAL_PX = 600.0
DEFAULT_DISTANCE_MM = 500.0


def default_intrinsics(size: int = DEFAULT_IMAGE_SIZE, focal_px: float | None = None,
                       dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """``[fx, fy, cx, cy]`` for a square ``size`` x ``size`` image, focal scaled with the size."""
    f = DEFAULT_FOCAL_PX * size / DEFAULT_IMAGE_SIZE if focal_px is None else float(focal_px)
    c = (size - 1) / 2.0
    return torch.tensor([f, f, c, c], dtype=dtype, device=device)
