"""Evaluation (paper Sec. 7.2): the harness and the methods it scores.

- :mod:`.methods`: the :class:`Method` interface, :class:`FitMethod`, :class:`MeanFaceMethod`,
  :class:`CheckpointMethod`.
- :mod:`.harness`: :func:`evaluate` (synthetic, held-out seeds), :func:`evaluate_images` (user images
  with ``.pts``), :func:`summarise`, :func:`format_table`, figures.
The error measures themselves live in :mod:`fml_taichi.losses.metrics` (reconstruction reports them too).
"""
from .harness import (  # noqa: F401
    SUMMARY_KEYS,
    EvalResult,
    evaluate,
    evaluate_images,
    face_region,
    format_table,
    summarise,
)
from .methods import CheckpointMethod, FitMethod, MeanFaceMethod, Method, Reconstruction  # noqa: F401
