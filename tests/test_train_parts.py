"""Training components with their own maths: smooth corrective, LR schedule, warm start, final landmarks."""
import math

import pytest
import torch

from fml_taichi.model import default_face_model
from fml_taichi.model.mesh import graph_laplacian
from fml_taichi.nets.config import from_dict
from fml_taichi.model.smooth_corrective import SmoothLinearCorrective, smooth_basis
from fml_taichi.train.trainer import lr_factor
from fml_taichi.train.warm_start import principal_basis, ridge_gcv


@pytest.fixture(scope="module")
def small_model():
    return default_face_model(500)


def test_smooth_corrective_matches_its_theta_and_is_smooth(small_model):
    fm = small_model
    basis = smooth_basis(fm.triangles, fm.n_vertices, 20)
    assert basis.shape == (fm.n_vertices, 20)
    corr = SmoothLinearCorrective(basis, n_components=5, init_std=0.1, seed=1)
    delta = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    out = corr(delta)
    assert out.shape == (3, fm.n_vertices, 3)
    torch.testing.assert_close(out, (delta @ corr.theta.T).view(3, -1, 3))  # same maths as a linear Theta
    assert torch.count_nonzero(corr(torch.zeros(1, 5))) == 0  # F(0) = 0
    # Smoothness: Laplacian energy per unit of displacement far below that of a free random Theta.
    lap = torch.as_tensor(graph_laplacian(fm.triangles.numpy(), fm.n_vertices).toarray(), dtype=torch.float32)
    free = torch.randn(fm.n_vertices, 3, generator=torch.Generator().manual_seed(2))
    ratio = lambda f: float((lap @ f).pow(2).sum() / f.pow(2).sum())  # noqa: E731
    assert ratio(out[0].detach()) < 0.05 * ratio(free)
    with pytest.raises(ValueError, match="delta"):
        corr(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="eigenvectors"):
        smooth_basis(fm.triangles, fm.n_vertices, fm.n_vertices)


def test_config_builds_the_smooth_geometry_corrective(small_model):
    from fml_taichi.nets.models import build_networks

    cfg = from_dict({"model": {"n_vertices": 500, "n_correctives_geometry": 6, "n_correctives_reflectance": 4,
                               "geometry_smooth": 12}})
    multilevel, _ = build_networks(cfg, small_model)
    assert isinstance(multilevel.geometry_corrective, SmoothLinearCorrective)
    assert multilevel.geometry_corrective.weight.shape == (12, 3, 6)
    assert "geometry_corrective.basis" in multilevel.state_dict()  # a checkpoint needs no eigen-solve


def test_cosine_schedule_with_warmup():
    s = from_dict({"stage1": {"steps": 100, "schedule": "cosine", "warmup_steps": 10}}).stage1
    assert lr_factor(s, 0) == pytest.approx(0.1)
    assert lr_factor(s, 9) == pytest.approx(1.0)
    assert lr_factor(s, 10) == pytest.approx(1.0)
    assert lr_factor(s, 55) == pytest.approx(0.5)
    assert lr_factor(s, 99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    const = from_dict({}).stage1
    assert lr_factor(const, 0) == lr_factor(const, 10 ** 6) == 1.0


def test_principal_basis_recovers_a_low_rank_field():
    g = torch.Generator().manual_seed(0)
    true_basis = torch.randn(30, 3, generator=g)
    coef = torch.randn(200, 3, generator=g)
    x = coef @ true_basis.T
    basis, c = principal_basis(x, 5)
    assert basis.shape == (30, 5) and c.shape == (200, 5)
    torch.testing.assert_close(c @ basis.T, x, atol=1e-4, rtol=1e-4)
    assert c[:, :3].pow(2).mean(0).allclose(torch.ones(3), atol=1e-4)  # unit mean square coefficients
    assert basis[:, 3:].abs().max() < 1e-4  # rank 3: nothing left for the extra columns


def test_ridge_gcv_fits_a_linear_map_and_shrinks_noise():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(300, 20, generator=g)
    w_true = torch.randn(20, 2, generator=g)
    y = f @ w_true + 0.5 + 0.01 * torch.randn(300, 2, generator=g)
    w, b, lam = ridge_gcv(f, y)
    torch.testing.assert_close(w, w_true, atol=0.02, rtol=0.0)
    torch.testing.assert_close(b, torch.full((2,), 0.5), atol=0.02, rtol=0.0)
    # Pure noise targets: GCV picks heavy regularisation and predicts (almost) the mean.
    noise = torch.randn(300, 2, generator=g)
    w2, _, lam2 = ridge_gcv(f, noise)
    assert lam2 > lam and w2.abs().max() < 0.1


def test_final_landmarks_add_the_final_level_sparse_term(small_model):
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
    from fml_taichi.losses import default_weights
    from fml_taichi.model import MultiLevelModel
    from fml_taichi.train.objective import stage_loss

    fm = small_model
    batch = SyntheticRenderer(fm, SyntheticConfig(image_size=64)).render([0, 1])
    ml = MultiLevelModel(fm, 4, 4)
    params = batch["gt_params"].replace(delta_geometry=torch.ones(2, 4), delta_reflectance=torch.zeros(2, 4))
    out = ml(params)
    k = batch["intrinsics"][0]
    w = default_weights()
    plain = stage_loss(2, out, params, fm, batch, k, w, impl="torch")
    extra = stage_loss(2, out, params, fm, batch, k, w, impl="torch", final_landmarks=2.0)
    assert "sparse_final" not in plain and extra["sparse_final"] > 0
    torch.testing.assert_close(extra["total"], plain["total"] + 2.0 * extra["sparse_final"])
    one = stage_loss(1, out, params, fm, batch, k, w, impl="torch")
    assert set(one) >= {"photo_base", "sparse", "std", "total"} and "photo_final" not in one


def test_shading_span_is_orthonormal_and_holds_sh_shading(small_model):
    from fml_taichi.model import mesh as mesh_utils
    from fml_taichi.reference.image_formation import sh_basis
    from fml_taichi.train.warm_start import shading_span

    fm = small_model
    q = shading_span(fm)
    assert q.shape == (3 * fm.n_vertices, 27)
    torch.testing.assert_close(q.T @ q, torch.eye(27, dtype=q.dtype), atol=1e-8, rtol=0)
    v = fm.mean_geometry.double().numpy()
    normals = torch.as_tensor(mesh_utils.vertex_normals(v, fm.triangles.long().numpy()))
    light = torch.randn(9, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shading = (sh_basis(normals.unsqueeze(0))[0].double() @ light).reshape(-1)  # a tinted SH shading field
    assert float((shading - q @ (q.T @ shading)).norm()) < 1e-8 * float(shading.norm())
    colour = torch.zeros(fm.n_vertices, 3, dtype=torch.float64)
    colour[: fm.n_vertices // 4, 0] = 1.0  # a red patch: mostly outside the span
    c = colour.reshape(-1)
    assert float((c - q @ (q.T @ c)).norm()) > 0.5 * float(c.norm())
