"""Mode metrics on a constructed Theta with a known answer."""
import torch

from fml_taichi.viewer import modes as M


def test_geometry_rms_at_three_sigma_and_shading_correlation():
    n = 50
    region = torch.zeros(n, dtype=torch.bool)
    region[:25] = True
    # Mode 0: 2 mm along z on the region only; mode 1: 0.5 mm along x everywhere (orthogonal).
    a = torch.zeros(n, 3)
    a[:25, 2] = 2.0
    b = torch.zeros(n, 3)
    b[:, 0] = 0.5
    theta = torch.stack([a.reshape(-1), b.reshape(-1)], 1).double()
    m = M.principal_modes(theta)
    rms = M.geometry_mode_rms(m, region, 3.0)
    assert torch.allclose(rms.sort().values, torch.tensor([1.5, 6.0], dtype=torch.float64), atol=1e-6)
    # Reflectance: mode 0 grey equal to the shading, mode 1 a pattern orthogonal to it.
    shading = torch.linspace(0, 1, n, dtype=torch.float64)
    pattern = torch.cos(torch.arange(n, dtype=torch.float64) * torch.pi)  # +-1, alternating
    pattern = pattern - (pattern @ (shading - shading.mean())) / ((shading - shading.mean()).norm() ** 2) * (shading - shading.mean())
    r0 = shading[:, None].repeat(1, 3)
    r1 = pattern[:, None].repeat(1, 3) * 0.01
    mr = M.principal_modes(torch.stack([r0.reshape(-1), r1.reshape(-1)], 1))
    corr = M.shading_correlation(mr, shading).abs().sort().values
    assert corr[0] < 0.05 and corr[1] > 0.99
