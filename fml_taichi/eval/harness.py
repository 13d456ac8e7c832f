"""The evaluation harness (paper Sec. 7.2): score a reconstruction method on held-out synthetic faces
(with ground truth) or on user images with ``.pts`` landmark files, base and final level side by side.

Per image and level (``base``, ``final``):

* ``geom_mm``: mean point-to-surface distance (mm) from the predicted face-region vertices to the
  ground-truth mesh after similarity alignment (:func:`metrics.geometric_error`; synthetic only);
* ``photo``: mean RGB distance over the face region between the input and the reconstruction
  rendered with its own pose and light (rasterised and shaded; region = pixels the reconstruction
  covers, intersected with the ground-truth face mask when there is one);
* ``nme``: mean landmark distance / outer-eye-corner distance. Predicted landmarks are the
  reconstruction's landmark vertices projected as a detector sees them (jaw points on the outline,
  :func:`fml_taichi.data.landmark_noise.detector_vertices`); targets are the noise-free synthetic
  landmarks, or the annotation for user images.

The summary (:func:`summarise`) has the keys ``n, geom_mm_base, geom_mm_final, geom_sd_base,
geom_sd_final, photo_base, photo_final, nme_base, nme_final``: means over images, and for geometry
the SD over images of the per-image mean error (as Tab. 1 reports SD over meshes). Values that cannot
be measured (geometry on user images) are None.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.camera import default_intrinsics
from ..data import landmark_noise
from ..data.synthetic import EVAL_SEED_START, SyntheticConfig, SyntheticRenderer
from ..io.figures import compose_figure, label_strip
from ..io.images import load_image, write_png
from ..io.plots import plot_bars
from ..io.pts import read_pts
from ..losses import metrics
from ..model import regions
from ..ops.render import render
from ..reference.image_formation import SH_C0

LEVELS = ("base", "final")
#: Held-out sets: name -> first seed. "heldout" draws from the training distribution (the config's
#: own region-field family) on evaluation seeds; "heldout_alt" swaps the geometry beyond the base for
#: another field family (:data:`ALT_FIELD_FAMILY`: RBF bumps <-> region-wise exaggeration of the face's
#: own identity modes) on seeds disjoint from both, so correctives fitted to one generator's habits show up.
HELDOUT_SETS = {"heldout": EVAL_SEED_START, "heldout_alt": EVAL_SEED_START + 5_000_000}
#: The field family "heldout_alt" uses for a training family (faces without fields get RBF fields).
ALT_FIELD_FAMILY = {"none": "rbf", "rbf": "exaggerate", "exaggerate": "rbf"}


def heldout_config(name: str, config: SyntheticConfig | None = None) -> tuple[SyntheticConfig, int]:
    """(config, first seed) of held-out set ``name`` (:data:`HELDOUT_SETS`), other settings from ``config``."""
    if name not in HELDOUT_SETS:
        raise ValueError(f"heldout: expected one of {sorted(HELDOUT_SETS)}, got {name!r}")
    config = config or SyntheticConfig()
    if name == "heldout":
        return config, HELDOUT_SETS[name]
    return dataclasses.replace(config, fields=ALT_FIELD_FAMILY[config.fields]), HELDOUT_SETS[name]
SUMMARY_KEYS = ("n", "geom_mm_base", "geom_mm_final", "geom_sd_base", "geom_sd_final", "photo_base",
                "photo_final", "nme_base", "nme_final")


def face_region(face_model) -> np.ndarray:
    """[N] bool: the vertices the geometric error is measured on.

    The face oval of the mean face in the face parametrisation: inside the jaw line (landmarks 0-16)
    closed upwards by a forehead line 0.6 x (brow-to-nose-bottom distance) above the brows, the usual
    hairline (the same construction as the model's skin mask, without its exclusions). Ears, neck and
    the mesh border, which no monocular method constrains, stay out.
    """
    v = face_model.mean_geometry.detach().double().cpu().numpy()
    lms = face_model.landmarks.long().cpu().numpy()
    p = regions.face_parametrisation(v, v[lms[30]])
    lm = p[lms]
    brow_top = lm[17:27, 1].min()
    forehead = brow_top - 0.6 * (lm[33, 1] - brow_top)
    oval = np.concatenate([lm[:17], [[lm[16, 0], forehead]], [[lm[0, 0], forehead]]])
    return regions.inside_polygon(p, oval)


# ----------------------------------------------------------------------------------------------
# Rendering a reconstruction


@dataclass
class Rendered:
    """A level rendered with its predicted pose and light: image over the input, mask, landmarks."""

    image: torch.Tensor  # [B, H, W, 3]
    mask: torch.Tensor  # [B, H, W] bool
    landmarks: torch.Tensor  # [B, 68, 2] as a detector would mark them on this rendering


def render_level(face_model, vertices: torch.Tensor, reflectance: torch.Tensor, params, intrinsics: torch.Tensor,
                 background: torch.Tensor) -> Rendered:
    """Rasterise and SH-shade one level of a reconstruction over ``background`` [B, H, W, 3]."""
    b, h, w, _ = background.shape
    p = params
    out = render(vertices.detach().float(), face_model.triangles, intrinsics, h, w, rotation=p.rotation.detach().float(),
                 translation=p.translation.detach().float(), reflectance=reflectance.detach().float(),
                 light=p.light.detach().float(), background=background.float())
    v_cam, normals, raster, image = out.mesh.v_cam, out.mesh.normals, out.raster, out.image
    view = landmark_noise.detector_vertices(v_cam, normals, raster.depth, intrinsics, face_model)
    return Rendered(image=image, mask=raster.mask, landmarks=view.uv)


# ----------------------------------------------------------------------------------------------
# Scoring


@dataclass
class EvalResult:
    """Per-image records (one dict per image) and their :func:`summarise` summary."""

    records: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)  # a few (label, image) panel rows for the figure


def score_batch(face_model, rec, images, intrinsics, target_landmarks, region, gt_vertices=None,
                gt_mask=None, iod_weights=None) -> tuple[list[dict], dict]:
    """Score one batch of reconstructions; returns (records, renderings per level).

    ``rec``: a :class:`~fml_taichi.eval.methods.Reconstruction`. ``target_landmarks`` [B, 68, 2];
    ``gt_vertices`` [B, N, 3] (synthetic) or None; ``gt_mask`` [B, H, W] bool or None;
    ``iod_weights`` [B, 68] landmark weights for the NME (e.g. 0 for missing annotations).
    """
    out = rec.output
    b = images.shape[0]
    records = [dict() for _ in range(b)]
    rendered = {}
    tris = face_model.triangles
    for level in LEVELS:
        geo = getattr(out, f"{level}_geometry")
        r = render_level(face_model, geo, getattr(out, f"{level}_reflectance"), rec.params, intrinsics, images)
        rendered[level] = r
        mask = r.mask if gt_mask is None else (r.mask & gt_mask)
        photo = metrics.photometric_error(r.image, images, mask)
        nme = metrics.landmark_nme(r.landmarks, target_landmarks, iod_weights)
        for i in range(b):
            records[i][f"photo_{level}"] = float(photo[i])
            records[i][f"nme_{level}"] = float(nme[i])
            if gt_vertices is not None:
                g = metrics.geometric_error(geo[i], gt_vertices[i], tris, region=region)
                records[i][f"geom_mm_{level}"] = g.mean
                records[i][f"geom_point_sd_{level}"] = g.sd
    return records, rendered


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _sd(values) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.std(v)) if v else None


def summarise(records: list[dict]) -> dict:
    """The summary dict (:data:`SUMMARY_KEYS` plus photo/NME SDs) of per-image records."""
    s = {"n": len(records)}
    for level in LEVELS:
        geo = [r.get(f"geom_mm_{level}") for r in records]
        s[f"geom_mm_{level}"] = _mean(geo)
        s[f"geom_sd_{level}"] = _sd(geo)
        for key in ("photo", "nme"):
            vals = [r.get(f"{key}_{level}") for r in records]
            s[f"{key}_{level}"] = _mean(vals)
            s[f"{key}_sd_{level}"] = _sd(vals)
    return s


def format_table(summary: dict, title: str = "") -> str:
    """A plain-text table: one row per metric, base and final side by side, mean +- SD."""
    def cell(key, level, sd_key):
        m, sd = summary.get(f"{key}_{level}"), summary.get(f"{sd_key}_{level}")
        if m is None:
            return "n/a"
        return f"{m:.4f} +- {sd:.4f}" if sd is not None else f"{m:.4f}"

    rows = [("geometric error (mm)", "geom_mm", "geom_sd"), ("photometric error (RGB)", "photo", "photo_sd"),
            ("landmark NME (inter-ocular)", "nme", "nme_sd")]
    lines = [title] if title else []
    lines.append(f"{'metric':<30}{'base':>22}{'final':>22}")
    lines.append("-" * 74)
    for name, key, sd_key in rows:
        lines.append(f"{name:<30}{cell(key, 'base', sd_key):>22}{cell(key, 'final', sd_key):>22}")
    lines.append(f"images: {summary.get('n', 0)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Figures


def write_summary_plot(path, summary: dict, title: str = "") -> np.ndarray:
    """One PNG: a bar chart per metric (geometry mm, photometric, NME), base vs final."""


    panels = []
    charts = [("geometric error (mm)", "geom_mm"), ("photometric error (RGB)", "photo"), ("landmark NME", "nme")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, key in charts:
            vals = {lvl: summary.get(f"{key}_{lvl}") for lvl in LEVELS}
            vals = {k: v for k, v in vals.items() if v is not None}
            if not vals:
                continue
            img = plot_bars(os.path.join(tmp, f"{key}.png"), {name: vals}, title=name, ylabel=name, size=(360, 320))
            panels.append(("", img))
    if not panels:
        raise ValueError("summary: no metric has a value to plot")
    fig = compose_figure(panels, label_height=2)
    if title:
        fig = np.concatenate([label_strip(title, fig.shape[1], 28), fig], 0)
    write_png(path, fig)
    return fig


def _error_colours(dist_mm: np.ndarray, vmax: float = 5.0) -> np.ndarray:
    """Per-vertex RGB in [0, 1] of distances through a blue (0) -> red (vmax mm) colour map."""

    u8 = np.clip(dist_mm / vmax * 255, 0, 255).astype(np.uint8).reshape(-1, 1)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)[:, 0, ::-1].astype(np.float32) / 255.0


def example_panels(face_model, rec, rendered, images, i: int, region, gt_vertices=None, gt_image=None,
                   intrinsics=None) -> list:
    """Panels of image ``i``: input, base, final and (synthetic) per-vertex error maps of both levels."""
    panels = [("input", images[i]), ("base", rendered["base"].image[i]), ("final", rendered["final"].image[i])]
    if gt_vertices is None:
        return panels
    tris = face_model.triangles
    white = torch.ones_like(images[i:i + 1])
    for level in LEVELS:
        geo = getattr(rec.output, f"{level}_geometry")[i]
        g = metrics.geometric_error(geo, gt_vertices[i], tris, region=region)
        colours = np.full((face_model.n_vertices, 3), 0.7, np.float32)  # grey: outside the measured region
        colours[region] = _error_colours(g.distances)
        colours = torch.as_tensor(colours).unsqueeze(0)
        # Light-independent error map: unit ambient light, colours = error colour map.
        light = torch.zeros(1, 9, 3)
        light[0, 0] = 1.0 / SH_C0
        params = rec.params.index(i).replace(light=light)
        r = render_level(face_model, geo.unsqueeze(0), colours, params, intrinsics, white)
        panels.append((f"{level} error 0-5 mm", r.image[0]))
    return panels


# ----------------------------------------------------------------------------------------------
# Evaluation drivers


def evaluate(method, n: int = 20, seed_start: int = EVAL_SEED_START, batch_size: int = 4,
             config: SyntheticConfig | None = None, n_examples: int = 3, progress: bool = True,
             heldout: str | None = None) -> EvalResult:
    """Score ``method`` on ``n`` held-out synthetic faces (seeds ``seed_start ..``; default the
    evaluation range, disjoint from training's).

    The ground truth is rendered with the method's own face model (same topology, so the similarity
    alignment uses vertex correspondences). Returns an :class:`EvalResult`; the first ``n_examples``
    images also yield figure panels. ``heldout``: a name of :data:`HELDOUT_SETS`, which sets the
    faces' region-field family and (overriding ``seed_start``) the seeds.
    """
    if heldout is not None:
        config, seed_start = heldout_config(heldout, config)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if seed_start < EVAL_SEED_START:
        raise ValueError(f"seed_start: {seed_start} lies in the training seed range (< {EVAL_SEED_START}); "
                         "evaluate on held-out seeds")
    renderer = SyntheticRenderer(method.face_model, config)
    region = face_region(method.face_model)
    result = EvalResult()
    with tqdm(total=n, desc=f"eval {method.name}", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            seeds = list(range(seed_start + start, seed_start + min(n, start + batch_size)))
            batch = renderer.render(seeds)
            k = batch["intrinsics"][0]
            rec = method(batch["image"], batch["landmarks"], batch["landmark_conf"], k)
            records, rendered = score_batch(method.face_model, rec, batch["image"], k, batch["gt_landmarks"],
                                            region, gt_vertices=batch["gt_vertices"], gt_mask=batch["face_mask"])
            for i, r in enumerate(records):
                r["seed"] = seeds[i]
                if len(result.examples) < n_examples:
                    result.examples.append(example_panels(method.face_model, rec, rendered, batch["image"], i, region,
                                                          batch["gt_vertices"], intrinsics=k))
            result.records.extend(records)
            bar.update(len(seeds))
    result.summary = summarise(result.records)
    return result


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def find_image_pairs(folder) -> list[tuple[str, str]]:
    """(image, .pts) path pairs in ``folder``: every image with a same-stem ``.pts`` file.

    Raises FileNotFoundError for a missing folder and ValueError when no pair is found (naming how
    many images and .pts files were seen).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    names = sorted(os.listdir(folder))
    images = [f for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
    pts = {os.path.splitext(f)[0]: f for f in names if f.lower().endswith(".pts")}
    pairs = [(os.path.join(folder, f), os.path.join(folder, pts[os.path.splitext(f)[0]]))
             for f in images if os.path.splitext(f)[0] in pts]
    if not pairs:
        raise ValueError(f"{folder}: no image with a matching .pts landmark file "
                         f"({len(images)} images, {len(pts)} .pts files)")
    return pairs


def load_image_pair(image_path: str, pts_path: str, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image resized to ``size`` x ``size`` and its landmarks scaled to match (pixel centres stay
    centres: ``x' = (x + 0.5) s - 0.5``). Returns (image [H, W, 3], landmarks [68, 2], weights [68]).

    Expected input: square face crops like the training crops; other aspect ratios are resized to
    square (landmarks follow, so the metrics stay consistent, but the face is stretched).
    """
    pts, conf = read_pts(pts_path)
    h, w = load_image(image_path).shape[:2]  # the one image reader (clear errors, BGR fixed)
    img = load_image(image_path, size)
    scale = np.array([size / w, size / h], np.float32)
    lm = (pts + 0.5) * scale - 0.5
    return torch.as_tensor(img), torch.as_tensor(lm), torch.as_tensor(conf)


def evaluate_images(method, folder, image_size: int = 240, batch_size: int = 4, n_examples: int = 3,
                    progress: bool = True) -> EvalResult:
    """Score ``method`` on user images with ``.pts`` files (:func:`find_image_pairs`): photometric
    error over the reconstruction's rendered face and NME against the annotation; no geometry."""
    pairs = find_image_pairs(folder)
    k = default_intrinsics(image_size)
    region = face_region(method.face_model)
    result = EvalResult()
    with tqdm(total=len(pairs), desc=f"eval {method.name} (images)", unit="img", disable=not progress) as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            loaded = [load_image_pair(i, p, image_size) for i, p in chunk]
            images = torch.stack([x[0] for x in loaded]).contiguous()
            lms = torch.stack([x[1] for x in loaded])
            conf = torch.stack([x[2] for x in loaded])
            rec = method(images, lms, conf, k)
            records, rendered = score_batch(method.face_model, rec, images, k, lms, region, iod_weights=conf)
            for i, r in enumerate(records):
                r["image"] = chunk[i][0]
                if len(result.examples) < n_examples:
                    result.examples.append(example_panels(method.face_model, rec, rendered, images, i, region))
            result.records.extend(records)
            bar.update(len(chunk))
    result.summary = summarise(result.records)
    return result


def write_examples(path, result: EvalResult) -> np.ndarray | None:
    """The example rows of ``result`` as one PNG (None if there are none)."""

    if not result.examples:
        return None
    cols = max(len(row) for row in result.examples)
    panels = []
    for row in result.examples:
        panels.extend(row + [("", np.ones_like(np.asarray(row[0][1])))] * (cols - len(row)))
    fig = compose_figure(panels, columns=cols)
    write_png(path, fig)
    return fig
