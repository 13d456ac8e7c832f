"""Headless viewer output: PNG strips of the corrective modes, rendered by GGUI without a display.

For each of the first K geometry and reflectance corrective modes (``corrective_modes``) we render the
face at -3 .. +3 standard deviations along the mode and lay the images out as one labelled strip:

* geometry modes in the "shading" view (irradiance only, white reflectance): a shape change is
  easiest to see without albedo on top;
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

from ..io.atomic import write_text
from ..io.figures import compose_figure, label_strip
from ..io.images import write_png
from .view_scene import VIEWS, FaceScene, ViewState
from .viewer import GGUIRenderer

#: The sigma values of a strip.
DEFAULT_SIGMAS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
#: Which view shows each kind of mode best (see the module docstring).
DEFAULT_VIEW = {"geometry": "shading", "reflectance": "reflectance"}
KINDS = ("geometry", "reflectance")


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
               view: str | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one mode at each of ``sigmas``: (labelled strip image, list of the raw images)."""
    view = view or DEFAULT_VIEW[kind]
    images = [renderer.render(scene.frame(mode_state(scene, kind, k, s, view)), with_mask=False).image for s in sigmas]
    panels = [(f"{s:+g} sigma" if s else "0", im) for s, im in zip(sigmas, images)]
    return compose_figure(panels), images


def overview(scene: FaceScene, renderer: GGUIRenderer) -> np.ndarray:
    """The start face: base and final level shaded, then the final level in the other views."""
    panels = []
    for final in (False, True):
        st = scene.initial_state()
        st.final = final
        panels.append(("final" if final else "base", renderer.render(scene.frame(st), with_mask=False).image))
    for view in VIEWS[1:]:
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
        views: optional {"geometry": view, "reflectance": view} overriding ``DEFAULT_VIEW``.

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
    for kind, view in views.items():
        if kind not in KINDS or view not in VIEWS:
            raise ValueError(f"views: expected {{kind: view}} with kind in {KINDS} and view in {VIEWS}, got {kind!r}: {view!r}")
    os.makedirs(out_dir, exist_ok=True)

    summary = {"sigmas": list(sigmas), "views": views, "files": []}
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
