"""Recover a camera pose from a target silhouette alone (a binary mask of an untextured, non-symmetric
mesh), starting 30 degrees off, by gradient descent through the differentiable raster ops.

A constant-colour mesh gives no gradient inside its silhouette: only the silhouette edges move it. The
fit runs coarse-to-fine: a SoftRas soft silhouette with a shrinking blur for the first iterations (its
gradients reach pixels a few blur radii away, so a far start still sees the target), then the
antialiased hard silhouette (Laine et al. 2020), whose minimum is at the true pose.

    python examples/fit_camera_pose.py --json runs/pose.json [--figure runs/pose.png]

Writes the JSON ``{"angle_error_deg_start", "angle_error_deg_final", "translation_error_final",
"seconds", ...}`` and a PNG of the progress (target, start, final, error curve).
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
from example_meshes import blob, rotation_angle_deg, rotation_matrix  # noqa: E402

from fml_taichi.common.atomic import write_bytes  # noqa: E402
from fml_taichi.io.figures import compose_figure  # noqa: E402
from fml_taichi.io.images import write_png  # noqa: E402
from fml_taichi.io.plots import plot_curves  # noqa: E402
from fml_taichi.ops.raster import antialias, edge_neighbours, rasterize, soft_silhouette  # noqa: E402

DISTANCE = 6.0


def make_problem(size: int = 128, start_offset_deg: float = 30.0, seed: int = 0) -> dict:
    """The mesh, camera, true pose, its silhouette (the only target) and a start rotated away from it."""
    verts, tri = blob(level=4, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    f = 1.5 * size
    K = torch.tensor([f, f, (size - 1) / 2, (size - 1) / 2])
    r_true = rotation_matrix(torch.randn(3, generator=g) * 1.0)
    t_true = torch.tensor([0.1, -0.05, DISTANCE])
    axis = torch.randn(3, generator=g)
    axis = axis / axis.norm()
    r_start = rotation_matrix(axis * math.radians(start_offset_deg)) @ r_true
    t_start = t_true + torch.tensor([0.15, 0.1, 0.3])
    target = rasterize(_camera(verts, r_true, t_true), tri, size, K).mask.float()
    return dict(verts=verts, tri=tri, K=K, size=size, r_true=r_true, t_true=t_true, r_start=r_start,
                t_start=t_start, target=target, topology=edge_neighbours(tri))


def _camera(verts: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    return (verts @ rot.t() + trans).unsqueeze(0).contiguous()


def silhouette(p: dict, rot: torch.Tensor, trans: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """[1, H, W] coverage: soft (SoftRas, blur ``sigma`` px^2) or antialiased hard (sigma None)."""
    pos = _camera(p["verts"], rot, trans)
    if sigma is not None:
        return soft_silhouette(pos, p["tri"], p["size"], p["K"], sigma=sigma)
    rast = rasterize(pos, p["tri"], p["size"], p["K"])
    return antialias(rast.mask.unsqueeze(-1).float(), rast, pos, p["tri"], p["topology"])[..., 0]


def fit(p: dict, iterations: int = 300, soft_fraction: float = 0.35, lr: float = 0.03,
        sigma_start: float = 8.0) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Adam on a rotation increment (axis-angle, applied to the start) and the translation.

    Returns the final rotation, translation and a history of dicts (iteration, loss, angle error of
    the pose the loss was evaluated at)."""
    omega = torch.zeros(3, requires_grad=True)
    trans = p["t_start"].clone().requires_grad_()
    opt = torch.optim.Adam([{"params": [omega], "lr": lr}, {"params": [trans], "lr": lr}])
    n_soft = int(iterations * soft_fraction)
    cosine = lambda i: 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * i / iterations))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    history = []
    for it in range(iterations):
        # Blur from sigma_start px^2 down to 1 px^2 over the soft phase, then the hard silhouette.
        sigma = sigma_start * (1.0 / sigma_start) ** (it / max(1, n_soft - 1)) if it < n_soft else None
        rot = rotation_matrix(omega) @ p["r_start"]
        loss = ((silhouette(p, rot, trans, sigma) - p["target"]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append({"iteration": it, "loss": float(loss.detach()), "soft": sigma is not None,
                        "angle_error_deg": rotation_angle_deg(rot.detach(), p["r_true"])})
    with torch.no_grad():
        return rotation_matrix(omega) @ p["r_start"], trans.detach(), history


def _big(img: torch.Tensor, height: int = 320) -> torch.Tensor:
    """Nearest-neighbour upscale of [H, W(, 3)] so the figure shows pixels, not a blur."""
    k = max(1, height // img.shape[0])
    return img.repeat_interleave(k, 0).repeat_interleave(k, 1)


def _overlay(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Target in green, current silhouette in magenta: white where they agree."""
    t, c = target[0].clamp(0, 1), current[0].clamp(0, 1)
    return _big(torch.stack([c, t, c], -1))


def write_figure(path: str, p: dict, rot: torch.Tensor, trans: torch.Tensor, history: list) -> None:
    with torch.no_grad():
        start = silhouette(p, p["r_start"], p["t_start"], None)
        final = silhouette(p, rot, trans, None)
    with tempfile.TemporaryDirectory() as tmp:
        curve = plot_curves(os.path.join(tmp, "curve.png"),
                            {"rotation error (deg)": [h["angle_error_deg"] for h in history]},
                            title="pose from silhouette", xlabel="iteration", ylabel="degrees", log_y=True,
                            size=(480, 320))
    panels = [("target mask", _big(p["target"][0])),
              (f"start ({history[0]['angle_error_deg']:.1f} deg)", _overlay(p["target"], start)),
              (f"final ({history[-1]['angle_error_deg']:.2f} deg)", _overlay(p["target"], final)), ("error", curve)]
    write_png(path, compose_figure(panels))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the result JSON")
    ap.add_argument("--figure", help="progress PNG (default: next to the JSON, .png)")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--size", type=int, default=128, help="image size in pixels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.size < 16:
        print("error: --iterations must be >= 1 and --size >= 16", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    p = make_problem(args.size, 30.0, args.seed)
    rot, trans, history = fit(p, args.iterations)
    seconds = time.perf_counter() - t0
    result = {"angle_error_deg_start": history[0]["angle_error_deg"],
              "angle_error_deg_final": rotation_angle_deg(rot, p["r_true"]),
              "translation_error_final": float((trans - p["t_true"]).norm()),
              "object_distance": DISTANCE, "seconds": seconds, "iterations": args.iterations,
              "size": args.size, "triangles": int(p["tri"].shape[0]), "torch_threads": torch.get_num_threads()}
    write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    write_figure(args.figure or os.path.splitext(args.json)[0] + ".png", p, rot, trans, history)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
