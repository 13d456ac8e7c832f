"""The encoder: output scaling, pack/unpack, the zero-initialised start, preprocessing, learning."""
import math

import pytest
import torch

from fml_taichi.model.params import FaceParams
from fml_taichi.nets.encoder import (SH_C0, FaceEncoder, ParamCodec, ParamLayout, ParamScales,
                                      count_parameters)

LAYOUT = ParamLayout(n_shape=4, n_expression=3, n_reflectance=5, n_delta_geometry=6, n_delta_reflectance=7)


def _codec(scales=None):
    g = torch.Generator().manual_seed(0)
    sig = lambda n: 0.5 + torch.rand(n, generator=g)  # noqa: E731  non-unit sigmas catch a missing scale
    return ParamCodec(LAYOUT, sig(4), sig(3), sig(5), scales)


def _random_params(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return FaceParams(r(b, 4), r(b, 3), r(b, 5), r(b, 6), r(b, 7), r(b, 3) * 0.3,
                      r(b, 3) * 10 + torch.tensor([0.0, 0.0, 500.0]), r(b, 9, 3))


def test_layout_sizes_and_slices_cover_the_flat_vector():
    assert LAYOUT.total == 4 + 3 + 5 + 6 + 7 + 3 + 3 + 27
    assert LAYOUT.n_base == LAYOUT.total - 13
    covered = []
    for s in LAYOUT.slices().values():
        covered += list(range(s.start, s.stop))
    assert covered == list(range(LAYOUT.total))
    with pytest.raises(ValueError, match="n_shape"):
        ParamLayout(-1, 1, 1, 1, 1)


def test_pack_unpack_round_trip():
    codec = _codec(ParamScales(rotation_scale=0.3, translation_scale=(10.0, 20.0, 30.0), light_scale=0.7,
                               ambient=0.8, corrective_scale=2.0))
    p = _random_params()
    z = codec.pack(p)
    assert z.shape == (3, LAYOUT.total)
    q = codec.unpack(z)
    for name, a in p.as_dict().items():
        torch.testing.assert_close(getattr(q, name), a, rtol=1e-5, atol=1e-4, msg=name)
    torch.testing.assert_close(codec.pack(codec.unpack(z)), z, rtol=1e-5, atol=1e-5)


def test_unpack_applies_the_documented_scales():
    sc = ParamScales(rotation_scale=0.25, translation_scale=(1.0, 2.0, 3.0), light_scale=0.5, ambient=0.7)
    codec = _codec(sc)
    z = torch.zeros(1, LAYOUT.total)
    s = LAYOUT.slices()
    z[0, s["shape"]] = 2.0
    z[0, s["rotation"]] = torch.tensor([1.0, -2.0, 4.0])
    z[0, s["translation"]] = 1.0
    z[0, s["light"].start + 3 * 2 + 1] = 1.0  # SH band index 2, green channel
    p = codec.unpack(z)
    torch.testing.assert_close(p.shape[0], 2.0 * codec.shape_sigma)
    torch.testing.assert_close(p.rotation[0], torch.tensor([0.25, -0.5, 1.0]))
    torch.testing.assert_close(p.translation[0], torch.tensor([1.0, 2.0, 503.0]))
    assert p.light[0, 2, 1].item() == pytest.approx(0.5)
    assert p.light[0, 0, 0].item() == pytest.approx(0.7 / SH_C0)


def test_fresh_encoder_predicts_mean_frontal_ambient_face():
    enc = FaceEncoder(_codec(), input_size=64, width=0.5, n_features=64).eval()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    p = enc(images)
    for name in ("shape", "expression", "reflectance", "delta_geometry", "delta_reflectance", "rotation"):
        assert torch.count_nonzero(getattr(p, name)) == 0, name
    torch.testing.assert_close(p.translation, torch.tensor([[0.0, 0.0, 500.0]] * 2))
    # Ambient light: shading = sum_b gamma_b H_b(n) = ambient for every normal.
    assert torch.allclose(p.light[:, 0], torch.full((2, 3), 1.0 / SH_C0))
    assert torch.count_nonzero(p.light[:, 1:]) == 0


def test_codec_rejects_bad_sigmas_and_shapes():
    with pytest.raises(ValueError, match="shape_sigma"):
        ParamCodec(LAYOUT, torch.ones(3), torch.ones(3), torch.ones(5))
    with pytest.raises(ValueError, match="reflectance_sigma"):
        ParamCodec(LAYOUT, torch.ones(4), torch.ones(3), torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    codec = _codec()
    with pytest.raises(ValueError, match="expected shape"):
        codec.unpack(torch.zeros(2, LAYOUT.total + 1))
    bad = _random_params().replace(delta_geometry=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="delta_geometry"):
        codec.pack(bad)


def test_preprocess_resizes_by_pooling_or_interpolation():
    enc = FaceEncoder(_codec(), input_size=60, width=0.5, n_features=32)
    x = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(3))
    y = enc.preprocess(x)
    assert y.shape == (1, 3, 60, 60)
    # An exact factor averages 4x4 blocks (anti-aliased), then centres: (mean - 0.5) * 4.
    assert y[0, 1, 2, 3].item() == pytest.approx(((x[0, 1, 8:12, 12:16].mean() - 0.5) * 4).item(), abs=1e-5)
    assert enc.preprocess(torch.rand(2, 3, 100, 90)).shape == (2, 3, 60, 60)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        enc.preprocess(torch.rand(1, 240, 240, 3))
    with pytest.raises(ValueError, match="input_size"):
        FaceEncoder(_codec(), input_size=8)


def test_parameter_groups_partition_the_trainable_parameters():
    enc = FaceEncoder(_codec(), input_size=64, width=0.5, n_features=32)
    groups = enc.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in enc.parameters()}
    assert sum(p.numel() for p in groups["geometry"]) == 32 * 6 + 6
    assert count_parameters(enc) == sum(p.numel() for ps in groups.values() for p in ps)


def test_encoder_learns_to_regress_parameters_per_image():
    """A few Adam steps fit distinct targets for two images: gradients reach every head."""
    torch.manual_seed(0)
    enc = FaceEncoder(_codec(), input_size=32, width=0.5, n_features=64)
    g = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 64, 64, generator=g)
    target = torch.randn(2, LAYOUT.total, generator=g) * 0.5
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = ((enc.forward_flat(images) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert not math.isnan(losses[-1])
