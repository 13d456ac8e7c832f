"""``fml-taichi``: one console script, one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit code). Modules are imported only when their subcommand runs, so ``fml-taichi --help`` is fast
and a broken optional dependency of one subcommand does not break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; a module missing from this checkout simply is not offered.
SUBCOMMANDS = {
    "demo": "fml_taichi.apps.demo_cmd",
    "train": "fml_taichi.apps.train_cmd",
    "eval": "fml_taichi.apps.eval_cmd",
    "reconstruct": "fml_taichi.apps.reconstruct_cmd",
    "preprocess": "fml_taichi.apps.preprocess_cmd",
    "view": "fml_taichi.apps.view_cmd",
    "build-model": "fml_taichi.apps.build_model_cmd",
    "ship-checkpoint": "fml_taichi.apps.ship_checkpoint_cmd",
}


def _available() -> dict[str, str]:
    found = {}
    for name, mod in SUBCOMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            found[name] = mod
    return found


def build_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fml-taichi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in available.items():
        module = importlib.import_module(mod)
        p = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", ""))
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = _available()
    # Import only the requested subcommand's module when one is named (fast start-up).
    if argv and argv[0] in available:
        available = {argv[0]: available[argv[0]]}
    parser = build_parser(available)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
