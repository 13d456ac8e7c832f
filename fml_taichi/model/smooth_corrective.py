"""A learned linear corrective confined to smooth functions on the mesh: ``Theta = E W``.

``E`` [N, K] holds the K lowest eigenvectors of the mesh's graph Laplacian (fixed, smooth functions
on the surface, the first one constant); ``W`` [K, 3, C] is learned. Offsets are
``F(delta)[n, j] = sum_k E[n, k] sum_c W[k, j, c] delta_c``, i.e. the paper's linear corrective
``Theta delta`` with Theta constrained to the span of smooth fields.

Why (measured on the CPU default): with a free Theta [3N, C] and a few thousand steps, the geometry
correctives learn per-vertex noise and a global "shrink" of the mesh that hedges against pose errors
in the photometric term; both raise the geometric error of the final level above the base level.
In the smooth span those warps cannot crumple, and a much smaller parameter set (3 K C instead of
3 N C) learns from the same number of images. The reflectance corrective stays the free linear
one (beards and make-up have sharp edges).

Interface: same as :class:`fml_taichi.model.LinearCorrective` (``n_vertices``, ``n_components``,
``forward(delta [B, C]) -> [B, N, 3]``, F(0) = 0) plus a read-only ``theta`` [3N, C] property, so
tools that analyse Theta (SVD of corrective modes) work unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..common.checks import check_tensor
from .reflectance import laplacian_eigenvectors


def smooth_basis(triangles, n_vertices: int, k: int) -> torch.Tensor:
    """[N, K] lowest graph-Laplacian eigenvectors (unit RMS, deterministic signs), float32."""
    if not 1 <= k < n_vertices - 1:
        raise ValueError(f"smooth corrective: need 1 <= K < N - 1 eigenvectors, got K={k} for N={n_vertices}")
    tri = triangles.cpu().numpy() if isinstance(triangles, torch.Tensor) else np.asarray(triangles)
    _, vecs = laplacian_eigenvectors(tri.astype(np.int64), int(n_vertices), int(k))
    return torch.as_tensor(np.ascontiguousarray(vecs), dtype=torch.float32)


class SmoothLinearCorrective(nn.Module):
    """``offsets = E (W delta)``: see the module docstring. ``basis`` [N, K] is a buffer (saved with
    the weights, so a checkpoint needs no eigen-solve to load)."""

    def __init__(self, basis: torch.Tensor, n_components: int, init_std: float = 1e-2, seed: int | None = 0):
        super().__init__()
        check_tensor("basis", basis, shape=(None, None))
        if n_components < 1:
            raise ValueError(f"n_components must be positive, got {n_components}")
        self.n_vertices, k = basis.shape
        self.n_components = int(n_components)
        self.register_buffer("basis", basis.clone())
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        self.weight = nn.Parameter(torch.randn(k, 3, n_components, generator=g) * init_std)

    @property
    def theta(self) -> torch.Tensor:
        """The equivalent linear corrective basis [3N, C] (x0 y0 z0 x1 ... rows)."""
        return torch.einsum("nk,kjc->njc", self.basis, self.weight).reshape(3 * self.n_vertices, self.n_components)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` [B, C] -> offsets [B, N, 3]."""
        check_tensor("delta", delta, shape=(None, self.n_components), dtypes=(self.weight.dtype,), contiguous=False)
        k = self.weight.shape[0]
        coef = (delta @ self.weight.reshape(k * 3, self.n_components).T).view(-1, k, 3)
        # E coef as coef^T E^T with E^T contiguous: a GEMM with 3 output columns is ~6x slower on the
        # CPU than one with 3 output rows (measured 414 vs 63 us at N = 4k, K = 60).
        return (coef.transpose(1, 2) @ self._basis_t()).transpose(1, 2).contiguous()

    def _basis_t(self) -> torch.Tensor:
        """``basis.T`` [K, N], contiguous, cached until the buffer changes (device, dtype or in place)."""
        key = (self.basis.data_ptr(), self.basis._version, self.basis.dtype, self.basis.device)
        if getattr(self, "_basis_t_key", None) != key:
            self._basis_t_cache = self.basis.detach().T.contiguous()
            self._basis_t_key = key
        return self._basis_t_cache

    def extra_repr(self) -> str:
        return f"n_vertices={self.n_vertices}, n_components={self.n_components}, n_smooth={self.weight.shape[0]}"
