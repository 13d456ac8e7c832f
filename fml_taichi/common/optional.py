"""Optional packages: import one, or fail with the package's name and the pip extra that installs it."""
from __future__ import annotations

import importlib

#: module -> (pip package, fml_taichi extra that installs it)
PACKAGES = {
    "h5py": ("h5py", "bfm2017"),
    "dlib": ("dlib-bin", "detect"),
    "onnxruntime": ("onnxruntime", "fast"),
    "onnx": ("onnx", "fast"),
}


class MissingDependency(ImportError):
    """An optional package that a requested feature needs is not installed (the message says how to get it)."""


def require(module: str, purpose: str):
    """``import module`` or raise :class:`MissingDependency` naming it and its pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package, extra = PACKAGES.get(module, (module, None))
        how = f"pip install 'fml_taichi[{extra}]' (or: pip install {package})" if extra else f"pip install {package}"
        raise MissingDependency(f"{purpose} needs the package {package!r}, which is not installed: {how}") from e
