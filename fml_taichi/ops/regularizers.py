"""Regulariser kernels on per-point attributes ``values[B, N, C]`` over a graph (generic, any C).

- :func:`laplacian_energy`: ``1/N sum_i ||x_i - mean_{j in N_i} x_j||^2`` over a CSR adjacency
  (umbrella Laplacian; a point without neighbours contributes 0).
- :func:`pair_energy`: ``sum_e w[b, e] phi(||x[src_e] - x[dst_e]||)`` over an edge list, with
  ``phi(d) = d^2`` (``p = 2``) or the smoothed sparsity norm ``phi(d) = (d^2 + eps^2)^(p/2) - eps^p``
  (``p < 2``; exactly 0 at d = 0 and with a finite gradient there, unlike ``d^p``).
- :func:`weighted_sum_of_squares`: ``sum_d w_d x[b, d]^2`` (Tikhonov / stabilisation terms).
- :func:`chromaticity_edge_weights`: constant (no-gradient) edge weights
  ``exp(-alpha ||chroma(I(uv_src)) - chroma(I(uv_dst))||)`` with ``chroma(c) = c / (c_r + c_g + c_b + eps)``,
  the image bilinearly sampled (border-clamped) at each point's pixel position.

Kernel structure, decided by measurement (2-core CPU shared with other jobs, 20k points, 120k edges,
batch 5; best of 15-40 runs):
- One top-level loop over the large dimension (points or edges) with the batch as an inner loop: a
  2-D ``ti.ndrange(B, E)`` costs an integer division per element and ran a trivial kernel 4x slower
  (1.8 ms vs 0.45 ms for 600k elements), and an edge's indices are loaded once for all B images.
- Per-element energies go to a buffer summed by torch: ``loss[b] += ...`` from every thread made them
  all contend on B addresses. Pair energy (p = 2) forward: 46 ms with that, 9.3 ms per-element on a
  2-D loop, 2.5 ms per-element on the 1-D loop.
- Hand-written backward passes, not Taichi autodiff: autodiff needs static inner loops (so the 2-D
  loop above) and re-evaluates ``pow`` and its exponent derivative in reverse (pair energy, p = 0.9:
  45 ms forward + backward with autodiff, 16 ms hand-written). The forward stores ``dphi/d(d^2)`` per
  edge and the backward is a plain atomic scatter; the Laplacian is linear, so its backward is
  ``2 L^T (L x)``. A gather-based (atomic-free) backward would need transposed incidence lists; the
  scatter costs ~5-10 ms per op at 43k points, left as is.

Float hyper-parameters (``p``, ``eps``, ``alpha``) travel as a small ndarray of the data's dtype, and
normalising constants are applied in torch: with ``default_fp = f32`` Taichi rounds float literals and
scalar arguments to f32 even inside f64 kernels, which would spoil float64 gradient checks.
"""
import torch

from ..common import runtime
from ..common.checks import check_same, check_tensor
from ..common.loss_checks import check_csr, check_edges, check_values
from ..kernels.regularizers import SUM_CHUNK, chroma_kernels, laplacian_kernels, pair_kernels, sum_sq_kernels
from .bridge import detached, ti_float

__all__ = ["laplacian_energy", "pair_energy", "weighted_sum_of_squares", "chromaticity_edge_weights"]


class _Laplacian(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, offsets, neighbours):
        fwd, _ = laplacian_kernels(ti_float(values.dtype), values.shape[2])
        lap = torch.empty_like(values)
        energy = torch.empty(values.shape[:2], dtype=values.dtype, device=values.device)
        fwd(*detached([values, offsets, neighbours, lap, energy]))
        ctx.save_for_backward(lap, offsets, neighbours)
        return energy.sum(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        lap, offsets, neighbours = ctx.saved_tensors
        _, bwd = laplacian_kernels(ti_float(lap.dtype), lap.shape[2])
        grad = torch.zeros_like(lap)
        bwd(lap, offsets, neighbours, grad_loss.detach().to(lap.dtype).contiguous(), grad)
        return grad, None, None


def laplacian_energy(values: torch.Tensor, offsets: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Mean squared umbrella Laplacian of per-point attributes over a CSR adjacency.

    ``loss[b] = 1/N sum_i || 1/|N_i| sum_{j in N_i} (x[b, i] - x[b, j]) ||^2``; points with no
    neighbours contribute 0 (and still count in N).

    Args:
        values: (B, N, C) float32/float64 attributes (e.g. per-vertex displacements).
        offsets: (N + 1,) int32 CSR row offsets, non-decreasing from 0 to ``len(neighbours)``.
        neighbours: (E,) int32 neighbour indices in ``[0, N)``.

    Returns:
        (B,) energies, differentiable w.r.t. ``values`` (hand-written backward, see the module docstring).
    """
    b, n, _ = check_values("values", values)
    check_csr(offsets, neighbours, n, n, names=("offsets", "neighbours"), allow_empty=True)
    runtime.init()
    return _Laplacian.apply(values, offsets, neighbours) / n


class _Pair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, src, dst, weights, hyper, squared):
        fwd, _ = pair_kernels(ti_float(values.dtype), values.shape[2], squared)
        energy = torch.empty(values.shape[0], src.shape[0], dtype=values.dtype, device=values.device)
        # For p = 2, phi'(s) = 1: the weights are the coefficients (the kernel leaves coef alone).
        coef = weights if squared else torch.empty_like(energy)
        fwd(*detached([values, src, dst, weights, hyper, energy, coef]))
        ctx.save_for_backward(values, src, dst, coef)
        ctx.squared = squared
        return energy.sum(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        values, src, dst, coef = ctx.saved_tensors
        _, bwd = pair_kernels(ti_float(values.dtype), values.shape[2], ctx.squared)
        grad = torch.zeros_like(values)
        bwd(values.detach(), src, dst, coef, grad_loss.detach().to(values.dtype).contiguous(), grad)
        return grad, None, None, None, None, None


def pair_energy(values: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None,
                p: float = 2.0, eps: float = 1e-3) -> torch.Tensor:
    """Weighted sum over point pairs of a norm of their attribute difference.

    ``loss[b] = sum_e weights[b, e] * phi(||values[b, src[e]] - values[b, dst[e]]||_2)`` with
    ``phi(d) = d^2`` for ``p == 2`` and ``phi(d) = (d^2 + eps^2)^(p/2) - eps^p`` for ``0 < p < 2``
    (a smoothed ``d^p``: zero at ``d = 0``, finite gradient everywhere; ``eps`` in the units of ``values``).
    Not normalised: divide by the count your energy is defined over.

    Args:
        values: (B, N, C) float32/float64 attributes.
        src, dst: (E,) int32 point indices in ``[0, N)``, the pairs' endpoints.
        weights: (B, E) or (E,) per-pair weights of the values' dtype, constant (no gradient);
            ``None`` means all ones.
        p: exponent, ``0 < p <= 2``. eps: smoothing (> 0), used only when ``p < 2``.

    Returns:
        (B,) energies, differentiable w.r.t. ``values`` (hand-written backward, see the module docstring).
    """
    b, n, _ = check_values("values", values)
    e = check_edges(src, dst, n)
    weights = _edge_weights(weights, values, b, e)
    if not (0 < p <= 2):
        raise ValueError(f"p: expected 0 < p <= 2, got {p}")
    if p < 2 and not eps > 0:
        raise ValueError(f"eps: expected > 0 for p < 2, got {eps}")
    runtime.init()
    squared = p == 2
    # Computed in double, stored in the data's dtype (exact for float64 checks).
    hyper = torch.tensor([p / 2, eps * eps, (eps * eps) ** (p / 2)], dtype=values.dtype, device=values.device)
    return _Pair.apply(values, src, dst, weights, hyper, squared)


def _edge_weights(weights, values, b: int, e: int) -> torch.Tensor:
    """(B, E) contiguous constant weights from None / (E,) / (B, E)."""
    if weights is None:
        return torch.ones(b, e, dtype=values.dtype, device=values.device)
    check_tensor("weights", weights, shape=(e,) if getattr(weights, "ndim", 0) == 1 else (b, e), contiguous=False)
    check_same("values", values, "weights", weights)
    return weights.detach().expand(b, e).contiguous()


class _SumSq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, weights):
        fwd, _ = sum_sq_kernels(ti_float(values.dtype))
        chunks = -(-values.shape[1] // SUM_CHUNK)
        partial = torch.empty(values.shape[0], chunks, dtype=values.dtype, device=values.device)
        fwd(*detached([values, weights, partial]))
        ctx.save_for_backward(values, weights)
        return partial.sum(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        values, weights = ctx.saved_tensors
        _, bwd = sum_sq_kernels(ti_float(values.dtype))
        grad = torch.empty_like(values)
        bwd(values.detach(), weights, grad_loss.detach().to(values.dtype).contiguous(), grad)
        return grad, None


def weighted_sum_of_squares(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``loss[b] = sum_d weights[d] * values[b, d]^2``.

    Args:
        values: (B, D) float32/float64 (flatten per-point attributes to (B, N*C) first).
        weights: (D,) constant per-entry weights of the same dtype (e.g. ``1 / sigma^2``); ``None``: ones.

    Returns:
        (B,) sums, differentiable w.r.t. ``values`` (hand-written backward).
    """
    check_tensor("values", values, shape=(None, None))
    if values.shape[1] == 0:
        raise ValueError("values: no entries (D = 0)")
    if weights is None:
        weights = torch.ones(values.shape[1], dtype=values.dtype, device=values.device)
    check_tensor("weights", weights, shape=(values.shape[1],))
    check_same("values", values, "weights", weights)
    runtime.init()
    return _SumSq.apply(values, weights.detach())


def chromaticity_edge_weights(image: torch.Tensor, uv: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                              alpha: float = 50.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-edge weights from the chromaticity similarity of the image at the endpoints' pixels.

    ``w[b, e] = exp(-alpha * ||ch(I_b(uv[b, src[e]])) - ch(I_b(uv[b, dst[e]]))||_2)`` where ``I_b`` is
    sampled bilinearly (coordinates clamped to the image, pixel centres at integers) and
    ``ch(c) = c / (c_r + c_g + c_b + eps)`` (chromaticity: colour with its intensity divided out).
    No gradient: these are constants of the energy they weight (computed at the previous iterate).

    Args:
        image: (B, H, W, 3) float32/float64, channels last. uv: (B, N, 2) pixel positions (x, y).
        src, dst: (E,) int32 indices in ``[0, N)``. alpha: sharpness (>= 0). eps: > 0, guards black pixels.

    Returns:
        (B, E) weights in (0, 1], the image's dtype.
    """
    check_tensor("image", image, shape=(None, None, None, 3))
    b, h, w = image.shape[:3]
    if h == 0 or w == 0:
        raise ValueError(f"image: empty image ({h}x{w})")
    check_tensor("uv", uv, shape=(b, None, 2), contiguous=False)
    check_same("image", image, "uv", uv)
    e = check_edges(src, dst, uv.shape[1])
    if not alpha >= 0:
        raise ValueError(f"alpha: expected >= 0, got {alpha}")
    if not eps > 0:
        raise ValueError(f"eps: expected > 0, got {eps}")
    runtime.init()
    chroma_k, edge_k = chroma_kernels(ti_float(image.dtype))
    hyper = torch.tensor([alpha, eps], dtype=image.dtype, device=image.device)
    chroma = torch.empty(b, uv.shape[1], 3, dtype=image.dtype, device=image.device)
    chroma_k(*detached([image, uv.contiguous(), hyper, chroma]))
    out = torch.empty(b, e, dtype=image.dtype, device=image.device)
    edge_k(chroma, src, dst, hyper, out)
    return out
