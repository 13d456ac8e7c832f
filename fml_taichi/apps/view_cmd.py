"""``fml-taichi view``: the GGUI viewer of the multi-level face model and its corrective modes.

Interactive (needs a display and Vulkan)::

    fml-taichi view --checkpoint runs/x/checkpoint.pt [--reconstruction faces.npz]

Headless (Vulkan only, no display; writes PNG strips of the corrective modes)::

    fml-taichi view --checkpoint runs/x/checkpoint.pt --headless --out figures/ --modes 3

Sources: ``--checkpoint`` (trained base model + correctives; default: the checkpoint shipped with
fml_taichi, ``fml_taichi/checkpoints/default.pt``), ``--model`` (a base model ``.npz``: no
correctives), ``--untrained`` (the default model, ``--vertices`` sets its size, with no correctives),
or ``--demo-correctives`` (the default model with the hand-made, documented correctives of
``demo_correctives``).
``--reconstruction`` (an NPZ written by ``io.exports.write_params_npz``, e.g. by ``fml-taichi
reconstruct``) sets the start face (``--index``) and, when it holds two or more faces, the sigmas of
the corrective modes (their regressed coefficients' spread along each mode). Without one, a checkpoint
can regress its own set: ``--regress-synthetic N`` runs its encoder on N held-out synthetic faces.

Taichi is imported only when the command runs, so ``fml-taichi --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys

HELP = "view the face model and its learned corrective modes (GGUI window, or --headless PNG strips)"

# = view_scene.VIEWS, repeated so that building the parser imports neither torch nor taichi (fast --help);
# tests/test_viewer_cli.py checks that the two agree.
VIEWS = ("shaded", "reflectance", "shading", "normals", "corrective")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="C", help="training checkpoint (base model + learned correctives; "
                     "default: the one shipped with fml_taichi)")
    src.add_argument("--untrained", action="store_true",
                     help="the default base model without correctives (no checkpoint)")
    src.add_argument("--model", metavar="M", help="base face model .npz (no correctives)")
    src.add_argument("--demo-correctives", action="store_true",
                     help="default model with the hand-made correctives of fml_taichi.viewer.demo_model "
                          "(not learned; for figures without a trained checkpoint)")
    parser.add_argument("--vertices", type=int, default=8000, metavar="N",
                        help="vertex count of the default model with --untrained / --demo-correctives (default 8000)")
    parser.add_argument("--reconstruction", metavar="R.npz",
                        help="regressed parameters (write_params_npz): start face, and corrective sigmas if >= 2 faces")
    parser.add_argument("--index", type=int, default=0, help="which face of --reconstruction to start from (default 0)")
    parser.add_argument("--regress-synthetic", type=int, default=0, metavar="N",
                        help="with --checkpoint: regress N held-out synthetic faces with the trained encoder and "
                             "take the corrective modes' sigmas and order from them (default 0: unit sigmas)")
    parser.add_argument("--headless", action="store_true", help="write PNG strips to --out instead of opening a window")
    parser.add_argument("--out", metavar="DIR", help="output folder for --headless")
    parser.add_argument("--modes", type=int, default=3, metavar="K",
                        help="headless: strips for the first K geometry and reflectance modes (default 3)")
    parser.add_argument("--size", type=int, default=192, metavar="PX", help="headless: panel size (default 192)")
    parser.add_argument("--sigma-range", type=float, default=3.0, metavar="S",
                        help="headless: strips span -S..+S standard deviations (default 3)")
    parser.add_argument("--steps", type=int, default=7, help="headless: panels per strip (default 7)")
    parser.add_argument("--geometry-view", choices=VIEWS, nargs="+", default=["shading", "corrective"],
                        help="headless: view(s) of the geometry strips, one row each (default: shading corrective)")
    parser.add_argument("--reflectance-view", choices=VIEWS, nargs="+", default=["reflectance"],
                        help="headless: view(s) of the reflectance strips, one row each (default: reflectance)")
    parser.add_argument("--width", type=int, default=1280, help="window width (default 1280)")
    parser.add_argument("--height", type=int, default=800, help="window height (default 800)")
    parser.add_argument("--screenshots", metavar="DIR", default=".", help="where the screenshot key writes (default .)")
    parser.add_argument("--sliders", type=int, default=6, help="sliders shown per mode group (default 6)")
    parser.add_argument("--frames", type=int, default=0,
                        help="interactive: quit after this many frames (default 0: when the window is closed)")


def _check_args(args) -> None:
    """Argument combinations argparse cannot express; ValueError names the option."""
    if args.headless and not args.out:
        raise ValueError("--headless needs --out DIR (where the PNGs go)")
    if args.out and not args.headless:
        raise ValueError("--out is only used with --headless")
    if args.regress_synthetic and (args.model or args.untrained or args.demo_correctives):
        raise ValueError("--regress-synthetic needs --checkpoint (a trained encoder to regress with)")
    if args.regress_synthetic and args.reconstruction:
        raise ValueError("--regress-synthetic and --reconstruction both give the regressed faces: choose one")
    for name, low in (("modes", 0), ("steps", 2), ("size", 16), ("width", 64), ("height", 64), ("sliders", 0),
                      ("index", 0), ("vertices", 500), ("regress_synthetic", 0), ("frames", 0)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least {low}, got {getattr(args, name)}")
    if not args.sigma_range > 0:
        raise ValueError(f"--sigma-range: must be positive, got {args.sigma_range}")


def load_sources(args):
    """(face_model, multilevel or None, regressed FaceParams or None) for the chosen source."""
    from ..model import default_face_model, load_face_model

    checkpoint = args.checkpoint or _default_checkpoint(args)
    if checkpoint:
        from ..recon.reconstructor import Reconstructor

        rec = Reconstructor.from_checkpoint(checkpoint)
        regressed = regress_synthetic(rec, args.regress_synthetic) if args.regress_synthetic else None
        return rec.face_model, rec.multilevel, regressed
    if args.model:
        return load_face_model(args.model), None, None
    fm = default_face_model(n_vertices=args.vertices)
    if args.demo_correctives:
        from ..viewer.demo_model import demo_multilevel

        return fm, demo_multilevel(fm), None
    return fm, None, None


def _default_checkpoint(args) -> str | None:
    """The shipped checkpoint when no source was chosen (an untrained model shows no correctives)."""
    if args.model or args.untrained or args.demo_correctives:
        return None
    from ..recon.pipeline import DEFAULT_CHECKPOINT, default_checkpoint

    path = default_checkpoint()
    if path is None:
        print(f"note: no shipped checkpoint at {DEFAULT_CHECKPOINT}: showing the untrained default model "
              "(no correctives); pass --checkpoint", file=sys.stderr)
    return path


def regress_synthetic(reconstructor, n: int, batch: int = 16):
    """FaceParams [n] the trained encoder regresses from ``n`` held-out synthetic faces.

    The faces are ``fml_taichi.data.synthetic``'s evaluation seeds (never used in training), so the
    spread of their corrective coefficients is what the regressor does on unseen faces. They are drawn
    as the checkpoint was trained (its ``data.synthetic``) and reconstructed its way
    (:meth:`~fml_taichi.recon.reconstructor.Reconstructor.reconstruct`).
    """
    import torch

    from ..data.synthetic import EVAL_SEED_START, SyntheticRenderer
    from ..model import FaceParams

    from ..nets.config import synthetic_config

    cfg = reconstructor.config
    known = cfg is not None and cfg.data.kind == "synthetic"
    renderer = SyntheticRenderer(reconstructor.face_model, synthetic_config(cfg) if known else None)
    parts = []
    for start in range(0, n, batch):
        seeds = range(EVAL_SEED_START + start, EVAL_SEED_START + min(n, start + batch))
        b = renderer.render(list(seeds))
        params, _ = reconstructor.reconstruct(b["image"], b["landmarks"], b["intrinsics"][0])
        parts.append(params)
    return FaceParams(**{k: torch.cat([getattr(p, k) for p in parts]) for k in FaceParams.names()})


def load_reconstruction(path: str, index: int):
    """(start FaceParams [1], regressed FaceParams or None) from a parameter NPZ."""
    from ..io.exports import read_params_npz

    params, _ = read_params_npz(path)
    if index >= params.batch_size:
        raise ValueError(f"--index: {path!r} holds {params.batch_size} face(s), got index {index}")
    return params.index(index), (params if params.batch_size >= 2 else None)


def build_scene(args):
    """The :class:`view_scene.FaceScene` the arguments describe."""
    from ..viewer.scene import FaceScene

    face_model, multilevel, regressed = load_sources(args)
    start = None
    if args.reconstruction:
        start, regressed = load_reconstruction(args.reconstruction, args.index)
    return FaceScene(face_model, multilevel, start=start, regressed=regressed)


def run(args) -> int:
    """Run the viewer; returns 0 on success, 1 with a one-line error on stderr otherwise."""
    try:
        _check_args(args)
        from ..common import runtime
        from ..viewer.ggui import require_ggui

        require_ggui()  # before loading anything: fail fast, and with the install hint
        if not args.headless:
            from ..viewer.ggui import require_display

            require_display()
        runtime.init()
        scene = build_scene(args)
        if args.headless:
            return _headless(scene, args)
        from ..viewer.ggui import run_interactive

        return run_interactive(scene, args.width, args.height, screenshot_dir=args.screenshots,
                               n_sliders=args.sliders, max_frames=args.frames)
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as e:
        print(f"fml-taichi view: error: {e}", file=sys.stderr)
        return 1


def _headless(scene, args) -> int:
    import numpy as np

    from ..viewer.strips import write_headless

    sigmas = np.linspace(-args.sigma_range, args.sigma_range, args.steps).round(6).tolist()
    summary = write_headless(scene, args.out, n_modes=args.modes, size=args.size, sigmas=sigmas,
                             views={"geometry": args.geometry_view, "reflectance": args.reflectance_view})
    print(f"wrote {len(summary['files'])} images and modes.json to {args.out}")
    for kind in ("geometry", "reflectance"):
        if summary[kind]["count"] == 0:
            print(f"note: no {kind} correctives in this model: no {kind} strips")
    return 0
