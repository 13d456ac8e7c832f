"""The image+start encoder: residuals on the landmark start, camera roll conversions, old configs."""
import numpy as np
import pytest
import torch

from fml_taichi.model import FaceParams, default_face_model
from fml_taichi.nets.config import ConfigError, from_dict
from fml_taichi.nets.encoder import EncoderConfig, FaceEncoder
from fml_taichi.recon.anchored import rotate_camera, rotate_light_z
from fml_taichi.recon.colour_fit import sh_basis_np


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(n_vertices=500)


def test_untrained_residual_encoder_reproduces_the_start(face_model):
    enc = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                input="image+start")).eval()
    g = torch.Generator().manual_seed(0)
    start = FaceParams.zeros(2, face_model.m_shape, face_model.m_expression, face_model.m_reflectance, 4, 4)
    start = start.replace(shape=torch.randn(2, face_model.m_shape, generator=g) * enc.codec.shape_sigma,
                          rotation=torch.tensor([[0.1, -0.3, 0.2], [0.0, 0.4, -0.1]]),
                          translation=torch.tensor([[5.0, -3.0, 480.0], [0.0, 2.0, 520.0]]),
                          light=torch.randn(2, 9, 3, generator=g))
    z = enc.codec.pack_base(start)
    out = enc(torch.rand(2, 3, 64, 64, generator=g), z)
    for name in ("shape", "rotation", "translation", "light"):
        assert torch.allclose(getattr(out, name), getattr(start, name), atol=1e-4), name
    with pytest.raises(ValueError, match="start"):
        enc(torch.rand(2, 3, 64, 64))


def test_sh_light_follows_a_camera_roll():
    g = np.random.default_rng(0)
    n = g.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    light = torch.tensor(g.normal(size=(1, 9, 3)))
    a = 0.7
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    turned = rotate_light_z(light, torch.tensor([a], dtype=torch.float64)).numpy()[0]
    np.testing.assert_allclose(sh_basis_np(n @ rz.T) @ turned, sh_basis_np(n) @ light.numpy()[0], atol=1e-9)
    p = FaceParams.zeros(1, 1, 1, 1, 0, 0, dtype=torch.float64).replace(light=light,
                                                                        translation=torch.tensor([[3.0, 4.0, 500.0]], dtype=torch.float64))
    back = rotate_camera(rotate_camera(p, torch.tensor([a], dtype=torch.float64)), torch.tensor([-a], dtype=torch.float64))
    assert torch.allclose(back.translation, p.translation) and torch.allclose(back.light, p.light)


def test_old_configs_load_as_image_and_start_needs_alignment():
    assert from_dict({}).encoder.input == "image"
    with pytest.raises(ConfigError, match="align"):
        from_dict({"encoder": {"input": "image+start"}})
    assert from_dict({"encoder": {"input": "image+start"}, "data": {"align": True}}).encoder.input == "image+start"


def test_appearance_residuals_keep_the_start_geometry_and_pose(face_model):
    from fml_taichi.recon.runners import EncoderHeads

    enc = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                input="image+start", residuals="appearance")).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (enc.head_base.weight, enc.head_base.bias):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    start = FaceParams.zeros(2, face_model.m_shape, face_model.m_expression, face_model.m_reflectance, 4, 4)
    start = start.replace(translation=torch.tensor([[5.0, -3.0, 480.0], [0.0, 2.0, 520.0]]))
    z = enc.codec.pack_base(start)
    images = torch.rand(2, 3, 64, 64, generator=g)
    out = enc(images, z)
    for name in ("shape", "expression", "rotation", "translation"):
        assert torch.allclose(getattr(out, name), getattr(start, name), atol=1e-4), name
    assert (out.light - start.light).abs().max() > 1e-3 and (out.reflectance - start.reflectance).abs().max() > 1e-3
    # The numpy heads of the pipeline hold the same outputs at the start.
    with torch.no_grad():
        feats = enc.backbone(enc.preprocess(images)).numpy()
    flat = EncoderHeads(enc).flat(feats, z.numpy())
    assert np.allclose(flat, enc.forward_flat(images, z).detach().numpy(), atol=1e-4)
    only = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                 input="image+start", residuals="reflectance")).eval()
    only.load_state_dict(enc.state_dict())
    light_only = only(images, z)
    assert torch.allclose(light_only.light, start.light, atol=1e-5)
    assert torch.allclose(light_only.reflectance, out.reflectance, atol=1e-5)
    with pytest.raises(ValueError, match="appearance"):
        FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                              residuals="appearance"))


def test_numpy_heads_hold_masked_outputs_at_the_start_exactly_and_match_torch(face_model):
    """EncoderHeads computes only the base outputs that have a residual (one fused product): the others
    are the start's bit for bit; every output matches the torch encoder, image-only heads too."""
    from fml_taichi.recon.runners import EncoderHeads

    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 64, 64, generator=g)
    for inp, residuals in (("image+start", "reflectance"), ("image", "all")):
        enc = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                    input=inp, residuals=residuals)).eval()
        with torch.no_grad():
            for head in (enc.head_base, enc.head_geometry, enc.head_reflectance):
                for p in (head.weight, head.bias):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            feats = enc.backbone(enc.preprocess(images)).numpy()
        heads = EncoderHeads(enc)
        if inp == "image":
            want = enc.forward_flat(images).detach().numpy()
            got = heads.flat(feats)
        else:
            start = FaceParams.zeros(2, face_model.m_shape, face_model.m_expression, face_model.m_reflectance, 4, 4)
            start = start.replace(translation=torch.tensor([[5.0, -3.0, 480.0], [0.0, 2.0, 520.0]]),
                                  shape=torch.randn(2, face_model.m_shape, generator=g))
            z = enc.codec.pack_base(start)
            want = enc.forward_flat(images, z).detach().numpy()
            got = heads.flat(feats, z.numpy())
            held = np.setdiff1d(np.arange(z.shape[1]), heads._active)
            # flat = [identity part of base, 4 geometry, 4 reflectance correctives, rest of base]
            base_cols = np.r_[np.arange(heads.n_identity), np.arange(z.shape[1] - heads.n_identity) + heads.n_identity + 8]
            assert len(held) > 0 and np.array_equal(got[:, base_cols[held]], z.numpy()[:, held])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_heads_that_keep_the_geometry_pass_the_start_on_exactly(face_model):
    """``keeps_geometry`` (reflectance residuals only, a zero geometry head): everything of the flat
    vector but the reflectance and its corrective is the start's, bit for bit, so the pipeline may use
    it (``start_flat``) before the features exist; a trained geometry head or pose residuals say no."""
    from fml_taichi.recon.runners import EncoderHeads

    g = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 64, 64, generator=g)
    enc = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                input="image+start", residuals="reflectance")).eval()
    with torch.no_grad():
        for head in (enc.head_base, enc.head_reflectance):
            for p in (head.weight, head.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        feats = enc.backbone(enc.preprocess(images)).numpy()
    start = FaceParams.zeros(2, face_model.m_shape, face_model.m_expression, face_model.m_reflectance, 4, 4)
    start = start.replace(translation=torch.tensor([[5.0, -3.0, 480.0], [0.0, 2.0, 520.0]]),
                          shape=torch.randn(2, face_model.m_shape, generator=g))
    z = enc.codec.pack_base(start).numpy()
    heads = EncoderHeads(enc)
    assert heads.keeps_geometry
    full, early = heads.unpack(heads.flat(feats, z)), heads.unpack(heads.start_flat(z))
    for name in ("shape", "expression", "rotation", "translation", "light", "delta_geometry"):
        assert np.array_equal(full[name], early[name]), name
    assert not np.array_equal(full["reflectance"], early["reflectance"])
    with torch.no_grad():
        enc.head_geometry.bias.add_(0.1)
    assert not EncoderHeads(enc).keeps_geometry
    enc_all = FaceEncoder.for_model(face_model, 4, 4, EncoderConfig(input_size=32, width=0.5, n_features=32,
                                                                    input="image+start", residuals="all")).eval()
    assert not EncoderHeads(enc_all).keeps_geometry
    # The residual columns alone give the reflectance that flat + unpack give.
    np.testing.assert_allclose(heads.base_reflectance(feats, z), full["reflectance"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="keeps_geometry"):
        EncoderHeads(enc_all).base_reflectance(feats, z)
