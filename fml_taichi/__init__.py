"""fml_taichi: differentiable Taichi graphics kernels and a self-supervised multi-level face model.

Importing the package first sets the process environment Taichi and torch need (see ``backend``).
"""
from .common import runtime  # noqa: F401  (must run before torch starts its thread pool)

__version__ = "0.1.0"
