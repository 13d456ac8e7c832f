"""Which implementation the reconstruction's fits run: numba-compiled twins or the numpy reference.

The landmark, colour and reflectance fits each exist twice: numpy array code (the reference, fast
for batches: training prepares its pool 16 faces at a time) and a numba-compiled per-face twin
(``*_jit.py``: at batch 1 the numpy code's cost is its per-call overhead, not its arithmetic).
``impl=None`` picks numba when it imports. Compiling takes ~40 s on the first use on a machine;
numba caches the machine code under ``$NUMBA_CACHE_DIR`` (``$FML_TAICHI_CACHE/numba``, set by
:mod:`fml_taichi.common.runtime`), so later processes load it in about a second.
:func:`note_first_compile` says so on stderr when that cache is empty, so a first ``fml-taichi
reconstruct`` does not look hung.
"""
from __future__ import annotations

import glob
import os
import sys
import threading

__all__ = ["IMPLS", "default_impl", "resolve_impl", "note_first_compile"]

IMPLS = ("numba", "numpy")
_LABELS = {"landmark_fit_jit": "landmark fit", "colour_fit_jit": "colour fit",
           "corrective_fit_jit": "reflectance fit"}
_noted: set = set()
_lock = threading.Lock()


def default_impl() -> str:
    """``"numba"`` when numba imports, else ``"numpy"``."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


def resolve_impl(impl: str | None) -> str:
    """``impl`` checked (None: :func:`default_impl`)."""
    impl = default_impl() if impl is None else impl
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return impl


def note_first_compile(module: str) -> None:
    """Before the first call into the compiled module ``module`` (e.g. ``"landmark_fit_jit"``) in this
    process: one line on stderr when numba's cache holds nothing of it yet (it is about to compile)."""
    with _lock:
        if module in _noted:
            return
        _noted.add(module)
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root and glob.glob(os.path.join(root, "**", f"{module}.*.nbi"), recursive=True):
        return
    if not root:  # numba's default: a __pycache__ next to the module
        here = os.path.join(os.path.dirname(__file__), "__pycache__")
        if glob.glob(os.path.join(here, f"{module}.*.nbi")):
            return
    what = _LABELS.get(module, module)
    print(f"fml-taichi: compiling the reconstruction's {what} (first use on this machine, 10-30 s; "
          f"cached for later runs)", file=sys.stderr, flush=True)
