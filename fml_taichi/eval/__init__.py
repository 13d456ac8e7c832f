"""Evaluation (paper Sec. 7.2): geometric, photometric and landmark error, and the harness.

- :mod:`.metrics`: Umeyama similarity alignment, point-to-surface distance, photometric error, NME.
- :mod:`.methods`: the :class:`Method` interface, :class:`FitMethod`, :class:`CheckpointMethod`.
- :mod:`.harness`: :func:`evaluate` (synthetic, held-out seeds), :func:`evaluate_images` (user images
  with ``.pts``), :func:`summarise`, :func:`format_table`, figures.
"""
from .harness import SUMMARY_KEYS, EvalResult, evaluate, evaluate_images, face_region, format_table, summarise  # noqa: F401
from .methods import CheckpointMethod, FitMethod, MeanFaceMethod, Method, Reconstruction  # noqa: F401
from ..losses.metrics import geometric_error, landmark_nme, photometric_error, point_to_surface, umeyama  # noqa: F401
