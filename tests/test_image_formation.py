"""The fused image-formation layer (kernels.image_formation) vs the torch reference, gradchecks, known
answers and bad input. Tiny scenes: a 34-vertex sphere in front of a 16x16 (or 8x8) camera."""
import math

import pytest
import torch

import fml_taichi.ops as K
import fml_taichi.reference as R
from fml_taichi.reference.image_formation import SH_C0
from fml_taichi.reference.meshes import uv_sphere

F64, F32 = torch.float64, torch.float32
OUTPUTS = ("loss", "colors", "uv", "v_cam", "normals", "sampled")  # the differentiable ones


def gen(seed):
    return torch.Generator().manual_seed(seed)


def smooth_image(b, size, dtype=F64):
    y, x = torch.meshgrid(torch.arange(size, dtype=dtype), torch.arange(size, dtype=dtype), indexing="ij")
    chans = [0.5 + 0.4 * torch.sin((0.5 + 0.1 * k) * x + 0.35 * y + c) for k in range(b) for c in range(3)]
    return torch.stack(chans, -1).reshape(size, size, b, 3).permute(2, 0, 1, 3).contiguous()


def scene(b=2, size=16, seed=0, dtype=F64):
    """(vertices, reflectance, triangles, rotation, translation, intrinsics, light, image)."""
    g = gen(seed)
    sv, tris = uv_sphere(4, 8, radius=30.0, dtype=F64)
    n = len(sv)
    vertices = sv.expand(b, n, 3) + 2.0 * torch.rand(b, n, 3, generator=g, dtype=F64)
    reflectance = 0.2 + 0.6 * torch.rand(b, n, 3, generator=g, dtype=F64)
    rotation = 0.3 * torch.randn(b, 3, generator=g, dtype=F64)
    translation = torch.tensor([1.0, -2.0, 200.0], dtype=F64) + torch.randn(b, 3, generator=g, dtype=F64)
    f = 60.0 * size / 16
    intrinsics = torch.tensor([f, f, (size - 1) / 2, (size - 1) / 2], dtype=F64)
    light = 0.2 * torch.randn(b, 9, 3, generator=g, dtype=F64)
    light[:, 0] += 0.7 / SH_C0
    tensors = [vertices, reflectance, rotation, translation, light, smooth_image(b, size)]
    v, r, rot, t, lgt, img = (x.to(dtype).contiguous() for x in tensors)
    return v, r, tris, rot, t, intrinsics.to(dtype), lgt, img


def run(impl, inputs, leaves_at=(0, 1, 3, 4, 6, 7)):
    """image_formation on fresh leaves (vertices, reflectance, rotation, translation, light, image)."""
    args = list(inputs)
    leaves = []
    for i in leaves_at:
        args[i] = args[i].detach().clone().requires_grad_()
        leaves.append(args[i])
    return impl.image_formation(*args), leaves


def weighted_sum(res, seed=3, names=OUTPUTS):
    """A scalar touching every output, with fixed random weights (the same in both dtypes)."""
    g = gen(seed)
    total = 0.0
    for name in names:
        out = getattr(res, name)
        total = total + (torch.randn(out.shape, generator=g, dtype=F64).to(out.dtype) * out).sum()
    return total


def test_matches_reference_float64_outputs_and_gradients_through_every_output():
    inputs = scene()
    res_k, leaves_k = run(K, inputs)
    res_r, leaves_r = run(R, inputs)
    for name in OUTPUTS + ("visible",):
        torch.testing.assert_close(getattr(res_k, name), getattr(res_r, name), rtol=1e-10, atol=1e-10)
    vis = res_k.visible
    assert 0.2 < float(vis.mean()) < 0.8, "the scene should have visible and invisible vertices"
    assert not vis.requires_grad
    grads_k = torch.autograd.grad(weighted_sum(res_k), leaves_k)
    grads_r = torch.autograd.grad(weighted_sum(res_r), leaves_r)
    for name, a, b in zip(("vertices", "reflectance", "rotation", "translation", "light", "image"), grads_k, grads_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m: f"{name}: {m}")


def test_loss_only_float32_matches_float64_reference():
    inputs64 = scene(seed=1)
    res_r, leaves_r = run(R, inputs64, leaves_at=(0, 1, 3, 4, 6))
    grads_r = torch.autograd.grad(res_r.loss.sum(), leaves_r)
    inputs32 = [x.float() if x.is_floating_point() else x for x in inputs64]
    res_k, leaves_k = run(K, inputs32, leaves_at=(0, 1, 3, 4, 6))
    assert res_k.loss.dtype == F32 and res_k.colors.dtype == F32
    torch.testing.assert_close(res_k.loss.double(), res_r.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res_k.visible.double(), res_r.visible)
    grads_k = torch.autograd.grad(res_k.loss.sum(), leaves_k)
    for name, a, b in zip(("vertices", "reflectance", "rotation", "translation", "light"), grads_k, grads_r):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4 * float(b.abs().max()),
                                   msg=lambda m: f"{name}: {m}")


def test_gradcheck_float64_all_inputs_all_outputs():
    v, r, tris, rot, t, k, light, img = scene(b=1, size=8, seed=2)
    assert 0 < float(R.image_formation(v, r, tris, rot, t, k, light, img).visible.sum()) < v.shape[1]

    def fn(v_, r_, rot_, t_, light_, img_):
        res = K.image_formation(v_, r_, tris, rot_, t_, k, light_, img_)
        return tuple(getattr(res, name) for name in OUTPUTS)

    leaves = [x.detach().clone().requires_grad_() for x in (v, r, rot, t, light, img)]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_known_answers_projection_shading_visibility_and_loss():
    # Three camera-facing triangles (normal -z, towards the camera) and one facing away.
    v = torch.tensor([[[0.0, 0.0, 100.0], [10.0, 0.0, 100.0], [0.0, 10.0, 100.0],   # faces the camera
                       [0.0, 0.0, 50.0], [0.0, 5.0, 50.0], [5.0, 0.0, 50.0],        # faces away
                       [0.0, 0.0, -10.0], [0.0, 1.0, -10.0], [1.0, 0.0, -10.0],     # behind the camera
                       [500.0, 0.0, 100.0], [500.0, 10.0, 100.0], [510.0, 0.0, 100.0]]], dtype=F64)
    tris = torch.tensor([[0, 2, 1], [3, 5, 4], [6, 8, 7], [9, 10, 11]], dtype=torch.int32)
    refl = torch.full((1, 12, 3), 0.5, dtype=F64)
    light = torch.zeros(1, 9, 3, dtype=F64)
    light[0, 0] = 1.0 / SH_C0  # uniform light of 1: colour = reflectance
    img = torch.full((1, 20, 30, 3), 0.2, dtype=F64)
    k = torch.tensor([100.0, 100.0, 5.0, 6.0], dtype=F64)
    zero = torch.zeros(1, 3, dtype=F64)
    for impl in (K, R):
        res = impl.image_formation(v, refl, tris, zero, zero, k, light, img)
        torch.testing.assert_close(res.v_cam, v)  # identity rotation, zero translation
        torch.testing.assert_close(res.uv[0, 1], torch.tensor([100 * 10 / 100 + 5.0, 6.0], dtype=F64))
        torch.testing.assert_close(res.normals[0, 0], torch.tensor([0.0, 0.0, -1.0], dtype=F64))
        torch.testing.assert_close(res.colors, refl)
        torch.testing.assert_close(res.sampled, torch.full_like(refl, 0.2))
        # facing the camera (visible); facing away; behind the camera; facing but outside the image
        assert res.visible[0].tolist() == [1.0] * 3 + [0.0] * 9
        expected = 3 * math.sqrt(3 * 0.3 ** 2) / 12  # (1/N) sum over visible ||0.2 - 0.5||_2
        torch.testing.assert_close(res.loss, torch.tensor([expected], dtype=F64), atol=1e-5, rtol=0)


def test_gradients_do_not_accumulate_across_backward_calls():
    inputs = scene(b=1, seed=4)
    res, leaves = run(K, inputs)
    g1 = torch.autograd.grad(res.loss.sum(), leaves, retain_graph=True)
    g2 = torch.autograd.grad(res.loss.sum(), leaves)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, leaves2 = run(K, inputs)
    args = list(inputs)
    for pos, leaf in zip((0, 1, 3, 4, 6, 7), leaves2):
        args[pos] = leaf
    for _ in range(2):  # .grad accumulates exactly twice, not more
        K.image_formation(*args).loss.sum().backward()
    for leaf, g in zip(leaves2, g1):
        torch.testing.assert_close(leaf.grad, 2 * g)


def test_adjacency_cache_follows_triangle_content_not_identity():
    v, r, tris, rot, t, k, light, img = scene(b=1, seed=5)
    first = K.image_formation(v, r, tris, rot, t, k, light, img).normals
    flipped = tris[:, [0, 2, 1]].contiguous()  # same shape, opposite winding
    torch.testing.assert_close(K.image_formation(v, r, flipped, rot, t, k, light, img).normals, -first)
    tris.copy_(flipped)  # in-place edit of the very tensor that was cached
    torch.testing.assert_close(K.image_formation(v, r, tris, rot, t, k, light, img).normals, -first)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    v, r, tris, rot, t, k, light, img = scene(b=2, seed=6)
    good = dict(vertices=v, reflectance=r, triangles=tris, rotation=rot, translation=t, intrinsics=k, light=light,
                image=img)
    nan = v.clone()
    nan[1, 3, 0] = float("nan")
    inf_img = img.clone()
    inf_img[0, 1, 1, 1] = float("inf")
    cases = [
        (dict(vertices=v[0]), "vertices: expected shape"),
        (dict(vertices=v.to(torch.int32)), "vertices: expected dtype"),
        (dict(vertices=v.transpose(1, 2).contiguous().transpose(1, 2)), "vertices: expected a contiguous"),
        (dict(vertices=nan), "vertices: contains NaN or inf"),
        (dict(vertices=v[:, :0].contiguous(), reflectance=r[:, :0].contiguous()), "vertices: expected at least 1"),
        (dict(reflectance=r[:, :5].contiguous()), "reflectance: expected shape"),
        (dict(reflectance=r.float()), "reflectance: dtype"),
        (dict(triangles=tris.long()), "triangles: expected dtype"),
        (dict(triangles=tris[:0]), "triangles: expected at least 1 triangle"),
        (dict(triangles=tris.clone().index_fill_(0, torch.tensor([2]), v.shape[1])), "triangles: index out of range"),
        (dict(triangles=tris[:, :2].contiguous()), "triangles: expected shape"),
        (dict(rotation=rot[:1]), "rotation: expected shape"),
        (dict(translation=t.float()), "translation: dtype"),
        (dict(intrinsics=k[:3]), "intrinsics: expected shape"),
        (dict(intrinsics=k.expand(3, 4)), "intrinsics: expected shape"),
        (dict(light=light[:, :4].contiguous()), "light: expected shape"),
        (dict(image=img[:1]), "image: expected shape"),
        (dict(image=inf_img), "image: contains NaN or inf"),
        (dict(image=img.permute(0, 2, 1, 3)), "image: expected a contiguous"),
    ]
    for change, message in cases:
        for impl in (K, R):
            with pytest.raises(ValueError, match=message):
                impl.image_formation(**{**good, **change})
