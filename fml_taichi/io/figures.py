"""Pictures people look at: overlays of a rendering on its input, and labelled panel figures
(``input | base | final | reflectance | shading``, like Figs. 3-4 of the paper).

Drawn with OpenCV only (no matplotlib). Images are float32 RGB [H, W, 3] in [0, 1]; numpy arrays or
torch tensors are accepted, numpy float32 is returned. Write them with :func:`io.images.write_png`.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["overlay", "compose_figure", "label_strip"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _image(name: str, x, channels: int | None = 3) -> np.ndarray:
    """Numpy float32 [H, W, C] (uint8 scaled to [0, 1]); NaN/inf and bad shapes raise ValueError."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim == 2 and channels == 3:
        x = np.repeat(x[:, :, None], 3, axis=2)
    want_ndim = 2 if channels is None else 3
    if x.ndim != want_ndim or (channels is not None and x.shape[2] != channels) or 0 in x.shape:
        want = "(H, W)" if channels is None else f"(H, W, {channels})"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf values")
    return x


def overlay(image, rendered, mask, alpha: float = 0.6) -> np.ndarray:
    """Blend ``rendered`` over ``image`` where ``mask`` is set: ``image (1 - a m) + rendered a m``.

    Args:
        image, rendered: [H, W, 3] in [0, 1] (float or uint8).
        mask: [H, W] bool or float coverage in [0, 1] (e.g. ``RasterResult.mask[b]``).
        alpha: opacity of the rendering in [0, 1].
    Returns:
        float32 [H, W, 3] in [0, 1].
    """
    img, ren = _image("image", image), _image("rendered", rendered)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = _image("mask", np.asarray(mask).astype(np.float32), channels=None)
    if ren.shape != img.shape or m.shape != img.shape[:2]:
        raise ValueError(f"rendered / mask: shapes {ren.shape} / {m.shape} do not match image {img.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    a = float(alpha) * np.clip(m, 0.0, 1.0)[..., None]
    return np.clip(img * (1.0 - a) + ren * a, 0.0, 1.0).astype(np.float32)


def _fit_text(text: str, width: int, height: int) -> tuple[float, int]:
    """Largest font scale (and stroke) whose text fits in ``width`` x ``height`` pixels."""
    scale = height / 30.0  # Hershey simplex is ~22 px tall at scale 1; leave room for descenders
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    if tw > width * 0.95:
        scale *= width * 0.95 / tw
    return max(scale, 0.25), max(1, int(round(scale * 1.5)))


def label_strip(text: str, width: int, height: int) -> np.ndarray:
    """A white [height, width, 3] strip with ``text`` centred in black."""
    strip = np.ones((height, width, 3), np.uint8) * 255
    scale, thick = _fit_text(text, width, height)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    org = ((width - tw) // 2, (height + th) // 2 - base // 2)
    cv2.putText(strip, text, org, _FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip.astype(np.float32) / 255.0


def compose_figure(panels, columns: int | None = None, gap: int = 4, label_height: int | None = None) -> np.ndarray:
    """Side-by-side labelled panels, e.g. ``[("input", x), ("base", b), ("final", f), ...]``.

    Args:
        panels: list of ``(label, image)``; images [H, W, 3] (or [H, W] grey) in [0, 1]. Panels are
            scaled to the first panel's height (aspect kept).
        columns: panels per row (default: all in one row); more panels wrap onto new rows, so one
            call can lay out several examples, one per row.
        gap: white pixels between panels.
        label_height: height of the label strip above each panel (default: 12% of the panel, >= 14 px).
    Returns:
        float32 [H', W', 3] in [0, 1] on a white background.
    """
    if not isinstance(panels, (list, tuple)) or not panels:
        raise ValueError("panels: expected a non-empty list of (label, image) pairs")
    for i, p in enumerate(panels):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)):
            raise ValueError(f"panels[{i}]: expected a (label, image) pair with a str label")
    imgs = [_image(f"panels[{i}] ({p[0]!r})", p[1]) for i, p in enumerate(panels)]
    h = imgs[0].shape[0]
    imgs = [np.clip(im if im.shape[0] == h else cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h),
                                                           interpolation=cv2.INTER_AREA), 0, 1) for im in imgs]
    cols = len(imgs) if columns is None else int(columns)
    if cols <= 0:
        raise ValueError(f"columns: expected a positive int, got {columns!r}")
    lh = max(14, int(0.12 * h)) if label_height is None else int(label_height)
    cells = [np.concatenate([label_strip(lbl, im.shape[1], lh), im], 0) for (lbl, _), im in zip(panels, imgs)]
    rows = [cells[i:i + cols] for i in range(0, len(cells), cols)]
    width = max(sum(c.shape[1] for c in r) + gap * (len(r) + 1) for r in rows)
    cell_h = h + lh
    out = np.ones((len(rows) * (cell_h + gap) + gap, width, 3), np.float32)
    for r, row in enumerate(rows):
        x, y = gap, gap + r * (cell_h + gap)
        for c in row:
            out[y:y + cell_h, x:x + c.shape[1]] = c
            x += c.shape[1] + gap
    return out
