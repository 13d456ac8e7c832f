"""Global skin-colour modes from published skin-colour measurements (sources and numbers: docs/skin_tone.md).

The base reflectance space of the default model is a smooth field around one albedo, tan
``(0.72, 0.52, 0.42)``, with a one-sigma brightness change of 0.08: dark skin sits many sigmas away
and a grey face (a greyscale photo) is outside any plausible range. The colour fit therefore adds
three *global* modes, one colour for the whole face, with a prior measured on people:

1. **skin colour points** in CIELAB (D65): five measured cluster centroids of facial skin (120
   subjects, four population groups, spectroradiometer) for the dark-to-medium range, and the
   light end along Chardon's individual typology angle (ITA°) category boundaries at the chroma of
   the lightest measured cluster (:data:`SKIN_LAB`);
2. converted to the values an sRGB camera records (the space the image formation compares with:
   images enter the loss as they are, so the model's albedo lives in encoded sRGB too);
3. their mean and principal axes give mode 1 (dark to light) and mode 2 (warm to cool), each scaled
   to one standard deviation of the points; mode 3 is **grey**: the mean's colour removed at equal
   luminance, with ``GREY_SD`` = 0.5 (a fully grey face is two sigmas away: reachable when the image
   demands it, expensive otherwise).

:func:`skin_modes` returns them; :func:`constant_colour_coefficients` maps a constant RGB offset into
the model's own reflectance coefficients (exact for our models, whose basis holds a constant mode
per colour axis), which keeps ``FaceParams.reflectance`` and every checkpoint unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SKIN_LAB", "GREY_SD", "SkinModes", "skin_modes", "lab_to_srgb", "constant_colour_coefficients",
           "ita_degrees"]

#: CIELAB (L*, a*, b*) skin colours (docs/skin_tone.md). First five: measured cluster centroids of
#: facial skin; last three: the ITA° boundaries 28, 41 and 55 degrees (intermediate, light, very
#: light) at the a*, b* of the lightest measured cluster, L* = 50 + b* tan(ITA).
SKIN_LAB = np.array([
    [52.5, 17.0, 18.9],
    [37.7, 17.2, 14.7],
    [49.4, 22.0, 12.3],
    [41.5, 25.5, 13.3],
    [26.7, 14.6, 14.7],
    [50.0 + 18.9 * np.tan(np.radians(28.0)), 17.0, 18.9],
    [50.0 + 18.9 * np.tan(np.radians(41.0)), 17.0, 18.9],
    [50.0 + 18.9 * np.tan(np.radians(55.0)), 17.0, 18.9],
])
GREY_SD = 0.5
#: Rec. 709 / sRGB luminance weights (of the encoded values: a grey of equal luminance looks as bright).
LUMA = np.array([0.2126, 0.7152, 0.0722])
_D65 = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                                [-0.9692660, 1.8760108, 0.0415560],
                                [0.0556434, -0.2040259, 1.0572252]])


def ita_degrees(lab) -> np.ndarray:
    """Individual typology angle ``atan((L* - 50) / b*)`` in degrees, per row of [K, 3] Lab."""
    lab = np.atleast_2d(np.asarray(lab, np.float64))
    return np.degrees(np.arctan2(lab[:, 0] - 50.0, lab[:, 2]))


def lab_to_srgb(lab) -> np.ndarray:
    """CIELAB (D65) -> encoded sRGB in [0, 1] (clipped), per row of [K, 3]."""
    lab = np.atleast_2d(np.asarray(lab, np.float64))
    fy = (lab[:, 0] + 16.0) / 116.0
    f = np.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], 1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    lin = np.clip(xyz @ _XYZ_TO_LINEAR_SRGB.T, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


@dataclass(frozen=True)
class SkinModes:
    """mean [3] encoded sRGB; modes [3, 3] rows = RGB change per unit coefficient (dark-light,
    warm-cool, grey); each coefficient has prior N(0, 1)."""

    mean: np.ndarray
    modes: np.ndarray


def skin_modes(lab=SKIN_LAB, grey_sd: float = GREY_SD) -> SkinModes:
    """The three global colour modes of the module docstring."""
    rgb = lab_to_srgb(lab)
    mean = rgb.mean(0)
    _, sing, vt = np.linalg.svd(rgb - mean, full_matrices=False)
    sd = sing / np.sqrt(max(len(rgb) - 1, 1))
    axes = vt[:2] * sd[:2, None]
    axes *= np.sign(axes.sum(1, keepdims=True))  # mode 1: towards light skin; mode 2: its sign fixed too
    grey = (mean @ LUMA) * np.ones(3) - mean
    return SkinModes(mean=mean, modes=np.stack([axes[0], axes[1], grey * grey_sd]))


def constant_colour_coefficients(face_model) -> tuple[np.ndarray, float]:
    """``(M [m_r, 3], residual)``: reflectance coefficients ``M @ c`` whose field is closest to the
    constant colour offset ``c`` (RGB) at every vertex, and the RMS misfit of that fit for unit
    offsets (0 when the basis holds constants, as the default model's first modes do)."""
    basis = face_model.reflectance_basis.detach().double().cpu().numpy()  # [N, 3, m]
    n, _, m = basis.shape
    a = basis.reshape(3 * n, m)
    target = np.tile(np.eye(3), (n, 1))  # [3N, 3]: unit offset per channel
    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
    residual = float(np.sqrt(((a @ coef - target) ** 2).mean()))
    return coef, residual
