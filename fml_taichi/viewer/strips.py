"""Headless viewer output: PNG strips of the corrective modes, rendered by GGUI without a display.

For each of the first K geometry and reflectance corrective modes (``corrective_modes``) we render the
face at -3 .. +3 standard deviations along the mode and lay the images out as one labelled strip:

* geometry modes in two rows: the "shading" view (irradiance only, white reflectance: a shape change
  is easiest to see without albedo on top), and the "corrective" view, which colours the offset along
  the normal (red out, blue in, saturating at ``view_scene.CORRECTIVE_RANGE_MM``), since a few
  millimetres are hard to see in shading alone;
* reflectance modes in the "reflectance" view: the albedo change itself, without shading.

Files written to the output folder (every write atomic):

* ``geometry_mode_<k>.png``, ``reflectance_mode_<k>.png`` (k from 1): one strip per mode;
* ``corrective_modes.png``: all strips stacked, one row per mode (the README figure);
* ``overview.png``: the start face as base / final level and in every view;
* ``modes.json``: per kind the singular values, sigmas, sigma source and one-sigma offset norms of
  the modes drawn, and the file list (so a figure can be traced back to numbers).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..common.atomic import write_text
from ..io.figures import compose_figure, label_strip
from ..io.images import write_png
from .ggui import GGUIRenderer
from .scene import CORRECTIVE_RANGE_MM, VIEWS, FaceScene, ViewState

#: The sigma values of a strip.
DEFAULT_SIGMAS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
#: Which views show each kind of mode (one strip row each; see the module docstring).
DEFAULT_VIEW = {"geometry": ("shading", "corrective"), "reflectance": ("reflectance",)}
KINDS = ("geometry", "reflectance")
#: Panel labels of the rows after the first (which shows the sigma values).
ROW_LABEL = {"corrective": "red out / blue in"}


def mode_state(scene: FaceScene, kind: str, k: int, sigmas: float, view: str) -> ViewState:
    """The start face moved ``sigmas`` standard deviations along corrective mode ``k`` (0-based), final level."""
    state = scene.initial_state()
    amounts = state.geometry_modes if kind == "geometry" else state.reflectance_modes
    if not 0 <= k < amounts.shape[0]:
        raise ValueError(f"k: {kind} mode index must be in [0, {amounts.shape[0]}), got {k}")
    amounts[k] = sigmas
    state.view, state.final = view, True
    return state


def mode_strip(scene: FaceScene, renderer: GGUIRenderer, kind: str, k: int, sigmas=DEFAULT_SIGMAS,
               views=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one mode at each of ``sigmas`` in each of ``views`` (one row per view; default
    ``DEFAULT_VIEW[kind]``): (labelled strip image, list of the raw images, row by row)."""
    views = tuple(views or DEFAULT_VIEW[kind])
    images, panels = [], []
    for row, view in enumerate(views):
        for s in sigmas:
            im = renderer.render(scene.frame(mode_state(scene, kind, k, s, view)), with_mask=False).image
            images.append(im)
            # The first row says how far along the mode; later rows say what they show.
            panels.append(((f"{s:+g} sigma" if s else "0") if row == 0 else ROW_LABEL.get(view, view), im))
    return compose_figure(panels, columns=len(sigmas)), images


def overview(scene: FaceScene, renderer: GGUIRenderer) -> np.ndarray:
    """The start face: base and final level shaded, then the final level in the other views."""
    panels = []
    for final in (False, True):
        st = scene.initial_state()
        st.final = final
        panels.append(("final" if final else "base", renderer.render(scene.frame(st), with_mask=False).image))
    for view in VIEWS[1:4]:  # reflectance, shading, normals (the corrective view is in the strips)
        st = scene.initial_state()
        st.view = view
        panels.append((view, renderer.render(scene.frame(st), with_mask=False).image))
    return compose_figure(panels)


def write_headless(scene: FaceScene, out_dir: str, n_modes: int = 3, size: int = 192, sigmas=DEFAULT_SIGMAS,
                   views: dict | None = None) -> dict:
    """Render the strips and overview of ``scene`` into ``out_dir`` (see the module docstring).

    Args:
        scene: the model to show.
        out_dir: output folder (created if missing).
        n_modes: K, how many modes of each kind (fewer if the model has fewer); 0 writes only the overview.
        size: panel size in pixels (square).
        sigmas: the amounts of each strip, in standard deviations.
        views: optional {"geometry": views, "reflectance": views} (a view name or a sequence of them,
            one strip row each) overriding ``DEFAULT_VIEW``.

    Returns:
        The dict written to ``modes.json`` (paths relative to ``out_dir`` under "files").
    Raises:
        RuntimeError (with the Vulkan hint) where GGUI cannot run; ValueError for bad arguments.
    """
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 0:
        raise ValueError(f"n_modes: expected an int >= 0, got {n_modes!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise ValueError(f"size: expected an int in [16, 4096] pixels, got {size!r}")
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas or not all(np.isfinite(sigmas)):
        raise ValueError(f"sigmas: expected a non-empty list of finite numbers, got {sigmas!r}")
    views = {**DEFAULT_VIEW, **(views or {})}
    views = {kind: (v,) if isinstance(v, str) else tuple(v) for kind, v in views.items()}
    for kind, vs in views.items():
        if kind not in KINDS or not vs or any(v not in VIEWS for v in vs):
            raise ValueError(f"views: expected {{kind: views}} with kind in {KINDS} and views from {VIEWS}, "
                             f"got {kind!r}: {vs!r}")
    os.makedirs(out_dir, exist_ok=True)

    summary = {"sigmas": list(sigmas), "views": {k: list(v) for k, v in views.items()},
               "corrective_range_mm": CORRECTIVE_RANGE_MM, "files": []}
    rows = []
    with GGUIRenderer(scene.triangles, scene.face_model.n_vertices, size, size) as renderer:
        _save(out_dir, "overview.png", overview(scene, renderer), summary)
        for kind in KINDS:
            modes = scene.modes(kind)
            summary[kind] = _describe(modes, n_modes)
            for k in range(min(n_modes, modes.count) if modes is not None else 0):
                strip, _ = mode_strip(scene, renderer, kind, k, sigmas, views[kind])
                _save(out_dir, f"{kind}_mode_{k + 1}.png", strip, summary)
                rows.append((f"{kind} mode {k + 1}", strip))
    if rows:
        _save(out_dir, "corrective_modes.png", _stack(rows), summary)
    write_text(os.path.join(out_dir, "modes.json"), json.dumps(summary, indent=1) + "\n")
    return summary


def _describe(modes, n: int) -> dict:
    if modes is None:
        return {"count": 0, "note": "no learned correctives of this kind"}
    k = min(n, modes.count)
    return {
        "count": modes.count,
        "sigma_source": modes.sigma_source,
        "singular_values": [float(x) for x in modes.singular_values[:k]],
        "sigma": [float(x) for x in modes.sigma[:k]],
        "one_sigma_norm": [float(x) for x in modes.one_sigma_norm[:k]],
    }


def _stack(rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Strips one under another, each with its name in a white band on the left."""
    band = 130
    width = max(s.shape[1] for _, s in rows)
    out = []
    for name, strip in rows:
        h = strip.shape[0]
        # Text sized for the band's width (label_strip fits it), centred vertically in the row.
        label = label_strip(name, band, min(h, 28))
        top = (h - label.shape[0]) // 2
        left = np.ones((h, band, 3), np.float32)
        left[top:top + label.shape[0]] = label
        right = np.ones((h, width - strip.shape[1], 3), np.float32)
        out.append(np.concatenate([left, strip, right], axis=1))
    return np.concatenate(out, axis=0)


def _save(out_dir: str, name: str, image: np.ndarray, summary: dict) -> None:
    write_png(os.path.join(out_dir, name), image)
    summary["files"].append(name)
