"""Can the encoder read the geometry beyond the base model from these images at all? (the teacher's
upper bound; synthetic 3D supervision, not the paper's self-supervision)

On faces of a checkpoint's training distribution, the target of every row is the *true* residual of
the landmark start's geometry (truth aligned into the start's frame by a similarity over the face
region, minus the start), fitted in the K = 60 smoothest mesh functions (the span of the default's
geometry corrective, ``model.geometry_smooth``). Rows, geometric error (mm, face region, as the
evaluation measures it) of start + predicted residual, and its ratio to the start:

* ``oracle``: the true coefficients (what a perfect regressor reaches);
* ``ridge ...``: a linear map (ridge, GCV) from what the heads read (the checkpoint encoder's image
  features, the start's z, or both) to the coefficients, fitted on the training faces (what
  ``stage2.geometry_warm_start`` gives the geometry head);
* ``fine-tuned``: the checkpoint's backbone and a fresh zero-initialised head trained on E_teacher
  alone (:mod:`fml_taichi.losses.teacher`'s squared mm over the face region), Adam with a cosine
  decay, batch 8: the most any training of this encoder with the teacher could get in that budget.

Held-out sets: ``heldout`` (the training distribution on evaluation seeds) and ``heldout_alt`` (the
other field family, ``eval.harness.heldout_config``), plus 32 of the training faces (fit vs transfer).

Usage: ``python benchmarks/bench_geometry_teacher.py [--train 2000] [--faces 32] [--steps 1000]
[--input-size 112] --json OUT`` (~6 minutes on 2 cores at the defaults).
Results: ``benchmarks/results/geometry_teacher.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from fml_taichi.common.atomic import write_text
from fml_taichi.data.synthetic import TRAIN_SEED_START, SyntheticRenderer
from fml_taichi.eval.harness import face_region, heldout_config
from fml_taichi.losses.metrics import geometric_error
from fml_taichi.model.smooth_corrective import smooth_basis
from fml_taichi.nets.config import synthetic_config
from fml_taichi.recon.pipeline import default_checkpoint
from fml_taichi.recon.reconstructor import Reconstructor
from fml_taichi.train.warm_start import ridge_gcv, true_geometry_residuals

K = 60


def collect(rec, cfg, seeds, solve, region, batch=16):
    """(uint8 aligned crops, start z, true coefficients [n, K, 3], start geometry, true geometry)."""
    renderer = SyntheticRenderer(rec.face_model, cfg)
    crops, zs, coefs, starts, truths = [], [], [], [], []
    for s in tqdm(range(0, len(seeds), batch), desc="render + landmark start", leave=False):
        b = renderer.render(seeds[s:s + batch])
        inp = rec.preparer(b["image"], b["landmarks"], b["intrinsics"][0])
        p = inp.start
        with torch.no_grad():
            g, _ = rec.face_model.base(p.shape, p.expression, p.reflectance)
        r = true_geometry_residuals(g, b["gt_vertices"].float(), region).double()
        coefs.append(torch.einsum("kr,brj->bkj", solve, r[:, region]).float())
        crops.append((inp.images * 255).round().to(torch.uint8))
        zs.append(inp.start_z)
        starts.append(g.double().numpy())
        truths.append(b["gt_vertices"].double().numpy())
    return torch.cat(crops), torch.cat(zs), torch.cat(coefs), np.concatenate(starts), np.concatenate(truths)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3, help="head learning rate")
    ap.add_argument("--backbone-lr", type=float, default=1e-3)
    ap.add_argument("--input-size", type=int, default=0, help="encoder input size (0: the checkpoint's)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    t0 = time.time()
    rec = Reconstructor.from_checkpoint(a.checkpoint or default_checkpoint())
    fm, enc = rec.face_model, rec.encoder
    if rec.preparer is None or not rec.preparer.with_start:
        raise SystemExit("error: the checkpoint's encoder must read the landmark start (encoder.input: image+start)")
    scfg = synthetic_config(rec.config)
    region = torch.as_tensor(face_region(fm))
    tri = fm.triangles.numpy()
    basis = smooth_basis(fm.triangles, fm.n_vertices, K).double()
    solve = torch.linalg.pinv(basis[region])  # [K, R] least squares in the smooth span
    e_region = basis[region].float()
    train = collect(rec, scfg, list(range(TRAIN_SEED_START, TRAIN_SEED_START + a.train)), solve, region)
    sets = {}
    for name in ("heldout", "heldout_alt"):
        cfg, s0 = heldout_config(name, scfg)
        sets[name] = collect(rec, cfg, list(range(s0, s0 + a.faces)), solve, region)
    sets["training faces"] = tuple(x[:a.faces] for x in train)
    data_s = time.time() - t0

    def error(start, coef, truth):
        geo = start + torch.einsum("nk,bkj->bnj", basis, coef.double()).numpy()
        return float(np.mean([geometric_error(geo[i], truth[i], tri, region.numpy()).mean for i in range(len(geo))]))

    def score(predict) -> dict:
        out = {}
        for name, (crops, zs, coefs, starts, truths) in sets.items():
            base = error(starts, torch.zeros_like(coefs), truths)
            got = error(starts, predict(crops, zs, coefs), truths)
            out[name] = {"start_mm": base, "mm": got, "x_start": got / base}
        return out

    rows = [{"row": f"oracle (true coefficients, K={K})", **score(lambda c, z, coef: coef)}]
    with torch.no_grad():
        feats = lambda crops, zs: torch.cat([enc.backbone(enc.preprocess(crops[s:s + 32].float().div(255).permute(0, 3, 1, 2)))  # noqa: E731
                                             for s in range(0, len(crops), 32)])
        f_train = torch.cat([feats(train[0], train[1]), train[1]], 1)
        f_sets = {name: torch.cat([feats(v[0], v[1]), v[1]], 1) for name, v in sets.items()}
    n_img = f_train.shape[1] - train[1].shape[1]
    for label, cols in (("ridge on image features + start z (the warm start's head)", slice(None)),
                        ("ridge on the start z only", slice(n_img, None)), ("ridge on the image features only", slice(0, n_img))):
        w, b, _ = ridge_gcv(f_train[:, cols], train[2].reshape(len(f_train), -1))
        lookup = {id(v[0]): f_sets[k] for k, v in sets.items()}
        rows.append({"row": label, **score(lambda c, z, coef: (lookup[id(c)][:, cols] @ w + b).reshape(-1, K, 3))})

    if a.input_size:
        enc.input_size = a.input_size
    backbone = enc.backbone
    for p in backbone.parameters():
        p.requires_grad_(True)
    head = torch.nn.Linear(f_train.shape[1], 3 * K)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam([{"params": backbone.parameters(), "lr": a.backbone_lr}, {"params": head.parameters(), "lr": a.lr}])

    def predict(crops, zs):
        f = backbone(enc.preprocess(crops.float().div(255).permute(0, 3, 1, 2)))
        return head(torch.cat([f, zs], 1)).view(-1, K, 3)

    def predict_eval(crops, zs, _coef):
        backbone.eval()
        with torch.no_grad():
            out = torch.cat([predict(crops[s:s + 16], zs[s:s + 16]) for s in range(0, len(crops), 16)])
        backbone.train()
        return out

    g = torch.Generator().manual_seed(0)
    t_train = time.time()
    losses = []
    for step in tqdm(range(1, a.steps + 1), desc="fine-tune on E_teacher", leave=False):
        idx = torch.randint(0, len(train[0]), (8,), generator=g)
        d = torch.einsum("rk,bkj->brj", e_region, predict(train[0][idx], train[1][idx]) - train[2][idx])
        loss = d.square().sum(-1).mean()
        factor = 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for group, lr in zip(opt.param_groups, (a.backbone_lr, a.lr)):
            group["lr"] = lr * factor
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    size = a.input_size or rec.config.encoder.input_size
    rows.append({"row": f"fine-tuned on E_teacher ({a.steps} steps, {size} px input)", **score(predict_eval),
                 "train_loss_first_last_100": [float(np.mean(losses[:100])), float(np.mean(losses[-100:]))]})
    result = {"checkpoint": a.checkpoint or "shipped default", "train_faces": a.train, "faces": a.faces,
              "steps": a.steps, "lr": a.lr, "backbone_lr": a.backbone_lr, "input_size": size, "rows": rows,
              "data_s": data_s, "fine_tune_s": time.time() - t_train, "seconds": time.time() - t0}
    write_text(a.json, json.dumps(result, indent=1) + "\n")
    names = list(sets)
    print(f"{'row':<62}" + "".join(f"{n + ' x start':>24}" for n in names))
    for r in rows:
        print(f"{r['row']:<62}" + "".join(f"{r[n]['x_start']:>24.3f}" for n in names))
    print("start mm: " + ", ".join(f"{n} {rows[0][n]['start_mm']:.3f}" for n in names))


if __name__ == "__main__":
    main()
