"""Region fields: geometry outside the base span at millimetre scale, deterministic, two families."""
import pytest
import torch

from fml_taichi.data import SyntheticConfig, variation
from fml_taichi.data.synthetic import EVAL_SEED_START, stream
from fml_taichi.eval.harness import face_region
from fml_taichi.model import default_face_model


@pytest.fixture(scope="module")
def model():
    return default_face_model(4000)


def _offsets(fm, family, seeds):
    ft = variation.FieldTables.from_model(fm)
    out = []
    for s in seeds:
        shape = torch.randn(fm.m_shape, generator=torch.Generator().manual_seed(s)).clamp(-3, 3)
        ident = torch.einsum("njm,m->nj", fm.shape_basis, shape)
        out.append(variation.field_geometry_offsets(ft, stream(s, "fields"), family, 1.0, ident))
    return torch.stack(out)


def test_out_of_space_part_is_millimetres_and_beats_the_bumps(model):
    seeds = range(EVAL_SEED_START, EVAL_SEED_START + 32)
    basis = torch.cat([model.shape_basis, model.expression_basis], 2)
    region = torch.as_tensor(face_region(model))
    rms, peak = variation.out_of_space_rms(_offsets(model, "rbf", seeds), basis, region)
    assert rms > 0.8 and peak > 4.0
    tab = variation.VariationTables.from_model(model)
    bumps = variation.geometry_offsets(tab, [variation.draw_variation(stream(s, "variation"), tab) for s in seeds])
    assert rms > 2 * variation.out_of_space_rms(bumps, basis, region)[0]
    rms_alt, _ = variation.out_of_space_rms(_offsets(model, "exaggerate", seeds), basis, region)
    assert rms_alt > 0.2


def test_fields_are_deterministic_per_seed_and_families_differ(model):
    a = _offsets(model, "rbf", [5, 6])
    assert torch.equal(a, _offsets(model, "rbf", [5, 6]))
    assert not torch.allclose(a[0], a[1])
    b = _offsets(model, "exaggerate", [5, 6])
    assert (a - b).abs().max() > 1.0
    assert _offsets(model, "none", [5]).abs().max() == 0


def test_config_rejects_unknown_family():
    with pytest.raises(ValueError, match="fields"):
        SyntheticConfig(fields="eigen_typo")


def _reflectance(fm, family, seeds):
    rt = variation.ReflectanceFieldTables.from_model(fm)
    base = fm.mean_reflectance
    return torch.stack([variation.field_reflectance(rt, stream(s, "reflectance_fields"), family, 1.0, base)
                        for s in seeds]) - base


def test_regional_reflectance_leaves_the_base_span_and_is_regional(model):
    seeds = range(EVAL_SEED_START, EVAL_SEED_START + 24)
    region = torch.as_tensor(face_region(model))
    off = _reflectance(model, "regional", seeds)
    rms, _ = variation.out_of_space_rms(off, model.reflectance_basis, region)
    assert rms > 0.02  # RGB units: a visible part the base reflectance cannot express
    rt = variation.ReflectanceFieldTables.from_model(model)
    brows, far = rt.brows > 0.9, (rt.brows < 0.01) & (rt.lips < 0.01) & (rt.cheeks < 0.05)
    # Brows are blended towards hair colours: they change much more than the skin outside the regions.
    assert off[:, brows].norm(dim=-1).mean() > 2 * off[:, far].norm(dim=-1).mean()


def test_regional_reflectance_is_deterministic_and_none_is_identity(model):
    a = _reflectance(model, "regional", [3, 4])
    assert torch.equal(a, _reflectance(model, "regional", [3, 4]))
    assert not torch.allclose(a[0], a[1])
    assert _reflectance(model, "none", [3]).abs().max() == 0
    with pytest.raises(ValueError, match="reflectance_fields"):
        SyntheticConfig(reflectance_fields="freckly")
