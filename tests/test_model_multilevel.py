"""MultiLevelModel / FaceModel.base / correctives: values against an explicit reference, gradients, checkpoints."""
import numpy as np
import pytest
import torch

from fml_taichi.model import FaceParams, LinearCorrective, MLPCorrective, ModelOutput, MultiLevelModel
from model_fixtures import small_default_model, tiny_random_model


def _random_params(mm: MultiLevelModel, batch: int, seed: int = 0) -> FaceParams:
    g = torch.Generator().manual_seed(seed)
    p = mm.zero_params(batch)
    return p.replace(**{k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.as_dict().items()})


def test_base_matches_explicit_sum():
    fm = tiny_random_model()
    mm = MultiLevelModel(fm, 4, 3)
    p = _random_params(mm, 2)
    geo, refl = fm.base(p.shape, p.expression, p.reflectance)
    # Eq. 3/4 written out vertex by vertex in numpy: a + sum_k alpha_k b_k
    a = fm.mean_geometry.numpy()[None] + np.einsum("bk,nck->bnc", p.shape.numpy(), fm.shape_basis.numpy())
    a += np.einsum("bk,nck->bnc", p.expression.numpy(), fm.expression_basis.numpy())
    r = fm.mean_reflectance.numpy()[None] + np.einsum("bk,nck->bnc", p.reflectance.numpy(), fm.reflectance_basis.numpy())
    np.testing.assert_allclose(geo.numpy(), a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(refl.numpy(), r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_final_is_base_plus_corrective_and_equal_at_zero_delta(kind):
    fm = tiny_random_model()
    mm = MultiLevelModel(fm, 5, 4, kind=kind, mlp_hidden=(6,))
    p = _random_params(mm, 3)
    out = mm(p)
    assert isinstance(out, ModelOutput)
    torch.testing.assert_close(out.final_geometry, out.base_geometry + out.geometry_corrective)
    torch.testing.assert_close(out.final_reflectance, out.base_reflectance + out.reflectance_corrective)
    assert out.geometry_corrective.abs().max() > 0
    zero = mm(p.replace(delta_geometry=torch.zeros_like(p.delta_geometry),
                        delta_reflectance=torch.zeros_like(p.delta_reflectance)))
    assert torch.equal(zero.final_geometry, zero.base_geometry)
    assert torch.equal(zero.final_reflectance, zero.base_reflectance)
    torch.testing.assert_close(zero.base_geometry, out.base_geometry)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_gradcheck_float64(kind):
    fm = tiny_random_model()
    mm = MultiLevelModel(fm, 3, 2, kind=kind, mlp_hidden=(4,))
    p = _random_params(mm, 2)
    names = ["shape", "expression", "reflectance", "delta_geometry", "delta_reflectance"]
    theta_names = [n for n, _ in mm.named_parameters()]

    def f(*xs):
        # Theta enters as explicit inputs through functional_call, so gradcheck perturbs it too.
        q = p.replace(**dict(zip(names, xs[: len(names)])))
        out = torch.func.functional_call(mm, dict(zip(theta_names, xs[len(names):])), (q,))
        return out.final_geometry, out.final_reflectance, out.base_geometry

    inputs = [getattr(p, n).clone().requires_grad_() for n in names] + [t.detach().clone().requires_grad_() for t in mm.parameters()]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_gradients_reach_params_and_theta_on_default_model():
    mm = MultiLevelModel(small_default_model(), 20, 30)
    p = _random_params(mm, 2)
    for k in ("shape", "expression", "reflectance", "delta_geometry", "delta_reflectance"):
        getattr(p, k).requires_grad_()
    out = mm(p)
    (out.final_geometry.square().mean() + out.final_reflectance.square().mean()).backward()
    for k in ("shape", "expression", "reflectance", "delta_geometry", "delta_reflectance"):
        g = getattr(p, k).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, k
    for name, t in mm.named_parameters():
        assert t.grad is not None and t.grad.abs().sum() > 0, name


def test_state_dict_holds_only_theta_and_roundtrips():
    fm = tiny_random_model(dtype=torch.float32)
    a = MultiLevelModel(fm, 4, 3, seed=1)
    b = MultiLevelModel(fm, 4, 3, seed=2)
    assert set(a.state_dict()) == {"geometry_corrective.theta", "reflectance_corrective.theta"}
    assert not torch.equal(a.geometry_corrective.theta, b.geometry_corrective.theta)
    b.load_state_dict(a.state_dict())
    p = _random_params(a, 2)
    torch.testing.assert_close(a(p).final_geometry, b(p).final_geometry)


def test_double_moves_base_model_too():
    mm = MultiLevelModel(tiny_random_model(dtype=torch.float32), 4, 3).double()
    assert mm.face_model.dtype == torch.float64 and mm.face_model.triangles.dtype == torch.int32
    assert mm.geometry_corrective.theta.dtype == torch.float64
    out = mm(_random_params(mm, 1))
    assert out.final_geometry.dtype == torch.float64


def test_bad_inputs_name_the_argument():
    mm = MultiLevelModel(tiny_random_model(), 4, 3)
    p = mm.zero_params(2)
    with pytest.raises(ValueError, match="shape"):
        mm(p.replace(shape=torch.zeros(2, 7, dtype=torch.float64)))
    with pytest.raises(ValueError, match="delta_geometry"):
        mm(p.replace(delta_geometry=torch.zeros(2, 5, dtype=torch.float64)))
    with pytest.raises(ValueError, match="reflectance"):
        mm(p.replace(reflectance=torch.full((2, 2), float("nan"), dtype=torch.float64)))
    with pytest.raises(ValueError, match="expression"):
        mm(p.replace(expression=torch.zeros(2, 2, dtype=torch.float32)))
    with pytest.raises(ValueError, match="kind"):
        MultiLevelModel(tiny_random_model(), kind="cubic")
    with pytest.raises(ValueError, match="delta"):
        LinearCorrective(20, 4)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="delta"):
        MLPCorrective(20, 4)(torch.zeros(2, 4, dtype=torch.float64))
