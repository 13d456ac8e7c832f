"""Deform a sphere to the silhouettes of a target mesh seen from 12 views, by gradient descent on the
vertex positions through the antialiased silhouettes, with a uniform Laplacian regulariser.

Only binary target masks are used (no colour, no depth). Every vertex moves freely; the Laplacian
term keeps the surface smooth where no silhouette constrains it (silhouettes determine at most the
visual hull). Reported: intersection over union of the fitted and target silhouettes (hard masks),
on the training views and on 4 held-out views.

    python examples/fit_mesh_silhouettes.py --json runs/shape.json [--figure runs/shape.png]

Writes ``{"iou_start", "iou_final", "iou_heldout_start", "iou_heldout_final", "seconds", ...}`` and
a PNG: target and fitted silhouettes of a few views before and after, and the IoU curve.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from example_meshes import blob, icosphere, mask_iou, rotation_matrix, uniform_laplacian  # noqa: E402

from fml_taichi.common.atomic import write_bytes  # noqa: E402
from fml_taichi.io.figures import compose_figure  # noqa: E402
from fml_taichi.io.images import write_png  # noqa: E402
from fml_taichi.io.plots import plot_curves  # noqa: E402
from fml_taichi.ops.raster import antialias, edge_neighbours, rasterize  # noqa: E402

DISTANCE = 6.0


def view_rotations(azimuths_deg, elevations_deg) -> torch.Tensor:
    """[V, 3, 3] object-to-camera rotations: turn by the azimuth about y, then tilt by the elevation about x."""
    rots = []
    for az, el in zip(azimuths_deg, elevations_deg):
        ry = rotation_matrix(torch.tensor([0.0, math.radians(az), 0.0]))
        rx = rotation_matrix(torch.tensor([math.radians(el), 0.0, 0.0]))
        rots.append(rx @ ry)
    return torch.stack(rots)


def make_problem(size: int = 128, level: int = 4, seed: int = 3) -> dict:
    """Target mesh, cameras (12 training views on two rings, 4 held-out), target masks, the start sphere."""
    target_v, target_f = blob(level=4, seed=seed)
    sphere_v, sphere_f = icosphere(level, radius=1.0)
    train = view_rotations([a for a in range(0, 360, 60)] * 2, [25.0] * 6 + [-25.0] * 6)
    heldout = view_rotations([30.0, 120.0, 210.0, 300.0], [0.0, 50.0, 0.0, -50.0])
    f = 1.5 * size
    K = torch.tensor([f, f, (size - 1) / 2, (size - 1) / 2])
    p = dict(size=size, K=K, train=train, heldout=heldout, target_v=target_v, target_f=target_f,
             sphere_v=sphere_v, tri=sphere_f, topology=edge_neighbours(sphere_f),
             laplacian=uniform_laplacian(sphere_v.shape[0], sphere_f))
    p["target_train"] = masks(target_v, target_f, train, p)
    p["target_heldout"] = masks(target_v, target_f, heldout, p)
    return p


def _cameras(verts: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    return (verts.unsqueeze(0) @ rots.transpose(1, 2) + torch.tensor([0.0, 0.0, DISTANCE])).contiguous()


def masks(verts, tri, rots, p) -> torch.Tensor:
    """Hard (binary) silhouettes [V, H, W] bool."""
    return rasterize(_cameras(verts, rots), tri, p["size"], p["K"]).mask


def soft_masks(verts, rots, p) -> torch.Tensor:
    """Antialiased silhouettes [V, H, W] of the sphere mesh deformed to ``verts``: differentiable."""
    pos = _cameras(verts, rots)
    rast = rasterize(pos, p["tri"], p["size"], p["K"])
    return antialias(rast.mask.unsqueeze(-1).float(), rast, pos, p["tri"], p["topology"])[..., 0]


def fit(p: dict, iterations: int = 400, smoothness: float = 4.0, lr: float = 0.01, log_every: int = 20) -> tuple:
    """Adam on per-vertex offsets; loss = mean squared silhouette error + smoothness * mean |L v|^2.

    Returns the fitted vertices and a history of dicts (iteration, loss, train IoU)."""
    offsets = torch.zeros_like(p["sphere_v"], requires_grad=True)
    opt = torch.optim.Adam([offsets], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / iterations)))
    target = p["target_train"].float()
    history = []
    for it in range(iterations):
        verts = p["sphere_v"] + offsets
        sil = ((soft_masks(verts, p["train"], p) - target) ** 2).mean()
        lap = (torch.sparse.mm(p["laplacian"], verts) ** 2).sum(1).mean()
        loss = sil + smoothness * lap
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % log_every == 0 or it == iterations - 1:
            with torch.no_grad():
                iou = mask_iou(masks(verts, p["tri"], p["train"], p), p["target_train"])
            history.append({"iteration": it, "loss": float(sil.detach()), "laplacian": float(lap.detach()), "iou": iou})
    return (p["sphere_v"] + offsets).detach(), history


def _panel(target: torch.Tensor, current: torch.Tensor, height: int = 192) -> torch.Tensor:
    """Target in green, fit in magenta (white where they agree), nearest-upscaled."""
    t, c = target.float(), current.float()
    img = torch.stack([c, t, c], -1)
    k = max(1, height // img.shape[0])
    return img.repeat_interleave(k, 0).repeat_interleave(k, 1)


def write_figure(path: str, p: dict, verts: torch.Tensor, history: list) -> None:
    start = masks(p["sphere_v"], p["tri"], p["heldout"], p)
    final = masks(verts, p["tri"], p["heldout"], p)
    with tempfile.TemporaryDirectory() as tmp:
        curve = plot_curves(os.path.join(tmp, "iou.png"), {"train-view IoU": ([h["iteration"] for h in history],
                                                                              [h["iou"] for h in history])},
                            title="silhouette IoU", xlabel="iteration", ylabel="IoU", size=(288, 192))
    panels = [(f"held-out {i} start", _panel(p["target_heldout"][i], start[i])) for i in range(2)]
    panels += [(f"held-out {i} final", _panel(p["target_heldout"][i], final[i])) for i in range(2)]
    panels.append(("IoU", curve))
    write_png(path, compose_figure(panels))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the result JSON")
    ap.add_argument("--figure", help="progress PNG (default: next to the JSON, .png)")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--size", type=int, default=128, help="image size in pixels")
    ap.add_argument("--smoothness", type=float, default=4.0, help="weight of the Laplacian term")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.size < 16 or not args.smoothness >= 0:
        print("error: --iterations must be >= 1, --size >= 16 and --smoothness >= 0", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    p = make_problem(args.size)
    verts, history = fit(p, args.iterations, args.smoothness)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        iou = lambda v, views, target: mask_iou(masks(v, p["tri"], p[views], p), p[target])  # noqa: E731
        result = {"iou_start": iou(p["sphere_v"], "train", "target_train"),
                  "iou_final": iou(verts, "train", "target_train"),
                  "iou_heldout_start": iou(p["sphere_v"], "heldout", "target_heldout"),
                  "iou_heldout_final": iou(verts, "heldout", "target_heldout"),
                  "views": int(p["train"].shape[0]), "heldout_views": int(p["heldout"].shape[0]),
                  "seconds": seconds, "iterations": args.iterations, "size": args.size,
                  "triangles": int(p["tri"].shape[0]), "smoothness": args.smoothness,
                  "torch_threads": torch.get_num_threads()}
    write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    write_figure(args.figure or os.path.splitext(args.json)[0] + ".png", p, verts, history)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
