"""Plain-torch references of ``fml_taichi.ops.regularizers`` (same names, maths and checks).

Test oracle and benchmark baseline; differentiable through ordinary torch autograd.
"""
from __future__ import annotations

import torch

from ..common.checks import check_same, check_tensor
from ..common.loss_checks import check_csr, check_edges, check_values


def csr_rows(offsets: torch.Tensor) -> torch.Tensor:
    """Row index of every CSR entry: (E,) int64 (``offsets`` (N + 1,) int32)."""
    counts = (offsets[1:] - offsets[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=offsets.device), counts)


def laplacian_energy(values: torch.Tensor, offsets: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Torch version of :func:`fml_taichi.ops.regularizers.laplacian_energy`."""
    b, n, c = check_values("values", values)
    check_csr(offsets, neighbours, n, n, names=("offsets", "neighbours"), allow_empty=True)
    rows = csr_rows(offsets)
    deg = (offsets[1:] - offsets[:-1]).to(values.dtype)
    nsum = torch.zeros_like(values).index_add_(1, rows, values[:, neighbours.long()])
    has = deg > 0
    # Isolated points: residual 0 (mask before dividing so no 0/0 reaches autograd).
    lap = torch.where(has[None, :, None], values - nsum / deg.clamp(min=1)[None, :, None], torch.zeros_like(values))
    return (lap * lap).sum((1, 2)) / n


def pair_energy(values, src, dst, weights=None, p: float = 2.0, eps: float = 1e-3):
    """Torch version of :func:`fml_taichi.ops.regularizers.pair_energy`."""
    b, n, _ = check_values("values", values)
    e = check_edges(src, dst, n)
    if weights is None:
        weights = torch.ones(b, e, dtype=values.dtype, device=values.device)
    check_tensor("weights", weights, shape=(e,) if weights.ndim == 1 else (b, e), contiguous=False)
    check_same("values", values, "weights", weights)
    if not (0 < p <= 2):
        raise ValueError(f"p: expected 0 < p <= 2, got {p}")
    if p < 2 and not eps > 0:
        raise ValueError(f"eps: expected > 0 for p < 2, got {eps}")
    d = values[:, src.long()] - values[:, dst.long()]
    s = (d * d).sum(-1)
    if p == 2:
        phi = s
    else:
        # eps^p by the same pow in the same dtype as the first term, so phi(0) is exactly 0.
        e2 = torch.full_like(s, eps * eps)
        phi = (s + e2) ** (p / 2) - e2 ** (p / 2)
    return (weights.detach().expand(b, e) * phi).sum(1)


def weighted_sum_of_squares(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Torch version of :func:`fml_taichi.ops.regularizers.weighted_sum_of_squares`."""
    check_tensor("values", values, shape=(None, None))
    if values.shape[1] == 0:
        raise ValueError("values: no entries (D = 0)")
    if weights is None:
        return (values * values).sum(1)
    check_tensor("weights", weights, shape=(values.shape[1],))
    check_same("values", values, "weights", weights)
    return (weights.detach() * values * values).sum(1)


def bilinear_clamped(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample (B, H, W, C) at (B, N, 2) pixel positions, border-clamped, pixel centres at integers."""
    b, h, w, c = image.shape

    def corner(x, size):
        x = x.clamp(0, size - 1)
        x0 = x.floor().long().clamp(max=max(size - 2, 0))
        return x0, x - x0.to(x.dtype), (x0 + 1).clamp(max=size - 1)

    x0, fx, x1 = corner(uv[..., 0], w)
    y0, fy, y1 = corner(uv[..., 1], h)
    flat = image.reshape(b, h * w, c)

    def at(y, x):
        return torch.gather(flat, 1, (y * w + x)[..., None].expand(-1, -1, c))

    fx, fy = fx[..., None], fy[..., None]
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bot = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bot * fy


def chromaticity_edge_weights(image, uv, src, dst, alpha: float = 50.0, eps: float = 1e-6):
    """Torch version of :func:`fml_taichi.ops.regularizers.chromaticity_edge_weights`."""
    check_tensor("image", image, shape=(None, None, None, 3))
    b, h, w = image.shape[:3]
    if h == 0 or w == 0:
        raise ValueError(f"image: empty image ({h}x{w})")
    check_tensor("uv", uv, shape=(b, None, 2), contiguous=False)
    check_same("image", image, "uv", uv)
    check_edges(src, dst, uv.shape[1])
    if not alpha >= 0:
        raise ValueError(f"alpha: expected >= 0, got {alpha}")
    if not eps > 0:
        raise ValueError(f"eps: expected > 0, got {eps}")
    with torch.no_grad():
        col = bilinear_clamped(image, uv)
        ch = col / (col.sum(-1, keepdim=True) + eps)
        d = ch[:, src.long()] - ch[:, dst.long()]
        return torch.exp(-alpha * d.norm(dim=-1))
