"""Per-face quality figures written into each face's JSON, and the ``--report`` table over inputs.

* ``detector_score``: the detector's raw score (dlib HOG margin; None for annotated landmarks);
* ``yaw_deg`` / ``pitch_deg`` / ``roll_deg``: the head pose (``ry``, ``rx``, ``rz`` of the Euler
  angles, docs/conventions.md) in degrees;
* ``landmark_nme``: NME of the reconstruction's 68 landmark vertices (final level, jaw on the
  silhouette) against the detector's points, normalised by the detected outer-eye-corner distance;
* ``photo_error_base`` / ``photo_error_final``: mean RGB distance between the rendered base / final
  level and the crop over the rendered face region (:func:`fml_taichi.losses.metrics.photometric_error`).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["face_quality", "format_report"]


def face_quality(result, triangles) -> dict:
    """The figures of the module docstring for one :class:`~fml_taichi.recon.pipeline.FaceResult`."""
    from .outputs import render_layers
    from ..losses.metrics import landmark_nme, photometric_error

    p, o = result.params, result.output
    s = result.crop.shape[0]
    crop = torch.from_numpy(np.ascontiguousarray(result.crop, np.float32))[None]
    out = {}
    for level in ("base", "final"):
        ren = render_layers(getattr(o, f"{level}_geometry"), getattr(o, f"{level}_reflectance"), p, triangles,
                            result.crop_intrinsics, s, s)
        err = photometric_error(ren["shaded"], crop, ren["mask"])
        out[f"photo_error_{level}"] = None if not np.isfinite(float(err[0])) else round(float(err[0]), 5)
    rx, ry, rz = np.degrees(p.rotation[0].double().numpy())
    score = result.detection.score
    return {"detector_score": float(score) if np.isfinite(score) else None,
            "yaw_deg": round(float(ry), 2), "pitch_deg": round(float(rx), 2), "roll_deg": round(float(rz), 2),
            "landmark_nme": round(float(landmark_nme(result.landmarks_2d, result.detection.landmarks)[0]), 5), **out}


def format_report(records: list[dict]) -> str:
    """A text table with one row per face of every input (``records`` as in summary.json)."""
    head = (f"{'input':<28} {'face':>4} {'score':>6} {'yaw':>6} {'pitch':>6} {'roll':>6} {'NME':>7} "
            f"{'NME ref':>8} {'photo b':>8} {'photo f':>8}")
    lines = [head, "-" * len(head)]
    for rec in records:
        for i, q in enumerate(rec.get("quality", [])):
            ref = q.get("landmark_nme_refined")
            cell = lambda v, w, f: (f"{v:{w}{f}}" if isinstance(v, (int, float)) else f"{'-':>{w}}")  # noqa: E731
            lines.append(f"{rec['name'][-28:]:<28} {i:>4} {cell(q['detector_score'], 6, '.2f')} "
                         f"{cell(q['yaw_deg'], 6, '.1f')} {cell(q['pitch_deg'], 6, '.1f')} {cell(q['roll_deg'], 6, '.1f')} "
                         f"{cell(q['landmark_nme'], 7, '.4f')} {cell(ref, 8, '.4f')} "
                         f"{cell(q['photo_error_base'], 8, '.4f')} {cell(q['photo_error_final'], 8, '.4f')}")
    return "\n".join(lines)
