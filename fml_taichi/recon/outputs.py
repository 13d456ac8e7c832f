"""What ``fml-taichi reconstruct`` writes per face and per image, and the renders behind the pictures.

Per face ``k`` of an input named ``NAME`` (files beside each other, ``PREFIX = OUT/NAME.face_KK``):

============================  ==================================================================
``PREFIX.obj`` / ``.mtl``     final mesh, model space (mm), per-vertex final reflectance as colour
``PREFIX.ply``                the same mesh as binary PLY with RGB vertex colours
``PREFIX.json`` / ``.npz``    :class:`FaceParams` (``io.exports`` formats) with ``extra``: input,
                              face index, ``bbox`` (detector box, x0 y0 x1 y1 px), ``crop_box``,
                              ``landmarks_2d`` [68, 2] (final-level landmark vertices projected into
                              the input image, x y px), ``detected_landmarks`` [68, 2], detection
                              score / confidence, intrinsics of the crop and of the image,
                              ``image_size`` [W, H], runner, checkpoint, refinement statistics
``PREFIX.figure.png``         input | base | final | reflectance | shading (crop panels)
============================  ==================================================================

Per image: ``OUT/NAME.overlay.png``, the final level of every face blended over the input with its
box and index, the detector's landmarks (red) and the reconstruction's (green). Every file is written atomically, and :class:`OutputSet` removes all files of an
input when any of them fails, so an input's outputs are all there or none are.
"""
from __future__ import annotations

import contextlib
import os

import cv2
import numpy as np
import torch

from ..io.exports import write_obj, write_params_json, write_params_npz, write_ply
from ..io.figures import compose_figure, overlay
from ..io.images import write_png
from ..ops.render import render

__all__ = ["OVERLAY_MAX_SIDE", "OutputSet", "render_layers", "face_figure", "overlay_faces", "face_extra",
           "write_face_exports", "write_image_exports", "image_output_files", "remove_stale_outputs",
           "face_visibility"]

#: Overlays of larger inputs are drawn at this longer side (rasterising 12 Mpx buffers is wasteful).
OVERLAY_MAX_SIDE = 1600
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class OutputSet:
    """Collects the files one input writes; on an exception inside ``with`` it deletes them all."""

    def __init__(self):
        self.paths: list[str] = []

    def add(self, *paths: str) -> None:
        self.paths += [os.fspath(p) for p in paths]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            for p in self.paths:
                with contextlib.suppress(OSError):
                    os.remove(p)
        return False


# ----------------------------------------------------------------------------------------------------------
# renders


def render_layers(geometry, reflectance, params, triangles, intrinsics, height: int, width: int) -> dict:
    """Render one level of a batch: ``{"shaded", "reflectance", "shading"}`` images [B, H, W, 3] (black
    background, clipped to [0, 1]) and ``"mask"`` [B, H, W] bool. Pose and SH light from ``params``;
    ``intrinsics`` [4] or [B, 4] of the target image."""
    k = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float32)
    with torch.no_grad():
        out = render(geometry.float(), triangles, k, int(height), int(width), rotation=params.rotation,
                     translation=params.translation, reflectance=reflectance.float(), light=params.light,
                     layers={"reflectance": True, "shading": True})
    return {"shaded": out.image, "reflectance": out.layers["reflectance"], "shading": out.layers["shading"],
            "mask": out.mask}


def _composite(background: np.ndarray, layer: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    m = mask.numpy()[..., None]
    return np.where(m, layer.numpy(), background).astype(np.float32)


def face_figure(result, triangles) -> np.ndarray:
    """``input | base | final | reflectance | shading`` of one :class:`FaceResult`, crop-sized panels
    (base and final shaded over the input crop; reflectance and shading on white)."""
    crop = result.crop
    s = crop.shape[0]
    o, p = result.output, result.params
    base = render_layers(o.base_geometry, o.base_reflectance, p, triangles, result.crop_intrinsics, s, s)
    final = render_layers(o.final_geometry, o.final_reflectance, p, triangles, result.crop_intrinsics, s, s)
    white = np.ones_like(crop)
    panels = [("input", crop),
              ("base", _composite(crop, base["shaded"][0], base["mask"][0])),
              ("final", _composite(crop, final["shaded"][0], final["mask"][0])),
              ("reflectance", _composite(white, final["reflectance"][0], final["mask"][0])),
              ("shading", _composite(white, final["shading"][0], final["mask"][0]))]
    return compose_figure(panels)


def _scaled_intrinsics(k: np.ndarray, factor: float) -> np.ndarray:
    """Intrinsics of the image resized by ``factor`` (pixel centres move as ``(x + 0.5) f - 0.5``)."""
    return np.array([k[0] * factor, k[1] * factor, (k[2] + 0.5) * factor - 0.5, (k[3] + 0.5) * factor - 0.5])


def overlay_faces(image: np.ndarray, results, triangles, max_side: int = OVERLAY_MAX_SIDE,
                  alpha: float = 0.7) -> np.ndarray:
    """The input with every face's final level blended in, its crop box and its index drawn on top.

    Inputs larger than ``max_side`` are shrunk first. Returns float32 [H', W', 3] in [0, 1].
    """
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    img = image if f == 1.0 else cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                                            interpolation=cv2.INTER_AREA)
    out = np.ascontiguousarray(img, dtype=np.float32)
    hh, ww = out.shape[:2]
    for r in results:
        o = r.output
        ren = render_layers(o.final_geometry, o.final_reflectance, r.params, triangles,
                            _scaled_intrinsics(r.image_intrinsics, f), hh, ww)
        out = overlay(out, ren["shaded"][0], ren["mask"][0], alpha)
    thick = max(1, round(max(hh, ww) / 500))
    canvas = (out * 255).round().astype(np.uint8)
    for i, r in enumerate(results):
        x0, y0, x1, y1 = (int(round((v + 0.5) * f - 0.5)) for v in r.detection.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 200, 0), thick, cv2.LINE_AA)
        for x, y in r.detection.landmarks * f:  # the detector's points (red) under the model's (green)
            cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 1, (255, 40, 40), -1, cv2.LINE_AA)
        for x, y in r.landmarks_2d * f:
            if not (np.isfinite(x) and np.isfinite(y) and -1e6 < x < 1e6 and -1e6 < y < 1e6):
                continue  # a mesh behind the camera projects nowhere (reconstruct warns about it)
            cv2.circle(canvas, (int(round(x)), int(round(y))), thick, (0, 255, 0), -1, cv2.LINE_AA)
        cv2.putText(canvas, str(i), (x0 + 2 * thick, max(y0 - 3 * thick, 12 * thick)), _FONT, 0.5 * thick,
                    (255, 200, 0), thick, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------------------------------------
# files


def face_extra(result, index: int, input_path: str, image_size, runner: str, checkpoint: str | None,
               frame: int | None = None) -> dict:
    """The ``extra`` metadata of a face's JSON / NPZ (module docstring)."""
    d = result.detection
    extra = {
        "input": os.fspath(input_path), "face_index": int(index), "image_size": [int(v) for v in image_size],
        "bbox": [float(v) for v in d.box], "crop_box": result.crop_box.as_list(),
        "landmarks_2d": np.asarray(result.landmarks_2d, np.float64).round(3).tolist(),
        "landmark_vertices": [int(v) for v in result.landmark_vertices],
        "detected_landmarks": np.asarray(d.landmarks, np.float64).round(3).tolist(),
        "detection": d.to_json(),
        "crop_intrinsics": [float(v) for v in result.crop_intrinsics],
        "image_intrinsics": [float(v) for v in result.image_intrinsics],
        "pose_frame": "crop camera: v_cam = R(rotation) v + translation; project with image_intrinsics "
                      "for input-image pixels",
        "runner": runner, "checkpoint": checkpoint,
    }
    if frame is not None:
        extra["frame"] = int(frame)
    extra.update(result.extra)
    return extra


def write_face_exports(prefix: str, result, triangles, extra: dict, outputs: OutputSet) -> None:
    """OBJ/MTL, PLY, JSON, NPZ and figure of one face at ``prefix`` (module docstring)."""
    geo = result.output.final_geometry[0]
    refl = result.output.final_reflectance[0].clamp(0, 1)
    tri = triangles.long()
    for path in write_obj(prefix + ".obj", geo, tri, colors=refl):
        outputs.add(path)
    outputs.add(prefix + ".ply")
    write_ply(prefix + ".ply", geo, tri, colors=refl)
    outputs.add(prefix + ".json")
    write_params_json(prefix + ".json", result.params, extra)
    outputs.add(prefix + ".npz")
    write_params_npz(prefix + ".npz", result.params, extra)
    outputs.add(prefix + ".figure.png")
    write_png(prefix + ".figure.png", face_figure(result, triangles))


def write_image_exports(out_dir: str, name: str, image: np.ndarray, results, triangles, input_path: str,
                        runner: str, checkpoint: str | None) -> list[str]:
    """Every file of one image (all faces + the overlay); all-or-nothing. Returns the paths written."""
    base = os.path.join(out_dir, *name.split("/"))
    with OutputSet() as outputs:
        for i, r in enumerate(results):
            extra = face_extra(r, i, input_path, (image.shape[1], image.shape[0]), runner, checkpoint)
            write_face_exports(f"{base}.face_{i:02d}", r, triangles, extra, outputs)
        outputs.add(base + ".overlay.png")
        write_png(base + ".overlay.png", overlay_faces(image, results, triangles))
    return outputs.paths


# ----------------------------------------------------------------------------------------------------------
# checks on what was written


#: The names :func:`write_image_exports` gives one image's files (group 1: the face index, if any).
_FACE_SUFFIX = r"(?:\.face_(\d{2,})\.(?:obj|mtl|png|ply|json|npz|figure\.png)|\.overlay\.png)"


def image_output_files(out_dir: str, name: str) -> list[str]:
    """The files in ``out_dir`` that :func:`write_image_exports` writes for the input ``name``,
    recognised by their names (``NAME.face_NN.*``, ``NAME.overlay.png``); nothing else matches."""
    import re

    base = os.path.join(out_dir, *name.split("/"))
    folder, stem = os.path.dirname(base), os.path.basename(base)
    if not os.path.isdir(folder):
        return []
    pattern = re.compile(re.escape(stem) + _FACE_SUFFIX)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if pattern.fullmatch(f))


def remove_stale_outputs(out_dir: str, name: str, keep) -> list[str]:
    """Delete the files of input ``name`` that this run did not write (``keep``): e.g. ``face_02``
    files of an earlier run that found three faces where this one found two. Returns the paths removed."""
    keep = {os.path.abspath(p) for p in keep}
    removed = []
    for path in image_output_files(out_dir, name):
        if os.path.abspath(path) not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def face_visibility(result, triangles) -> dict:
    """``{"behind_camera": bool, "visible_pixels": int}`` of a face's final mesh in its crop.

    A mesh with a vertex at or behind the camera plane (z <= 0 in the crop camera) has no valid
    projection, and one that covers no pixel gives a photometric loss of 0; both make the losses and
    errors reported for that face meaningless.
    """
    from ..reference.image_formation import euler_to_matrix

    o, p = result.output, result.params
    with torch.no_grad():
        z = (torch.bmm(o.final_geometry, euler_to_matrix(p.rotation).transpose(1, 2)) + p.translation.unsqueeze(1))[..., 2]
    s = result.crop.shape[0]
    ren = render_layers(o.final_geometry, o.final_reflectance, p, triangles, result.crop_intrinsics, s, s)
    return {"behind_camera": bool((z <= 0).any()), "visible_pixels": int(ren["mask"][0].sum())}
