"""Regulariser kernels vs their torch references, float64 gradient checks, known values, input errors."""
import pytest
import torch

from fml_taichi.kernels.regularizers import SUM_CHUNK
from fml_taichi.ops import regularizers as K
from fml_taichi.reference import regularizers as R


def _graph(n=25, e=90, seed=0):
    """A random CSR adjacency with some isolated rows, plus an edge list."""
    g = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randint(0, e + 1, (n - 1,), generator=g)).values
    offsets = torch.cat([torch.tensor([0]), cuts, torch.tensor([e])]).to(torch.int32)
    neighbours = torch.randint(0, n, (e,), generator=g, dtype=torch.int32)
    return offsets, neighbours


def _values(dtype, b=2, n=25, c=3, seed=1):
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _compare(fk, fr, x, tol):
    outs = []
    for f in (fk, fr):
        xx = x.clone().requires_grad_()
        loss = f(xx)
        (g,) = torch.autograd.grad((loss * torch.arange(1, loss.shape[0] + 1, dtype=loss.dtype)).sum(), xx)
        outs.append((loss, g))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=tol, atol=tol * float(b.detach().abs().max()))
    assert outs[0][0].abs().min() > 0 and outs[0][1].abs().sum() > 0


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_laplacian_matches_reference(dtype, tol):
    off, nb = _graph()
    _compare(lambda x: K.laplacian_energy(x, off, nb), lambda x: R.laplacian_energy(x, off, nb), _values(dtype), tol)


@pytest.mark.parametrize("p", [2.0, 0.9])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_pair_energy_matches_reference(dtype, tol, p):
    off, nb = _graph()
    src = R.csr_rows(off).to(torch.int32)
    w = torch.rand(2, nb.shape[0], generator=torch.Generator().manual_seed(2), dtype=dtype)
    _compare(lambda x: K.pair_energy(x, src, nb, w, p=p), lambda x: R.pair_energy(x, src, nb, w, p=p),
             _values(dtype), tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_weighted_sum_of_squares_matches_reference(dtype, tol):
    w = torch.rand(75, generator=torch.Generator().manual_seed(3), dtype=dtype)
    _compare(lambda x: K.weighted_sum_of_squares(x.reshape(2, -1), w),
             lambda x: R.weighted_sum_of_squares(x.reshape(2, -1), w), _values(dtype), tol)
    # Several partial-sum chunks, the last one short.
    d = 2 * SUM_CHUNK + 37
    big = torch.randn(2, d, generator=torch.Generator().manual_seed(4), dtype=dtype)
    wb = torch.rand(d, generator=torch.Generator().manual_seed(5), dtype=dtype)
    _compare(lambda x: K.weighted_sum_of_squares(x, wb), lambda x: R.weighted_sum_of_squares(x, wb), big, tol)


def test_gradcheck_float64():
    off, nb = _graph(n=8, e=20)
    src = R.csr_rows(off).to(torch.int32)
    x = _values(torch.float64, n=8).requires_grad_()
    w = torch.rand(2, 20, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: K.laplacian_energy(v, off, nb), (x,))
    assert torch.autograd.gradcheck(lambda v: K.pair_energy(v, src, nb, w), (x,))
    # eps comparable to the differences keeps finite differences well conditioned for p < 2.
    assert torch.autograd.gradcheck(lambda v: K.pair_energy(v, src, nb, w, p=0.9, eps=0.1), (x,))
    assert torch.autograd.gradcheck(lambda v: K.weighted_sum_of_squares(v.reshape(2, -1), w.reshape(-1)[:24]), (x,))


def test_known_values():
    # Path 0-1-2 with symmetric 1-rings; values 0, 1, 5 in one channel.
    off = torch.tensor([0, 1, 3, 4], dtype=torch.int32)
    nb = torch.tensor([1, 0, 2, 1], dtype=torch.int32)
    x = torch.tensor([[[0.0], [1.0], [5.0]]], dtype=torch.float64)
    # residuals: 0-1 = -1, 1-(0+5)/2 = -1.5, 5-1 = 4 -> mean of squares (1 + 2.25 + 16) / 3
    assert torch.allclose(K.laplacian_energy(x, off, nb), torch.tensor([19.25 / 3], dtype=torch.float64))
    # Constant and affine-free cases are exactly zero; a translation of all values changes nothing.
    assert K.laplacian_energy(torch.full((1, 3, 2), 7.0), off, nb).abs().max() == 0
    src = torch.tensor([0, 1], dtype=torch.int32)
    dst = torch.tensor([2, 2], dtype=torch.int32)
    assert torch.allclose(K.pair_energy(x, src, dst), torch.tensor([25.0 + 16.0], dtype=torch.float64))
    sparse = K.pair_energy(x, src, dst, p=0.9, eps=1e-6)
    # phi(d) = (d^2 + eps^2)^(p/2) - eps^p: ~d^p, shifted so that phi(0) = 0.
    want = 5.0 ** 0.9 + 4.0 ** 0.9 - 2 * 1e-6 ** 0.9
    assert torch.allclose(sparse, torch.tensor([want], dtype=torch.float64), rtol=1e-10)
    assert K.pair_energy(torch.ones(1, 3, 3), src, dst, p=0.9).abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chromaticity_weights_match_reference_and_meaning(dtype):
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 7, 9, 3, generator=g, dtype=dtype)
    uv = torch.rand(2, 12, 2, generator=g, dtype=dtype) * 12 - 1.5  # some outside: clamped
    src = torch.randint(0, 12, (30,), generator=g, dtype=torch.int32)
    dst = torch.randint(0, 12, (30,), generator=g, dtype=torch.int32)
    got = K.chromaticity_edge_weights(image, uv, src, dst)
    assert torch.allclose(got, R.chromaticity_edge_weights(image, uv, src, dst), rtol=1e-4, atol=1e-6)
    # Same chromaticity at different brightness -> weight 1; different hue -> small weight.
    img = torch.zeros(1, 2, 2, 3, dtype=dtype)
    img[0, 0, 0] = torch.tensor([0.2, 0.1, 0.1])
    img[0, 0, 1] = torch.tensor([0.8, 0.4, 0.4])
    img[0, 1, 0] = torch.tensor([0.1, 0.1, 0.4])
    uv2 = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=dtype)
    w = K.chromaticity_edge_weights(img, uv2, torch.tensor([0, 0], dtype=torch.int32),
                                    torch.tensor([1, 2], dtype=torch.int32))
    assert abs(float(w[0, 0]) - 1) < 1e-4 and float(w[0, 1]) < 1e-5


def test_bad_inputs_raise_value_errors_naming_the_argument():
    off, nb = _graph()
    x = _values(torch.float32)
    src = R.csr_rows(off).to(torch.int32)
    cases = [
        (lambda: K.laplacian_energy(x[..., 0], off, nb), "values"),
        (lambda: K.laplacian_energy(x.transpose(1, 2), off, nb), "values"),
        (lambda: K.laplacian_energy(x, off[:-1], nb), "offsets"),
        (lambda: K.laplacian_energy(x, off.flip(0), nb), "offsets"),
        (lambda: K.laplacian_energy(x, off, nb + 25), "neighbours"),
        (lambda: K.laplacian_energy(x[:, :0].contiguous(), off[:1], nb[:0]), "values"),
        (lambda: K.pair_energy(x, src, nb.long()), "dst"),
        (lambda: K.pair_energy(x, src[:0], nb[:0]), "src"),
        (lambda: K.pair_energy(x, src, nb, torch.ones(3)), "weights"),
        (lambda: K.pair_energy(x, src, nb, p=3.0), "p"),
        (lambda: K.pair_energy(x * float("inf"), src, nb), "values"),
        (lambda: K.weighted_sum_of_squares(x.reshape(2, -1), torch.ones(3)), "weights"),
        (lambda: K.chromaticity_edge_weights(x, x[..., :2], src, nb), "image"),
        (lambda: K.chromaticity_edge_weights(torch.rand(2, 4, 4, 3), torch.rand(2, 25, 2).double(), src, nb), "uv"),
        (lambda: K.chromaticity_edge_weights(torch.rand(2, 4, 4, 3), torch.rand(2, 25, 2), src, nb, eps=0), "eps"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
