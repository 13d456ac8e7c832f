"""Self-supervised losses of Sec. 6: E_total = E_data + w_reg E_reg and every term, weights from YAML.

Public API:
    total_loss, compute_reflectance_weights, LossContext  (losses.total)
    LossWeights, default_weights, DEFAULT_CONFIG           (losses.config)
    draw_partners                                          (losses.partners)
    photo_term, sparse_term, landmark_vertices, std_term, smo_term, ref_term, glo_term, sta_term
                                                           (losses.terms, per-image [B] values)
"""
from .config import DEFAULT_CONFIG, LossWeights, default_weights
from .partners import draw_partners
from .terms import (glo_term, landmark_vertices, photo_term, ref_term, smo_term, sparse_term, sta_term,
                    std_term)
from .total import LossContext, compute_reflectance_weights, total_loss

__all__ = [
    "DEFAULT_CONFIG", "LossWeights", "default_weights", "draw_partners", "glo_term", "landmark_vertices",
    "photo_term", "ref_term", "smo_term", "sparse_term", "sta_term", "std_term", "LossContext",
    "compute_reflectance_weights", "total_loss",
]
