"""``--refine N``: per-image analysis-by-synthesis on top of the encoder's answer (paper Sec. 6 losses).

Starting from the regressed parameters, Adam (:func:`fml_taichi.recon.fit.fit`) updates *all* of them (shape, expression, reflectance,
both corrective coefficient vectors, pose, SH light) for ``N`` steps on the training objective
``E_total`` (:func:`fml_taichi.losses.total_loss`): the photometric term on the crop, the sparse
landmark term on the detector's landmarks (weighted by its confidence), and every regulariser. The
learned corrective spaces (Theta) stay fixed: refinement fits one image, it does not retrain the model.

The iterate with the lowest ``E_total`` is kept (never worse than the start by that measure), and
the improvement is reported, per face, as before/after values of ``E_total``, the photometric error
(mean RGB distance over the rendered face, :func:`fml_taichi.losses.metrics.photometric_error`) and the
landmark NME of the final level against the detector's landmarks.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.crop import CropBox
from ..losses import default_weights, total_loss
from ..losses.metrics import landmark_nme, photometric_error
from ..model import FaceParams, ModelOutput
from .fit import fit
from .outputs import render_layers
from .pipeline import FaceResult, landmarks_in_image

__all__ = ["LR", "refine_results", "measure"]

#: Adam step sizes per parameter, in its own units (radians, mm, basis sigmas, SH coefficients,
#: corrective coefficients): half of the from-scratch fitter's (``eval.methods.FitMethod``), since
#: refinement starts close to the answer.
LR = {"rotation": 0.01, "translation": 1.0, "shape": 0.05, "expression": 0.05, "reflectance": 0.05,
      "light": 0.025, "delta_geometry": 0.025, "delta_reflectance": 0.025}


#: Lowest landmark confidence refinement uses (a low detector score says little about the points).
LANDMARK_CONF_FLOOR = 0.5
#: A face whose landmark NME refinement raises above ``before * (1 + NME_SLACK) + NME_SLACK_ABS``
#: keeps its start: refinement must not move a reconstruction away from the detected landmarks.
NME_SLACK = 0.1
NME_SLACK_ABS = 0.002


def _stack(results) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, FaceParams]:
    images = torch.from_numpy(np.stack([r.crop for r in results]).astype(np.float32)).contiguous()
    landmarks = torch.from_numpy(np.stack([r.detected_landmarks_crop for r in results])).float().contiguous()
    # A face kept for its plausible landmarks despite a low detector score still anchors refinement.
    conf = torch.from_numpy(np.stack([np.maximum(r.detection.landmark_conf, LANDMARK_CONF_FLOOR)
                                      for r in results])).float().contiguous()
    params = FaceParams(**{n: torch.cat([getattr(r.params, n) for r in results]).detach().clone()
                           for n in FaceParams.names()})
    return images, landmarks, conf, params


@torch.no_grad()
def measure(params: FaceParams, output: ModelOutput, face_model, images, landmarks, conf, intrinsics,
            weights=None) -> dict[str, np.ndarray]:
    """Per-face ``loss`` (E_total of each face alone), ``photo_error`` and ``landmark_nme`` (module docstring)."""
    b, s = images.shape[0], images.shape[1]
    loss = []
    for i in range(b):  # E_total is a batch mean: evaluate each face alone to report per-face values
        oi = ModelOutput(**{k: v[i:i + 1] for k, v in vars(output).items()})
        ki = intrinsics[i] if intrinsics.ndim == 2 else intrinsics
        loss.append(float(total_loss(oi, params.index(i), face_model, images[i:i + 1], landmarks[i:i + 1],
                                     conf[i:i + 1], ki, weights)["total"]))
    ren = render_layers(output.final_geometry, output.final_reflectance, params, face_model.triangles, intrinsics, s, s)
    photo = photometric_error(ren["shaded"], images, ren["mask"]).numpy()
    identity = CropBox((s - 1) / 2, (s - 1) / 2, float(s))  # crop -> crop: landmarks stay in crop pixels
    lm, _ = landmarks_in_image(output, params, face_model, landmarks.numpy(), intrinsics.numpy(), identity, s)
    nme = landmark_nme(lm, landmarks.numpy())
    return {"loss": np.asarray(loss), "photo_error": photo, "landmark_nme": nme}


def refine_results(results, multilevel, iterations: int, weights=None, progress: bool = False) -> list:
    """Refine every face of ``results`` (a list of :class:`~fml_taichi.recon.pipeline.FaceResult`
    from one image) jointly for ``iterations`` Adam steps; returns new results whose ``extra["refine"]``
    holds the before/after statistics (module docstring)."""
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations: expected a non-negative int, got {iterations!r}")
    if not results or iterations == 0:
        return list(results)
    weights = default_weights() if weights is None else weights
    fm = multilevel.face_model
    images, landmarks, conf, start = _stack(results)
    k = torch.as_tensor(np.stack([r.crop_intrinsics for r in results]), dtype=torch.float32).contiguous()
    with torch.no_grad():
        out0 = multilevel(start)
    before = measure(start, out0, fm, images, landmarks, conf, k, weights)

    def evaluate(free):
        params = FaceParams(**free)
        return multilevel(params), params

    with tqdm(total=iterations, desc=f"refine {len(results)} face(s)", unit="it", disable=not progress,
              leave=False) as bar:
        best = FaceParams(**fit(evaluate, {n: t.clone() for n, t in start.as_dict().items()}, LR, fm, images,
                                landmarks, conf, k, iterations, weights, keep_best=True, bar=bar, stage="refine"))

    with torch.no_grad():
        out = multilevel(best)
    after = measure(best, out, fm, images, landmarks, conf, k, weights)
    worse = after["landmark_nme"] > before["landmark_nme"] * (1 + NME_SLACK) + NME_SLACK_ABS
    if worse.any():
        keep = torch.from_numpy(worse)
        best = FaceParams(**{n: torch.where(keep.view(-1, *[1] * (t.ndim - 1)), getattr(start, n), t)
                             for n, t in best.as_dict().items()})
        with torch.no_grad():
            out = multilevel(best)
        after = measure(best, out, fm, images, landmarks, conf, k, weights)
    s = images.shape[1]
    refined = []
    for i, r in enumerate(results):
        p = best.index(i)
        o = ModelOutput(**{name: v[i:i + 1].detach() for name, v in vars(out).items()})
        lm, idx = landmarks_in_image(o, p, fm, landmarks[i:i + 1].numpy(), r.crop_intrinsics, r.crop_box, s)
        stats = {"iterations": iterations, "kept_start": bool(worse[i])}
        for key in before:
            stats[f"{key}_before"] = float(before[key][i])
            stats[f"{key}_after"] = float(after[key][i])
        refined.append(FaceResult(r.detection, r.crop_box, r.crop, p, o, r.crop_intrinsics, r.image_intrinsics,
                                  lm[0], idx[0], {**r.extra, "refine": stats}))
    return refined
