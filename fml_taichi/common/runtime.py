"""Taichi start-up: one place that chooses the arch and sets the process environment.

Why the environment variables:
- ``TI_SKIP_VERSION_CHECK``: taichi phones a version-check host at ``ti.init``; a library should not,
  and these machines have no network.
- ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP pool spin-waits and starves taichi's threads on small
  CPUs (forward+backward times swing 10x). It only takes effect if set before torch starts its pool,
  which is why ``fml_taichi/__init__.py`` imports this module first.
- ``OPENBLAS_NUM_THREADS=1``: numpy's OpenBLAS threads the reconstruction start's small products
  (~50 x 600) and, woken between encoder calls, made a 1.6 ms colour fit take 7-47 ms (measured on 2 cores).
- ``NUMBA_CACHE_DIR``: the reconstruction's fits are compiled by numba on first use (seconds) and
  cached; next to an installed package the cache may not be writable, so it lives with the Taichi
  kernel cache in ``$FML_TAICHI_CACHE/numba``.

Quiet start-up: Taichi prints a banner (``[Taichi] version ...``) when it is imported and
``[Taichi] Starting on arch=...`` in ``ti.init``, on stdout, where they mix with a command's output.
``ENABLE_TAICHI_HEADER_PRINT=False`` (Taichi's own switch, read at import) silences the first; the
second is filtered out of stdout around ``ti.init``. :func:`set_verbose` (the CLI's ``--verbose``)
shows both. A value of ``ENABLE_TAICHI_HEADER_PRINT`` set by the user wins.

Why never ``ti.gpu``: without Vulkan it can segfault while probing OpenGL, and with a software Vulkan
driver it silently picks that slow device. We choose explicitly: CUDA when torch sees a usable GPU,
otherwise the CPU (``ti.x64``/``ti.arm64``).
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
import threading

os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_HEADER_ENV = "ENABLE_TAICHI_HEADER_PRINT"
_HEADER_QUIETED = _HEADER_ENV not in os.environ and "taichi" not in sys.modules
os.environ.setdefault(_HEADER_ENV, "False")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
    os.environ.get("FML_TAICHI_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fml_taichi")), "numba"))

_lock = threading.Lock()
_state: dict = {"arch": None, "verbose": False}


def set_verbose(on: bool) -> None:
    """Show (True) or hide (False, the default) Taichi's start-up lines (module docstring)."""
    _state["verbose"] = bool(on)
    if _HEADER_QUIETED and "taichi" not in sys.modules:
        os.environ[_HEADER_ENV] = "True" if on else "False"


def _print_header_late() -> None:
    """The banner that the import skipped, for verbose mode when Taichi was imported before."""
    if _state["verbose"] and _HEADER_QUIETED and os.environ.get(_HEADER_ENV) == "False":
        with contextlib.suppress(Exception):  # a private helper of Taichi's: cosmetic only
            from taichi._lib.utils import _print_taichi_header

            _print_taichi_header()


@contextlib.contextmanager
def _quiet_start():
    """Drop Taichi's "[Taichi] Starting on arch=..." line from stdout (anything else printed passes)."""
    if _state["verbose"]:
        yield
        return
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    rest = [line for line in buf.getvalue().splitlines(keepends=True) if not line.startswith("[Taichi] Starting on")]
    if rest:
        sys.stdout.write("".join(rest))

_ARCH_ENV = "FML_TAICHI_ARCH"  # "cpu" or "cuda": overrides the automatic choice


def _cache_dir() -> str:
    root = os.environ.get("FML_TAICHI_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fml_taichi"))
    return os.path.join(root, "ti_offline_cache")


def _cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken CUDA runtime: the CPU is always there
        return False


def _resolve_arch(arch: str | None) -> str:
    arch = (arch or os.environ.get(_ARCH_ENV) or "auto").lower()
    if arch not in ("auto", "cpu", "cuda"):
        raise ValueError(f"arch must be 'auto', 'cpu' or 'cuda', got {arch!r}")
    if arch == "auto":
        return "cuda" if _cuda_usable() else "cpu"
    return arch


def init(arch: str | None = None, debug: bool = False) -> str:
    """Initialise Taichi once and return the arch in use (``"cpu"`` or ``"cuda"``).

    Safe to call any number of times: later calls return the arch chosen by the first. ``arch`` may be
    ``"auto"`` (default; also read from ``$FML_TAICHI_ARCH``), ``"cpu"`` or ``"cuda"``. Requesting CUDA
    without a usable GPU falls back to the CPU, as Taichi itself does, and the returned name says so.
    Kernels default to float32; float64 kernels are instantiated on demand for gradient checks.
    The offline kernel cache lives in ``$FML_TAICHI_CACHE`` (default ``~/.cache/fml_taichi``) and is
    flushed at interpreter exit (Taichi writes it only on ``ti.reset()``).
    """
    with _lock:
        if _state["arch"] is not None:
            return _state["arch"]
        import taichi as ti

        want = _resolve_arch(arch)
        if want == "cuda" and not _cuda_usable():
            want = "cpu"
        ti_arch = ti.cuda if want == "cuda" else ti.cpu
        os.makedirs(_cache_dir(), exist_ok=True)
        _print_header_late()
        with _quiet_start():
            ti.init(
                arch=ti_arch,
                default_fp=ti.f32,
                default_ip=ti.i32,
                offline_cache=True,
                offline_cache_file_path=_cache_dir(),
                debug=debug,
                log_level=ti.WARN,
            )
        # ti.cuda falls back to the CPU with a warning when no driver is found: report what we got.
        got = "cuda" if ti.lang.impl.current_cfg().arch == ti.cuda else "cpu"
        _state["arch"] = got
        atexit.register(_flush_cache)
        return got


def _flush_cache() -> None:
    try:
        import taichi as ti

        ti.reset()
    except Exception:
        pass


def arch() -> str | None:
    """The arch chosen by :func:`init`, or ``None`` before it ran."""
    return _state["arch"]


def torch_device() -> "str":
    """The torch device whose tensors Taichi kernels can read zero-copy on the current arch."""
    return "cuda" if init() == "cuda" else "cpu"


def device_name() -> str:
    """A human-readable name of the compute device, for benchmark tables."""
    a = init()
    if a == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})"
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({cpu}, {os.cpu_count()} cores)"
