"""Benchmark: multi-level model evaluation + E_total (every Sec. 6 term) + gradients, Taichi vs torch.

Both backends run in this process on the same inputs: ``impl="taichi"`` (the kernels) and
``impl="torch"`` (the plain-torch references). Each timed step is
``model(params) -> total_loss(...) -> total.backward()`` for a batch of synthetic 240x240 faces.

    python benchmarks/bench_model_losses.py                   # table
    python benchmarks/bench_model_losses.py --json benchmarks/results/model_losses.json
    python benchmarks/bench_model_losses.py --terms           # also per-term forward+backward times
    python benchmarks/bench_model_losses.py --balance         # the loss-weight calibration figures

``--balance`` prints how much each (unweighted) data term and E_std change when the pose or a
coefficient of a synthetic 240 px face of known parameters is perturbed: the figures behind the
default weights in ``configs/losses.yaml``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402

import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.common.atomic import atomic_path  # noqa: E402
from fml_taichi.losses import LossContext, LossWeights, default_weights, terms, total_loss  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from loss_fixtures import frontal_light, render_target  # noqa: E402  (the tests' synthetic targets)
from fml_taichi.model import FaceParams, MultiLevelModel, default_face_model  # noqa: E402


def _scene(n_vertices, batch, size, seed=0):
    fm = default_face_model(n_vertices=n_vertices)
    model = MultiLevelModel(fm, seed=seed)
    g = torch.Generator().manual_seed(seed)
    p = model.zero_params(batch)
    p.shape[:] = torch.randn(p.shape.shape, generator=g) * 0.7
    p.expression[:] = torch.randn(p.expression.shape, generator=g) * 0.3
    p.reflectance[:] = torch.randn(p.reflectance.shape, generator=g) * 0.5
    p.rotation[:] = (torch.rand(batch, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.6, 0.2])
    p.translation[:] = torch.tensor([0.0, 0.0, 500.0]) + torch.randn(batch, 3, generator=g) * 5
    p.light[:] = frontal_light(batch, 0.6, 0.3)
    target = render_target(model, p, size)
    # The state being scored: off the truth, with non-zero correctives (every term active).
    start = p.replace(rotation=p.rotation + 0.02, translation=p.translation + torch.tensor([2.0, -2.0, 8.0]),
                      delta_geometry=torch.randn(p.delta_geometry.shape, generator=g),
                      delta_reflectance=torch.randn(p.delta_reflectance.shape, generator=g))
    return fm, model, p, start, target


def _leaves(p: FaceParams) -> FaceParams:
    return FaceParams(**{k: v.detach().clone().requires_grad_() for k, v in p.as_dict().items()})


def _step(model, fm, start, target, weights, be, ctx):
    """One full step: model evaluation, E_total, backward to the parameters (and Theta if it requires grad)."""
    q = _leaves(start)
    model.zero_grad(set_to_none=True)
    out = total_loss(model(q), q, fm, target.image, target.landmarks, target.landmark_conf, target.intrinsics,
                     weights, impl=be, context=ctx)
    out["total"].backward()
    return {k: v.detach() for k, v in out.items()}


def _time_pair(fn_a, fn_b, repeats, warmup=2):
    """Median ms of ``fn_a`` and ``fn_b``, calls interleaved so that load from other processes on a
    shared machine hits both alike."""
    fns = [f for f in (fn_a, fn_b) if f is not None]
    for _ in range(warmup):  # first calls compile the Taichi kernels (and fill caches)
        for f in fns:
            f()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for f, t in zip(fns, ts):
            t0 = time.perf_counter()
            f()
            t.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in ts] + [None] * (2 - len(fns))


def _term_rows(model, fm, start, target, weights, ctx, repeats):
    """Forward + backward time (ms) of each term alone on fixed model outputs (leaves), per impl."""
    with torch.no_grad():
        out0 = model(start)
    names = ("base_geometry", "final_geometry", "base_reflectance", "final_reflectance", "geometry_corrective",
             "reflectance_corrective")
    b = start.batch_size
    ref_w = torch.rand(b, fm.neighbour_indices.shape[0], generator=torch.Generator().manual_seed(0))

    def runner(name, be):
        def run():
            q = _leaves(start)
            out = type(out0)(**{k: getattr(out0, k).clone().requires_grad_() for k in names})
            if name == "photo (2 levels)":
                v = terms.photo_term(out, q, fm, target.image, target.intrinsics, be)[0]
            elif name == "sparse (+ sliding)":
                v = terms.sparse_term(out.base_geometry, q, fm, target.landmarks, target.landmark_conf,
                                      target.intrinsics, target.image.shape[1], impl=be)
            elif name == "std":
                v = terms.std_term(q, fm, weights.w_rstd, be)
            elif name == "smo":
                v = terms.smo_term(out.geometry_corrective, fm, weights.w_smo, be)
            elif name == "ref":
                v = terms.ref_term(out.final_reflectance, ctx.neighbour_rows, fm, ref_w, weights.w_ref,
                                   weights.ref_p, weights.ref_eps, be)
            elif name == "ref weights":
                from fml_taichi.losses import compute_reflectance_weights
                compute_reflectance_weights(target.image, out.final_geometry[..., :2].detach(), fm.neighbour_offsets,
                                            fm.neighbour_indices, impl=be, neighbour_rows=ctx.neighbour_rows)
                return
            elif name == "glo":
                v = terms.glo_term(out.final_reflectance, ctx.partner_src, ctx.partner_dst, ctx.n_skin,
                                   weights.w_glo, be)
            else:
                v = terms.sta_term(out.geometry_corrective, weights.w_sta, be)
            v.sum().backward()
        return run

    rows = []
    for name in ("photo (2 levels)", "sparse (+ sliding)", "std", "smo", "ref", "ref weights", "glo", "sta"):
        rows.append((name, *_time_pair(runner(name, "taichi"), runner(name, "torch"), repeats)))
    return rows


def benchmark(n_vertices, batch, size, repeats, with_terms):
    runtime.init()
    fm, model, _, start, target = _scene(n_vertices, batch, size)
    weights = default_weights()
    ctx = LossContext.build(fm, weights)
    # Same numbers from both backends first: a benchmark of different maths would be meaningless.
    a = _step(model, fm, start, target, weights, "taichi", ctx)
    b = _step(model, fm, start, target, weights, "torch", ctx)
    worst = max(abs(float(a[k]) - float(b[k])) / max(abs(float(b[k])), 1e-6) for k in a)
    res = {}
    # Headline: the per-image step (gradients to the parameters; the corrective bases Theta fixed, as at
    # test time). Then the training step, which adds Theta's gradient: two [3N, C] GEMM outputs per step
    # in plain torch, identical in both backends.
    for key, theta_grad in (("", False), ("train_", True)):
        for prm in model.parameters():
            prm.requires_grad_(theta_grad)
        t_ti, t_th = _time_pair(lambda: _step(model, fm, start, target, weights, "taichi", ctx),
                                lambda: _step(model, fm, start, target, weights, "torch", ctx), repeats)
        res.update({f"{key}taichi_ms": round(t_ti, 2), f"{key}torch_ms": round(t_th, 2),
                    f"{key}speedup": round(t_th / t_ti, 2)})
    for prm in model.parameters():
        prm.requires_grad_(False)
    rows = _term_rows(model, fm, start, target, weights, ctx, repeats) if with_terms else []
    head = dict(device=runtime.device_name(), n_vertices=fm.n_vertices, batch=batch)
    return {**head, **res}, rows, worst, torch.get_num_threads()


def balance(n_vertices, size):
    """Print the change of E_sparse, E_photo, E_std under unit perturbations from the truth."""
    runtime.init()
    fm, model, truth, _, target = _scene(n_vertices, 1, size, seed=1)
    w = LossWeights()

    def energies(p):
        with torch.no_grad():
            d = total_loss(model(p), p, fm, target.image, target.landmarks, target.landmark_conf,
                           target.intrinsics, w)
        return {k: float(d[k]) for k in ("sparse", "photo", "std")}

    e0 = energies(truth)

    def moved(field, index, step):
        out = []
        for s in (1.0, -1.0):  # symmetric average: removes the first-order part
            t = getattr(truth, field).clone()
            t.view(-1)[index] += s * step
            e = energies(truth.replace(**{field: t}))
            out.append({k: e[k] - e0[k] for k in e})
        return {k: (out[0][k] + out[1][k]) / 2 for k in e0}

    cases = [("rotation y 1 deg", "rotation", 1, math.radians(1)), ("rotation x 1 deg", "rotation", 0, math.radians(1)),
             ("translation x 1 mm", "translation", 0, 1.0), ("translation z 10 mm", "translation", 2, 10.0)]
    cases += [(f"shape[{k}] 1 sigma", "shape", k, 1.0) for k in (0, 1, 5, 20)]
    cases += [("expression[0] 1 sigma", "expression", 0, 1.0), ("reflectance[0] 1 sigma", "reflectance", 0, 1.0)]
    print(f"truth: E_sparse {e0['sparse']:.3g}  E_photo {e0['photo']:.4f}  E_std {e0['std']:.2f}  "
          f"({fm.n_vertices} vertices, {size} px)")
    print(f"{'perturbation':24s} {'dE_sparse':>10s} {'dE_photo':>10s} {'ratio':>8s} {'dE_std':>8s}")
    for name, field, idx, step in cases:
        d = moved(field, idx, step)
        ratio = d["sparse"] / d["photo"] if abs(d["photo"]) > 1e-9 else float("nan")
        print(f"{name:24s} {d['sparse']:10.4f} {d['photo']:10.4f} {ratio:8.1f} {d['std']:8.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-vertices", type=int, default=None, help="model size (default: default_face_model's)")
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--size", type=int, default=240, help="image size (px)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--terms", action="store_true", help="also time each term alone")
    ap.add_argument("--balance", action="store_true", help="print the loss-weight calibration figures and exit")
    ap.add_argument("--json", metavar="PATH", help="write the headline figures as JSON")
    args = ap.parse_args(argv)
    if args.balance:
        balance(args.n_vertices or 20000, args.size)
        return
    res, rows, worst, threads = benchmark(args.n_vertices, args.batch, args.size, args.repeats, args.terms)
    print(f"device: {res['device']}, torch threads: {threads}")
    print(f"model evaluation + E_total + backward, batch {res['batch']}, {res['n_vertices']} vertices, {args.size} px, "
          f"median of {args.repeats} (backends agree to {worst:.1e} relative)")
    print(f"{'step':42s} {'torch ms':>10s} {'taichi ms':>10s} {'speedup':>8s}")
    print(f"{'fit step (grads to params, Theta fixed)':42s} {res['torch_ms']:10.2f} {res['taichi_ms']:10.2f} "
          f"{res['speedup']:8.2f}")
    print(f"{'training step (+ grad of Theta, torch GEMM)':42s} {res['train_torch_ms']:10.2f} "
          f"{res['train_taichi_ms']:10.2f} {res['train_speedup']:8.2f}")
    if rows:
        print("\nper term alone, forward + backward on fixed model outputs (ms):")
        print(f"{'term':42s} {'torch ms':>10s} {'taichi ms':>10s} {'speedup':>8s}")
        for name, a, b in rows:
            print(f"{name:42s} {b:10.2f} {a:10.2f} {b / a:8.2f}")
    if args.json:
        with atomic_path(args.json) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(res, f, indent=2)
                f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
