"""``fml-taichi``: one console script, one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit code). Modules are imported only when their subcommand runs, so ``fml-taichi --help`` is fast
and a broken optional dependency of one subcommand does not break the others.

Errors: bad input (the project's documented errors: ``ValueError`` and its subclasses such as
``ConfigError``/``CheckpointError``, ``OSError`` such as a missing file or an output folder that
cannot be created, a missing optional package, a diverged training run, no face detector) ends any
command with one line on stderr, ``fml-taichi COMMAND: error: ...``, and exit code 1. Anything else is a
bug and keeps its traceback. ``--verbose`` adds the traceback to the one-line errors and shows Taichi's
start-up banner (quiet by default).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

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


_VERBOSE_HELP = "show tracebacks with errors and Taichi's start-up banner"


def build_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fml-taichi", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in available.items():
        module = importlib.import_module(mod)
        p = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", ""))
        module.add_arguments(p)
        # SUPPRESS: an absent sub-command flag must not reset ``fml-taichi --verbose COMMAND``.
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
        p.set_defaults(_module=module)
    return parser


def _command_name(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _documented_errors() -> tuple[type, ...]:
    """Exception types that mean bad input, not a bug (module docstring)."""
    from ..common.optional import MissingDependency

    kinds: list[type] = [ValueError, OSError, MissingDependency, ModuleNotFoundError]
    # Looked up only if their modules were imported (importing them here would cost seconds).
    for module, name in (("fml_taichi.train.trainer", "TrainingDiverged"),
                         ("fml_taichi.data.detect", "DetectorUnavailable")):
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None:
            kinds.append(kind)
    return tuple(kinds)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = _available()
    # Import only the requested subcommand's module when one is named (fast start-up).
    name = _command_name(argv)
    if name in available:
        available = {name: available[name]}
    parser = build_parser(available)
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    from ..common import runtime

    runtime.set_verbose(verbose)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"fml-taichi {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - filtered below: only documented errors become one line
        if not isinstance(e, _documented_errors()):
            raise
        if verbose:
            traceback.print_exc()
        print(f"fml-taichi {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
