"""rasterize + interpolate + antialias, forward and forward+backward (w.r.t. positions and per-vertex
colours), Taichi ops against their plain-torch twins and the peers that install, in one process.

Workload (as measured before these ops existed): a UV sphere of ~2k / 30k / 200k triangles filling ~80%
of the width of a 256^2 or 512^2 image, per-vertex random colours, L2 loss against a black image;
batch 1 and 8 (each image's sphere jittered). ``silhouette_grad``: with white colours on a black target,
the position gradient is non-zero (only edge / visibility gradients can give that: the interior of a
constant-colour mesh has none).

Peers: Mitsuba 3 ``llvm_ad_rgb`` (``pip install mitsuba`` + a system libLLVM 19 at
``$DRJIT_LIBLLVM_PATH``) runs the 256^2 batch-1 cases with its ``prb`` integrator (no silhouette
gradients, 1 spp) and ``direct_projective`` (``sppi=0``: primary-visibility silhouette gradients) at
1, 8 and 16 spp (``render(spp=N)`` sets its ``sppc`` and ``sppp``). ``edge_quality`` measures at 30k
triangles which spp gives Mitsuba an antialiased silhouette as good as ours (edge-pixel RMSE of the
coverage against Mitsuba at 1024 spp): that is the configuration to compare speed at. PyTorch3D has no CPU wheel in the package registry here (the JSON says so).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_raster_ops.py --json benchmarks/results/raster_ops.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from fml_taichi.common import runtime  # noqa: E402
from fml_taichi.common.atomic import write_bytes  # noqa: E402
from fml_taichi.ops import raster as ops  # noqa: E402
from fml_taichi.reference import raster_ops as reference  # noqa: E402
from fml_taichi.reference.meshes import sphere_with_n_vertices  # noqa: E402

TRIANGLES = (2_000, 30_000, 200_000)
# (integrator, silhouette gradients by design, spp). render(spp=N) overrides direct_projective's sppc and
# sppp (defaults 32 / 32; sppi 128, set to 0: no indirect visibility here). 1 spp is the cheapest; 8-16
# spp is where Mitsuba's antialiased edge matches ours (edge_quality(), in the JSON).
MITSUBA_CONFIGS = (({"type": "prb"}, False, 1), ({"type": "direct_projective", "sppi": 0}, True, 1),
                   ({"type": "direct_projective", "sppi": 0}, True, 8),
                   ({"type": "direct_projective", "sppi": 0}, True, 16))
SIZES = (256, 512)
BATCHES = (1, 8)
DISTANCE = 3.0


def sphere_case(n_tris: int, size: int, batch: int, seed: int = 0) -> dict:
    v, tri = sphere_with_n_vertices(n_tris // 2)
    g = torch.Generator().manual_seed(seed)
    pos = v.unsqueeze(0) + torch.tensor([0.0, 0.0, DISTANCE])
    pos = (pos + 0.02 * torch.randn((batch, 1, 3), generator=g)).contiguous()
    f = 1.2 * size
    return dict(pos=pos, tri=tri, K=torch.tensor([f, f, (size - 1) / 2, (size - 1) / 2]), size=size,
                colours=torch.rand((batch, v.shape[0], 3), generator=g), topology=ops.edge_neighbours(tri))


def pipeline(mod, case: dict, colours: torch.Tensor, backward: bool):
    """Render and (optionally) back-propagate an L2 loss against black; returns the position gradient."""
    pos = case["pos"].clone().requires_grad_(backward)
    col = colours.clone().requires_grad_(backward)
    if not backward:
        with torch.no_grad():
            rast = mod.rasterize(pos, case["tri"], case["size"], case["K"])
            mod.antialias(mod.interpolate(col, rast, case["tri"]), rast, pos, case["tri"], case["topology"])
        return None
    rast = mod.rasterize(pos, case["tri"], case["size"], case["K"])
    img = mod.antialias(mod.interpolate(col, rast, case["tri"]), rast, pos, case["tri"], case["topology"])
    (img ** 2).sum().backward()
    return pos.grad


def time_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, best) ms after a warm-up (which also compiles kernels); one sample when a run takes > 3 s.
    The best is the steadier figure on a machine shared with other jobs."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = 1 if first > 3.0 else repeats
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), min(samples)


def ours(case: dict, impl: str, repeats: int) -> dict:
    mod = ops if impl == "taichi" else reference
    fwd = time_ms(lambda: pipeline(mod, case, case["colours"], False), repeats)
    fwd_bwd = time_ms(lambda: pipeline(mod, case, case["colours"], True), repeats)
    g = pipeline(mod, case, torch.ones_like(case["colours"]), True)
    return _times(fwd, fwd_bwd) | {"silhouette_grad": bool(g.abs().max() > 1e-6)}


def _times(fwd, fwd_bwd) -> dict:
    return {"fwd_ms": round(fwd[0], 2), "fwd_bwd_ms": round(fwd_bwd[0], 2), "fwd_ms_best": round(fwd[1], 2),
            "fwd_bwd_ms_best": round(fwd_bwd[1], 2)}


def mitsuba_peer(case: dict, repeats: int) -> tuple[list, str]:
    """Mitsuba 3 llvm_ad_rgb cases for a batch-1 ``case``; ([], why) when it does not run here."""
    try:
        import drjit as dr
        import mitsuba as mi

        mi.set_variant("llvm_ad_rgb")
    except Exception as e:  # not installed, or no usable libLLVM
        return [], f"mitsuba llvm_ad_rgb unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    size = case["size"]
    v = case["pos"][0].numpy()
    tri = case["tri"].numpy()
    col = case["colours"][0].numpy()
    props = mi.Properties()
    props["bsdf"] = mi.load_dict({"type": "diffuse", "reflectance": {"type": "mesh_attribute", "name": "vertex_color"}})
    mesh = mi.Mesh("sphere", vertex_count=v.shape[0], face_count=tri.shape[0], props=props, has_vertex_normals=False)
    mp = mi.traverse(mesh)
    mp["vertex_positions"] = dr.ravel(mi.TensorXf(v))
    mp["faces"] = dr.ravel(mi.TensorXu(tri.astype("uint32")))
    mp.update()
    mesh.add_attribute("vertex_color", 3, dr.ravel(mi.TensorXf(col)))
    fov = math.degrees(2 * math.atan((size / 2) / float(case["K"][0])))
    results = []
    for integrator, silhouettes, spp in MITSUBA_CONFIGS:
        scene = mi.load_dict({
            "type": "scene", "integrator": integrator,
            "sensor": {"type": "perspective", "fov": fov, "fov_axis": "x",
                       "to_world": mi.ScalarTransform4f().look_at(origin=[0, 0, 0], target=[0, 0, 1], up=[0, -1, 0]),
                       "film": {"type": "hdrfilm", "width": size, "height": size, "rfilter": {"type": "box"},
                                "sample_border": True},
                       "sampler": {"type": "independent", "sample_count": spp}},
            "light": {"type": "directional", "direction": [0, 0, 1], "irradiance": 3.0},
            "sphere": mesh,
        })
        params = mi.traverse(scene)
        keys = [k for k in params.keys() if k.endswith("vertex_positions") or k.endswith("vertex_color")]

        def fwd():
            img = mi.render(scene, params, spp=spp)
            dr.eval(img)
            dr.sync_thread()  # the LLVM backend may still be running the kernel

        def fwd_bwd():
            for k in keys:
                dr.enable_grad(params[k])
            params.update()
            img = mi.render(scene, params, spp=spp)
            loss = dr.mean(dr.square(img), axis=None)
            dr.backward(loss)
            g = dr.grad(params[[k for k in keys if k.endswith("vertex_positions")][0]])
            dr.eval(g)
            dr.sync_thread()
            return g

        try:
            t_f = time_ms(fwd, repeats)
            t_fb = time_ms(fwd_bwd, repeats)
            g = fwd_bwd()
            grad_max = float(abs(g.numpy()).max())
        except Exception as e:  # an integrator/variant combination this build rejects
            results.append({"impl": f"mitsuba_{integrator['type']}_{spp}spp", "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        results.append({"impl": f"mitsuba_{integrator['type']}_{spp}spp", **_times(t_f, t_fb),
                        "silhouette_grad": silhouettes and grad_max > 0, "position_grad_nonzero": grad_max > 0,
                        "config": {"integrator": integrator, "render_spp": spp,
                                   "film": "hdrfilm, box rfilter, sample_border", "sampler": "independent"},
                        "note": f"{spp} spp (direct_projective: sppc = sppp = spp, the render() override), "
                                f"directional light, diffuse per-vertex colour; silhouette gradients by design: "
                                f"{silhouettes}"})
    return results, f"mitsuba {mi.__version__} {mi.variant()}"


def _mitsuba_mesh(mi, dr, case: dict, props_extra: dict):
    v, tri = case["pos"][0].numpy(), case["tri"].numpy()
    props = mi.Properties()
    for k, val in props_extra.items():
        props[k] = mi.load_dict(val)
    mesh = mi.Mesh("sphere", vertex_count=v.shape[0], face_count=tri.shape[0], props=props, has_vertex_normals=False)
    mp = mi.traverse(mesh)
    mp["vertex_positions"] = dr.ravel(mi.TensorXf(v))
    mp["faces"] = dr.ravel(mi.TensorXu(tri.astype("uint32")))
    mp.update()
    return mesh


def _mitsuba_sensor(mi, case: dict, spp: int) -> dict:
    size = case["size"]
    fov = math.degrees(2 * math.atan((size / 2) / float(case["K"][0])))
    return {"type": "perspective", "fov": fov, "fov_axis": "x",
            "to_world": mi.ScalarTransform4f().look_at(origin=[0, 0, 0], target=[0, 0, 1], up=[0, -1, 0]),
            "film": {"type": "hdrfilm", "width": size, "height": size, "rfilter": {"type": "box"},
                     "sample_border": True},
            "sampler": {"type": "independent", "sample_count": spp}}


EDGE_SPPS = (1, 2, 4, 8, 16, 32, 64)
TRUTH_SPP = 1024


def edge_quality(case: dict, png: str | None = None) -> dict:
    """Edge-pixel error of the silhouette coverage: ours (antialias of the mask) and Mitsuba's
    ``direct_projective`` primal at several spp, each against Mitsuba at ``TRUTH_SPP`` spp (box filter:
    the pixel's covered area). A black mesh with a unit area emitter makes the pixel value the coverage,
    free of shading noise. Edge pixels: truth coverage in (0.02, 0.98). Tells the spp at which Mitsuba's
    antialiased edge is as good as ours, i.e. the configuration to compare speed at."""
    try:
        import drjit as dr
        import mitsuba as mi

        mi.set_variant("llvm_ad_rgb")
    except Exception as e:
        return {"error": f"mitsuba unavailable: {type(e).__name__}"}
    mesh = _mitsuba_mesh(mi, dr, case, {"bsdf": {"type": "diffuse", "reflectance": 0.0},
                                        "emitter": {"type": "area", "radiance": 1.0}})
    scene = mi.load_dict({"type": "scene", "integrator": {"type": "direct_projective", "sppi": 0},
                          "sensor": _mitsuba_sensor(mi, case, 1), "sphere": mesh})

    def coverage(spp: int, seed: int = 0) -> torch.Tensor:
        img = mi.render(scene, spp=spp, seed=seed)
        return torch.from_numpy(img.numpy()[..., 0].copy())

    truth = coverage(TRUTH_SPP, seed=12345)
    pos, tri = case["pos"][:1], case["tri"]
    with torch.no_grad():
        rast = ops.rasterize(pos, tri, case["size"], case["K"])
        ours_img = ops.antialias(rast.mask.to(pos.dtype)[..., None].contiguous(), rast, pos, tri,
                                 case["topology"])[0, ..., 0]
    # Mitsuba's film and our image may differ by a flip; pick the orientation that matches best.
    flips = {"none": truth, "x": truth.flip(1), "y": truth.flip(0), "xy": truth.flip(0).flip(1)}
    name, truth = min(flips.items(), key=lambda kv: float((kv[1] - ours_img).abs().mean()))
    flip = {"none": lambda t: t, "x": lambda t: t.flip(1), "y": lambda t: t.flip(0),
            "xy": lambda t: t.flip(0).flip(1)}[name]
    edge = (truth > 0.02) & (truth < 0.98)

    def rmse(img: torch.Tensor) -> float:
        return round(float(((img - truth)[edge] ** 2).mean().sqrt()), 4)

    out = {"edge_pixels": int(edge.sum()), "truth": f"mitsuba direct_projective primal, {TRUTH_SPP} spp, box filter",
           "orientation_flip": name, "ours_edge_rmse": rmse(ours_img),
           "ours_hard_mask_edge_rmse": rmse(rast.mask[0].to(truth.dtype)),
           "mitsuba_edge_rmse": {}}
    panels = {"truth": truth, "ours (antialias)": ours_img, "hard mask": rast.mask[0].to(truth.dtype)}
    for spp in EDGE_SPPS:
        img = flip(coverage(spp, seed=spp))
        out["mitsuba_edge_rmse"][str(spp)] = rmse(img)
        panels[f"mitsuba {spp} spp"] = img
    matched = [spp for spp in EDGE_SPPS if out["mitsuba_edge_rmse"][str(spp)] <= out["ours_edge_rmse"]]
    out["matched_spp"] = matched[0] if matched else None
    if png:
        write_edge_png(png, panels, case["size"])
        out["png"] = png
    return out


def write_edge_png(path: str, panels: dict, size: int, crop: int = 40, zoom: int = 6) -> None:
    """Side by side, zoomed crops around the sphere's right silhouette: truth, ours, hard mask, Mitsuba at
    each spp (left to right, in the order of ``panels``; the JSON lists them)."""
    from fml_taichi.io.images import write_png

    truth = next(iter(panels.values()))
    row = truth[size // 2]
    x_edge = int((row > 0.5).nonzero().max())  # the silhouette's rightmost crossing on the middle row
    y0, x0 = size // 2 - crop // 2, min(max(x_edge - crop // 2, 0), size - crop)
    tiles = []
    for img in panels.values():
        tile = img[y0:y0 + crop, x0:x0 + crop].clamp(0, 1)
        tile = tile.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1)
        tiles += [tile, torch.full((tile.shape[0], 4), 0.5)]
    write_png(path, torch.cat(tiles[:-1], 1)[..., None].expand(-1, -1, 3).numpy())


def peer_ratios(cases: list) -> dict:
    """fwd+bwd median time of each peer row / the taichi row of the same case (how many times faster we are)."""
    ours_by_case = {(c["triangles"], c["size"], c["batch"]): c for c in cases if c["impl"] == "taichi" and "fwd_ms" in c}
    out = {}
    for c in cases:
        mine = ours_by_case.get((c["triangles"], c["size"], c["batch"]))
        if c["impl"] != "taichi" and "fwd_bwd_ms" in c and mine:
            out[f"{c['impl']} {c['triangles']}x{c['size']}x{c['batch']}"] = round(c["fwd_bwd_ms"] / mine["fwd_bwd_ms"], 1)
    return out


def pytorch3d_status() -> str:
    try:
        import pytorch3d  # noqa: F401

        return "pytorch3d importable (not benchmarked)"
    except Exception:
        return ("pytorch3d not installed: the package registry here has no pytorch3d distribution for this "
                "platform (pip: 'from versions: none')")


def _reference_rows(cases: list) -> dict:
    return {(c["triangles"], c["size"], c["batch"]): c for c in cases
            if c["impl"] == "torch_reference" and "fwd_ms" in c}


def print_table(cases: list) -> None:
    ref = _reference_rows(cases)
    # Ratios: torch reference time / this impl's time (median), same case.
    print(f"{'impl':<26}{'tris':>8}{'size':>6}{'B':>3}{'fwd ms':>10}{'fwd+bwd ms':>12}{'best f+b':>10}{'sil':>5}"
          f"{'fwd x':>8}{'f+b x':>8}")
    for c in cases:
        if "fwd_ms" not in c:
            why = c.get("error") or c.get("skipped")
            print(f"{c['impl']:<26}{c['triangles']:>8}{c['size']:>6}{c['batch']:>3}  {why}")
            continue
        r = ref.get((c["triangles"], c["size"], c["batch"]))
        sx = f"{r['fwd_ms'] / c['fwd_ms']:.1f}" if r else "-"
        sfb = f"{r['fwd_bwd_ms'] / c['fwd_bwd_ms']:.1f}" if r else "-"
        print(f"{c['impl']:<26}{c['triangles']:>8}{c['size']:>6}{c['batch']:>3}{c['fwd_ms']:>10.1f}"
              f"{c['fwd_bwd_ms']:>12.1f}{c['fwd_bwd_ms_best']:>10.1f}{'yes' if c['silhouette_grad'] else 'no':>5}"
              f"{sx:>8}{sfb:>8}")


def markdown_table(cases: list) -> str:
    """The cases as a Markdown table with speed-ups over the torch reference (medians)."""
    ref = _reference_rows(cases)
    lines = ["| impl | triangles | size | batch | fwd ms | fwd+bwd ms | fwd+bwd best ms | silhouette grad | fwd x "
             "| fwd+bwd x | fwd+bwd x (best) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for c in cases:
        key = (c["triangles"], c["size"], c["batch"])
        head = f"| {c['impl']} | {c['triangles']:,} | {c['size']}^2 | {c['batch']} |"
        if "fwd_ms" not in c:
            lines.append(f"{head} {c.get('skipped') or c.get('error')} | | | | | | |")
            continue
        r = ref.get(key)
        fx = f"{r['fwd_ms'] / c['fwd_ms']:.1f}" if r else "-"
        fbx = f"{r['fwd_bwd_ms'] / c['fwd_bwd_ms']:.1f}" if r else "-"
        best = f"{r['fwd_bwd_ms_best'] / c['fwd_bwd_ms_best']:.1f}" if r else "-"
        lines.append(f"{head} {c['fwd_ms']:.1f} | {c['fwd_bwd_ms']:.1f} | {c['fwd_bwd_ms_best']:.1f} | "
                     f"{'yes' if c['silhouette_grad'] else 'no'} | {fx} | {fbx} | {best} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="only the 30k-triangle 256^2 batch-1 case")
    ap.add_argument("--skip-torch", default="200000x512x8",
                    help="comma-separated TRISxSIZExBATCH cases where the torch reference is not run ('' for none)")
    ap.add_argument("--no-peers", action="store_true", help="do not try Mitsuba")
    ap.add_argument("--markdown", help="also write the table as Markdown to this path")
    ap.add_argument("--edge-png", help="also write the silhouette crops of the edge-quality check as a PNG")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2
    runtime.init()
    skip = {s.strip() for s in args.skip_torch.split(",") if s.strip()}
    grid = [(30_000, 256, 1)] if args.quick else [(t, s, b) for t in TRIANGLES for s in SIZES for b in BATCHES]
    cases, notes = [], {"torch_threads": torch.get_num_threads(), "device": runtime.device_name(),
                        "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
                        "timing": "fwd_ms / fwd_bwd_ms: median of --repeats after a warm-up; *_best: the fastest",
                        "pytorch3d": pytorch3d_status()}
    for n_tris, size, batch in grid:
        first = len(cases)
        case = sphere_case(n_tris, size, batch)
        row = {"triangles": int(case["tri"].shape[0]), "size": size, "batch": batch}
        cases.append({"impl": "taichi", **row, **ours(case, "taichi", args.repeats)})
        if f"{n_tris}x{size}x{batch}" in skip:
            cases.append({"impl": "torch_reference", **row, "skipped": "not run: too slow for this CPU (--skip-torch)"})
        else:
            cases.append({"impl": "torch_reference", **row, **ours(case, "torch_reference", args.repeats)})
        if not args.no_peers and batch == 1 and size == 256:
            peer, note = mitsuba_peer(case, max(1, min(args.repeats, 3)))
            notes["mitsuba"] = note
            cases.extend({**p, **row} for p in peer)
            if n_tris == 30_000:
                notes["edge_quality_30k_256"] = edge_quality(case, args.edge_png)
                if args.edge_png:
                    notes["edge_quality_30k_256"]["panels"] = ["truth (1024 spp)", "ours (antialias)", "hard mask"] + \
                        [f"mitsuba {spp} spp" for spp in EDGE_SPPS]
        print_table(cases[first:])
    notes["taichi_speedup_over_peers"] = peer_ratios(cases)
    notes["load_average_end"] = os.getloadavg()
    if skip:
        notes["torch_reference_skipped"] = sorted(skip)
    print("\nall cases:")
    print_table(cases)
    print("\ntaichi fwd+bwd speed-up over each peer (same case):")
    for k, v in notes["taichi_speedup_over_peers"].items():
        print(f"  {k}: {v}x")
    write_bytes(args.json, (json.dumps({"cases": cases, "notes": notes}, indent=2) + "\n").encode())
    if args.markdown:
        write_bytes(args.markdown, markdown_table(cases).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
