"""Training and evaluation data: synthetic faces with ground truth (more loaders live beside it).

Public API (from :mod:`fml_taichi.data.synthetic`): :class:`SyntheticFaces` (torch Dataset),
:class:`SyntheticRenderer`, :class:`SyntheticConfig`, :func:`render_batch`, :func:`collate_synthetic`,
:data:`TRAIN_SEED_START`, :data:`EVAL_SEED_START`.
"""
from .synthetic import (  # noqa: F401
                        EVAL_SEED_START,
                        TRAIN_SEED_START,
                        SyntheticConfig,
                        SyntheticFaces,
                        SyntheticRenderer,
                        collate_synthetic,
                        render_batch,
)

__all__ = ["EVAL_SEED_START", "TRAIN_SEED_START", "SyntheticConfig", "SyntheticFaces", "SyntheticRenderer",
           "collate_synthetic", "render_batch"]
