"""Is the geometry beyond the base model observable in the training images? (why the geometry
corrective stays frozen in the default run)

On held-out synthetic faces of a checkpoint's own training distribution, measures the geometric error
(mm, face region, similarity-aligned; ``losses.metrics.geometric_error``) of:

* ``base``: the checkpoint's base level (the baseline every other row is divided by);
* ``oracle smooth K``: the base plus the *true* residual projected onto the K smoothest mesh functions
  (the span the geometry corrective lives in, ``model.geometry_smooth``): what a perfect estimate of
  the corrective coefficients would reach;
* ``photometric fit``: the base plus a smooth displacement (K = 60, x/y/z) fitted to the image by Adam
  on the photometric term E_photo of the final level, pose and light free, reflectance coefficients
  re-fitted every 10 steps (``recon.corrective_fit``): the signal an encoder trained with E_photo sees;
* ``truth test``: start from the true geometry *minus* its out-of-space offset, with the true pose,
  light and reflectance, and fit the same displacement photometrically. If E_photo carried the
  geometry, this fit would walk towards the truth. The table also gives E_photo at the start, at the
  truth, and after the fit: when the fit ends below the truth's own E_photo, the term prefers a wrong
  geometry, and no photometric method recovers the truth from these images;
* ``normal-only``: the hypothesis that the per-vertex loss cheats by sliding vertices in the image
  plane while a re-fitted reflectance absorbs the shading. The displacement is a scalar smooth field
  (K = 60) along the mean face's normals (the direction the generator's region fields move the
  surface, so the true out-of-space offset is in this family), pose and light held, the reflectance
  held at the truth's or at the base level's (no re-fit), scored per vertex (E_photo) or per pixel
  (the l2,1 colour error of :func:`fml_taichi.ops.render.render`'s image over the true face mask:
  per-vertex shading interpolated over the triangles, the raster held constant, exactly as the
  synthetic images are drawn). From the in-space truth with the true pose, light and reflectance,
  and from the base level with its own.

Usage: ``python benchmarks/bench_geometry_signal.py [--faces 16] [--steps 100] --json OUT``
(~2-4 minutes on 2 cores). Results: ``benchmarks/results/geometry_signal.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from fml_taichi.common.atomic import write_text
from fml_taichi.data.synthetic import EVAL_SEED_START, SyntheticRenderer
from fml_taichi.eval.harness import face_region
from fml_taichi.losses import default_weights, terms
from fml_taichi.losses.metrics import geometric_error, umeyama
from fml_taichi.model import ModelOutput
from fml_taichi.model import mesh as mesh_utils
from fml_taichi.model.smooth_corrective import smooth_basis
from fml_taichi.ops.render import render
from fml_taichi.nets.config import synthetic_config
from fml_taichi.recon.corrective_fit import fitted_reflectance_coefficients
from fml_taichi.recon.pipeline import default_checkpoint
from fml_taichi.recon.reconstructor import Reconstructor

SMOOTH_SIZES = (60, 150, 300)
FIT_K = 60
LR = {"displacement": 0.003, "normal": 0.03, "light": 0.005, "rotation": 0.002, "translation": 0.2}
#: Ridge weight on the displacement coefficients (mm^2), per face: weak, so the fit shows what E_photo wants.
PRIOR = 1e-3


def mean_error(geometry: np.ndarray, truth: np.ndarray, triangles, region) -> float:
    return float(np.mean([geometric_error(geometry[i], truth[i], triangles, region).mean for i in range(len(truth))]))


def oracle_projection(base: np.ndarray, truth: np.ndarray, basis: np.ndarray, region) -> np.ndarray:
    """The base plus the true residual (truth aligned into each base's frame) projected, per coordinate
    and by least squares over the face region, onto the columns of ``basis`` [N, K]."""
    out = base.copy()
    for i in range(len(base)):
        aligned = umeyama(truth[i][region], base[i][region]).apply(truth[i])
        coef = np.linalg.lstsq(basis[region], (aligned - base[i])[region], rcond=None)[0]
        out[i] = base[i] + basis @ coef
    return out


def photometric_fit(start, reflectance_of, params, face_model, images, intrinsics, basis, steps, free_pose):
    """``start`` [B, N, 3] plus ``basis`` [N, K] @ c [B, K, 3] with c fitted by Adam on E_photo (+ a weak
    ridge); pose and light too when ``free_pose``. ``reflectance_of(geometry, params)`` gives the
    reflectance to shade with. Returns (geometry, E_photo at the start, E_photo at the end)."""
    w = default_weights()
    c = torch.zeros(start.shape[0], basis.shape[1], 3, requires_grad=True)
    free = {"light": params.light.clone(), "rotation": params.rotation.clone(), "translation": params.translation.clone()}
    groups = [{"params": [c], "lr": LR["displacement"]}]
    if free_pose:
        for name, t in free.items():
            t.requires_grad_(True)
            groups.append({"params": [t], "lr": LR[name]})
    opt = torch.optim.Adam(groups)
    losses = []
    for it in range(steps + 1):
        geometry = start + torch.einsum("nk,bkj->bnj", basis, c)
        p = params.replace(**free)
        if it % 10 == 0:
            reflectance = reflectance_of(geometry.detach(), p)
        e_photo = terms.level_photo(geometry, reflectance, p, face_model, images, intrinsics, "taichi",
                                    w.photo_visibility).loss.mean()
        losses.append(float(e_photo.detach()))
        if it == steps:
            break
        loss = e_photo + PRIOR * c.square().sum() / start.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return geometry.detach(), losses[0], losses[-1]


def pixel_photo(geometry, reflectance, params, face_model, images, intrinsics, mask):
    """Per-pixel l2,1 colour error [B] of the rendered level over ``mask`` [B, H, W] (raster constant)."""
    b, h, w, _ = images.shape
    out = render(geometry, face_model.triangles, intrinsics, h, w, rotation=params.rotation,
                 translation=params.translation, reflectance=reflectance, light=params.light, background=images)
    m = (out.raster.mask & mask).float()
    err = (out.image - images).norm(dim=-1)
    return (err * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)


def normal_fit(start, normals, reflectance, params, face_model, images, intrinsics, basis, steps, loss, mask):
    """``start + normals * (basis @ h)`` with the scalar field h [B, K] fitted by Adam on the per-vertex
    (``loss="vertex"``, E_photo) or per-pixel (``"pixel"``) colour error; pose, light and reflectance held.
    Returns (geometry, loss at the start, loss at the end)."""
    w = default_weights()
    h = torch.zeros(start.shape[0], basis.shape[1], requires_grad=True)
    opt = torch.optim.Adam([h], lr=LR["normal"])
    values = []
    for it in range(steps + 1):
        geometry = start + normals * (h @ basis.T).unsqueeze(-1)
        if loss == "vertex":
            e = terms.level_photo(geometry.contiguous(), reflectance, params, face_model, images, intrinsics,
                                  "taichi", w.photo_visibility).loss.mean()
        else:
            e = pixel_photo(geometry, reflectance, params, face_model, images, intrinsics, mask).mean()
        values.append(float(e.detach()))
        if it == steps:
            break
        opt.zero_grad()
        (e + PRIOR * h.square().sum() / start.shape[0]).backward()
        opt.step()
    return geometry.detach(), values[0], values[-1]


def normal_rows(b, out, params, fm, images, k, basis, steps, err, e_truth):
    """The normal-only rows (module docstring): from the in-space truth and from the base level."""
    v = fm.mean_geometry.detach().double().numpy()
    normals = torch.as_tensor(mesh_utils.vertex_normals(v, fm.triangles.long().numpy()), dtype=torch.float32)
    gt_p, gt_r, mask = b["gt_params"], b["gt_reflectance"].float(), b["face_mask"]
    in_space = (b["gt_vertices"] - b["gt_geometry_offset"]).float()
    truth = b["gt_vertices"].float().contiguous()
    pixel_truth = float(pixel_photo(truth, gt_r, gt_p, fm, images, k, mask).mean())
    rows = []
    starts = (("in-space truth, true pose/light/reflectance", in_space, gt_r, gt_p),
              ("base level, its pose/light, true reflectance", out.base_geometry, gt_r, params),
              ("base level, its pose/light/reflectance", out.base_geometry, out.final_reflectance.detach(), params))
    for label, start, refl, p in starts:
        for loss in ("vertex", "pixel"):
            g, l0, l1 = normal_fit(start, normals, refl.contiguous(), p, fm, images, k, basis, steps, loss, mask)
            rows.append({"row": f"normal-only fit from the {label}, per-{loss} loss", "geom_mm": err(g),
                         "e_photo_start": l0, "e_photo_end": l1,
                         "e_photo_truth": e_truth if loss == "vertex" else pixel_truth})
    return rows


def image_signal(b, fm, images, k) -> dict:
    """How much the out-of-space geometry and reflectance change the image: mean RGB distance over the
    true face mask between renderings (true pose and light, no noise or blur) with and without each
    offset, beside the input's own deviation from the noise-free rendering of the truth."""
    p, mask = b["gt_params"], b["face_mask"]
    truth, refl = b["gt_vertices"].float().contiguous(), b["gt_reflectance"].float().contiguous()

    def draw(geometry, reflectance):
        return render(geometry.contiguous(), fm.triangles, k, images.shape[1], images.shape[2], rotation=p.rotation,
                      translation=p.translation, reflectance=reflectance.contiguous(), light=p.light,
                      background=images).image

    def dist(x, y):
        return float((x - y).norm(dim=-1)[mask].mean())

    clean = draw(truth, refl)
    return {"geometry_offset_rgb": dist(clean, draw(truth - b["gt_geometry_offset"].float(), refl)),
            "reflectance_offset_rgb": dist(clean, draw(truth, refl - b["gt_reflectance_offset"].float())),
            "input_vs_clean_truth_rgb": dist(clean, images)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--faces", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--clean", action="store_true",
                    help="render without sensor noise, blur and hair (is the loss or the image the limit?)")
    ap.add_argument("--no-normal", action="store_true", help="skip the normal-only rows")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    rec = Reconstructor.from_checkpoint(a.checkpoint or default_checkpoint())
    fm, ml = rec.face_model, rec.multilevel
    scfg = synthetic_config(rec.config)
    if a.clean:
        scfg = dataclasses.replace(scfg, noise_sd=0.0, blur_px=0.0, hair_probability=0.0)
    renderer = SyntheticRenderer(fm, scfg)
    region, tri = face_region(fm), fm.triangles.cpu().numpy()
    b = renderer.render(list(range(EVAL_SEED_START, EVAL_SEED_START + a.faces)))
    k, images, truth = b["intrinsics"][0], b["image"].contiguous(), b["gt_vertices"].numpy()
    with torch.no_grad():
        params, out = rec.reconstruct(images, b["landmarks"], k)
    err = lambda g: mean_error(np.asarray(g), truth, tri, region)  # noqa: E731
    base = out.base_geometry.numpy()
    rows = [{"row": "base level (baseline)", "geom_mm": err(base)}]
    for size in SMOOTH_SIZES:
        e = smooth_basis(fm.triangles, fm.n_vertices, size).double().numpy()
        rows.append({"row": f"oracle smooth K={size}", "geom_mm": err(oracle_projection(base, truth, e, region))})
    basis = smooth_basis(fm.triangles, fm.n_vertices, FIT_K)

    def fitted_reflectance(geometry, p):
        o = ModelOutput(base_geometry=geometry, final_geometry=geometry, base_reflectance=out.base_reflectance,
                        final_reflectance=out.base_reflectance, geometry_corrective=torch.zeros_like(geometry),
                        reflectance_corrective=torch.zeros_like(geometry))
        delta = fitted_reflectance_coefficients(ml, p, o, images, k, rec.reflectance_prior or 0.01)
        return (out.base_reflectance + ml.reflectance_corrective(delta)).detach()

    g, l0, l1 = photometric_fit(out.base_geometry, fitted_reflectance, params, fm, images, k, basis, a.steps, True)
    rows.append({"row": f"photometric fit from the base (K={FIT_K}, pose and light free)", "geom_mm": err(g),
                 "e_photo_start": l0, "e_photo_end": l1})
    # The truth test: everything but the out-of-space geometry is the truth.
    gt_p, gt_r = b["gt_params"], b["gt_reflectance"].float()
    in_space = (b["gt_vertices"] - b["gt_geometry_offset"]).float()
    w = default_weights()
    e_truth = float(terms.level_photo(b["gt_vertices"].float().contiguous(), gt_r, gt_p, fm, images, k, "taichi",
                                      w.photo_visibility).loss.mean())
    g, l0, l1 = photometric_fit(in_space, lambda *_: gt_r, gt_p, fm, images, k, basis, a.steps, False)
    rows.append({"row": "truth test: in-space truth, true pose/light/reflectance", "geom_mm": err(in_space.numpy())})
    rows.append({"row": f"truth test: + photometric fit (K={FIT_K})", "geom_mm": err(g), "e_photo_start": l0,
                 "e_photo_end": l1, "e_photo_truth": e_truth})
    signal = image_signal(b, fm, images, k)
    if not a.no_normal:
        rows += normal_rows(b, out, params, fm, images, k, basis, a.steps, err, e_truth)
    baseline = rows[0]["geom_mm"]
    for r in rows:
        r["x_base"] = r["geom_mm"] / baseline
    result = {"checkpoint": a.checkpoint or "shipped default", "faces": a.faces, "steps": a.steps, "clean": a.clean,
              "out_of_space_rms_mm": float(b["gt_geometry_offset"].norm(dim=-1).square().mean().sqrt()),
              "image_signal": signal, "rows": rows, "seconds": time.time() - t0}
    write_text(a.json, json.dumps(result, indent=1) + "\n")
    print(f"{'row':<92} {'geom mm':>8} {'x base':>7}  loss start -> end (truth)")
    for r in rows:
        photo = ""
        if "e_photo_start" in r:
            photo = f"{r['e_photo_start']:.4f} -> {r['e_photo_end']:.4f}"
            if "e_photo_truth" in r:
                photo += f" ({r['e_photo_truth']:.4f})"
        print(f"{r['row']:<92} {r['geom_mm']:>8.3f} {r['x_base']:>7.3f}  {photo}")
    print("image change (mean RGB distance over the face): " + ", ".join(f"{k} {v:.4f}" for k, v in signal.items()))


if __name__ == "__main__":
    main()
