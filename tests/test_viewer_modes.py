"""Corrective-mode analysis (fml_taichi.viewer.modes): SVD modes, sigmas, ordering, probing."""
import pytest
import torch

from fml_taichi.viewer.modes import (SIGMA_ASSUMED, SIGMA_FROM_FACES, corrective_matrix,
                                              principal_modes)


def _known_theta(n_vertices=20, c=6, seed=0):
    """Theta = U diag(S) V^T with random orthonormal U, V and chosen singular values."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(3 * n_vertices, c, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    s = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)[:c]
    return u @ torch.diag(s) @ v.T, u, s, v


def test_modes_are_u_times_s_and_reproduce_theta():
    theta, u, s, v = _known_theta()
    m = principal_modes(theta)
    assert m.count == 6 and m.sigma_source == SIGMA_ASSUMED
    torch.testing.assert_close(m.singular_values, s)
    # Mode k is Theta applied to the unit coefficient direction V[:, k], reshaped per vertex.
    for k in range(5):
        step = theta @ m.coefficient_directions[:, k]
        torch.testing.assert_close(m.modes[k].reshape(-1), step)
        assert abs(m.modes[k].norm().item() - s[k].item()) < 1e-9
    # Summing all modes' outer products gives Theta back.
    rebuilt = sum(torch.outer(m.modes[k].reshape(-1), m.coefficient_directions[:, k]) for k in range(6))
    torch.testing.assert_close(rebuilt, theta)
    # Unit sigmas for live modes, 0 for the numerically zero one (sorted last).
    torch.testing.assert_close(m.sigma, torch.tensor([1.0, 1, 1, 1, 1, 0], dtype=torch.float64))


def test_sign_convention_largest_entry_positive():
    theta, *_ = _known_theta(seed=3)
    for mat in (theta, -theta):
        m = principal_modes(mat)
        for k in range(5):
            flat = m.modes[k].reshape(-1)
            assert flat[flat.abs().argmax()] > 0


def test_sign_reference_orients_modes():
    theta, *_ = _known_theta(seed=5)
    ref = torch.randn(60, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for mat in (theta, -theta):
        m = principal_modes(mat, sign_reference=ref.reshape(20, 3))
        for k in range(5):
            assert float(m.modes[k].reshape(-1) @ ref) > 0
            # Flipping a mode flips its coefficient direction too: Theta V_k = mode k still holds.
            torch.testing.assert_close(mat @ m.coefficient_directions[:, k], m.modes[k].reshape(-1))
    with pytest.raises(ValueError, match="sign_reference"):
        principal_modes(theta, sign_reference=torch.ones(59, dtype=torch.float64))


def test_sigma_from_regressed_faces_reorders_modes():
    theta, u, s, v = _known_theta()
    g = torch.Generator().manual_seed(1)
    # Regressed deltas spread 10x more along the weakest live direction V[:, 4] (S = 0.5) than
    # along the others: its one-sigma offset (0.5 * 10 = 5, vs 5 * 0.1 = 0.5) makes it the top mode.
    coords = torch.randn(4000, 6, generator=g, dtype=torch.float64) * torch.tensor([0.1, 0.1, 0.1, 0.1, 10.0, 1.0],
                                                                                  dtype=torch.float64)
    deltas = coords @ v.T + 0.3
    m = principal_modes(theta, deltas)
    assert m.sigma_source == SIGMA_FROM_FACES
    assert abs(m.singular_values[0].item() - 0.5) < 1e-9
    assert abs(m.sigma[0].item() - 10.0) < 0.5
    norms = m.one_sigma_norm
    assert bool((norms[:-1] >= norms[1:]).all())
    torch.testing.assert_close(m.mean, torch.full((6,), 0.3, dtype=torch.float64), atol=0.5, rtol=0)
    # coefficients(k, s) moves s sigmas along V[:, k]: its projection on V[:, k] is s * sigma.
    c = m.coefficients(0, 2.0)
    assert abs((c @ m.coefficient_directions[:, 0]).item() - 2.0 * m.sigma[0].item()) < 1e-9
    torch.testing.assert_close(theta @ c, m.offset(0, 2.0).reshape(-1))


def test_combine_adds_modes():
    theta, *_ = _known_theta()
    m = principal_modes(theta)
    c = m.combine(torch.tensor([1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(c, m.coefficients(0, 1.0) + m.coefficients(1, -2.0))


def test_zero_theta_gives_zero_modes():
    m = principal_modes(torch.zeros(30, 4))
    assert m.count == 4
    assert float(m.modes.abs().max()) == 0.0 and float(m.sigma.abs().max()) == 0.0


def test_corrective_matrix_measures_linear_map_and_cancels_bias():
    theta, *_ = _known_theta(n_vertices=10)
    bias = torch.randn(30, dtype=torch.float64)

    def affine(delta):
        return (delta.to(torch.float64) @ theta.T + bias).reshape(delta.shape[0], 10, 3)

    got = corrective_matrix(affine, 6, 10, dtype=torch.float64)
    torch.testing.assert_close(got, theta)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(31, 4), "theta"),
    (torch.zeros(3, 0), "theta"),
    (torch.full((6, 2), float("nan")), "NaN"),
    (torch.zeros(6), "theta"),
])
def test_bad_theta_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        principal_modes(bad)


def test_bad_deltas_and_indices_are_named():
    theta, *_ = _known_theta()
    with pytest.raises(ValueError, match="deltas"):
        principal_modes(theta, torch.zeros(5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        principal_modes(theta, torch.zeros(1, 6, dtype=torch.float64))
    m = principal_modes(theta)
    with pytest.raises(ValueError, match="mode index"):
        m.coefficients(6, 1.0)
    with pytest.raises(ValueError, match="corrective"):
        corrective_matrix(lambda d: torch.zeros(d.shape[0], 5), 6, 10)
