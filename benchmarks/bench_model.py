"""Benchmark the multi-level model evaluation (base 3DMM + correctives, Eq. 1-4), same process.

Compares our path (``MultiLevelModel``: torch ``addmm`` on [3N, m] views of the bases, linear or MLP
correctives) with a naive per-vertex ``einsum`` baseline of the same maths, forward and forward +
backward (gradients to all coefficients and to Theta, as in training). Float32, the default model
decimated to ``--n`` vertices, batch ``--batch``, C = ``--c`` correctives each. Median of ``--runs``
after ``--warmup``; implementations alternate so load from other processes skews all alike.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_model.py --n 20000 --batch 8
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its pool (see fml_taichi.common.runtime)

import torch  # noqa: E402

from fml_taichi.model import FaceParams, MultiLevelModel, default_face_model  # noqa: E402


def einsum_baseline(mm: MultiLevelModel, p: FaceParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-4 written per vertex with einsum (the obvious implementation)."""
    fm = mm.face_model
    geo = (fm.mean_geometry + torch.einsum("bk,nck->bnc", p.shape, fm.shape_basis)
           + torch.einsum("bk,nck->bnc", p.expression, fm.expression_basis))
    refl = fm.mean_reflectance + torch.einsum("bk,nck->bnc", p.reflectance, fm.reflectance_basis)
    theta_g = mm.geometry_corrective.theta.view(fm.n_vertices, 3, -1)
    theta_r = mm.reflectance_corrective.theta.view(fm.n_vertices, 3, -1)
    return (geo + torch.einsum("bk,nck->bnc", p.delta_geometry, theta_g),
            refl + torch.einsum("bk,nck->bnc", p.delta_reflectance, theta_r))


def params(mm: MultiLevelModel, batch: int) -> FaceParams:
    g = torch.Generator().manual_seed(0)
    p = mm.zero_params(batch)
    return p.replace(**{k: torch.randn(v.shape, generator=g).requires_grad_() for k, v in p.as_dict().items()})


def timed(fn, runs: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="vertices of the decimated default model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--c", type=int, default=500, help="corrective size C (geometry and reflectance)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    fm = default_face_model(n_vertices=args.n)
    models = {"linear": MultiLevelModel(fm, args.c, args.c), "mlp": MultiLevelModel(fm, args.c, args.c, kind="mlp")}

    def ours(mm):
        p = params(mm, args.batch)
        def fwd_bwd():
            out = mm(p)
            _backward(out.final_geometry, out.final_reflectance)

        return lambda: mm(p), fwd_bwd

    def base(mm):
        p = params(mm, args.batch)
        return lambda: einsum_baseline(mm, p), lambda: _backward(*einsum_baseline(mm, p))

    cases = {"einsum baseline (linear)": base(models["linear"]), "MultiLevelModel linear": ours(models["linear"]),
             "MultiLevelModel mlp": ours(models["mlp"])}
    times = {name: {"fwd": [], "fwd_bwd": []} for name in cases}
    for _ in range(args.runs):  # alternate implementations, one run each per round
        for name, (fwd, fwd_bwd) in cases.items():
            times[name]["fwd"] += timed(fwd, 1, 0 if times[name]["fwd"] else args.warmup)
            times[name]["fwd_bwd"] += timed(fwd_bwd, 1, 0 if times[name]["fwd_bwd"] else args.warmup)
    ref = {k: statistics.median(v) for k, v in times["einsum baseline (linear)"].items()}
    print(f"model: {fm.n_vertices} vertices, m_s={fm.m_shape} m_e={fm.m_expression} m_r={fm.m_reflectance}, "
          f"C={args.c}, batch {args.batch}, float32, torch threads {torch.get_num_threads()}")
    print(f"{'implementation':28s} {'fwd ms':>9s} {'x base':>7s} {'fwd+bwd ms':>11s} {'x base':>7s}")
    for name, t in times.items():
        f, fb = statistics.median(t["fwd"]), statistics.median(t["fwd_bwd"])
        print(f"{name:28s} {1e3 * f:9.2f} {ref['fwd'] / f:7.2f} {1e3 * fb:11.2f} {ref['fwd_bwd'] / fb:7.2f}")


def _backward(geometry: torch.Tensor, reflectance: torch.Tensor) -> None:
    (geometry.square().mean() + reflectance.square().mean()).backward()


if __name__ == "__main__":
    main()
