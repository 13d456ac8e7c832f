"""Per-op image-formation kernels vs their torch reference, float64 gradchecks, known answers, bad input.

Sizes are tiny on purpose: each (kernel, dtype, inputs-needing-grad) combination compiles a Taichi
gradient kernel once, so every test uses all-inputs-require-grad in float64 and float32 only.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import fml_taichi.ops as K
import fml_taichi.reference as R
from fml_taichi.reference.image_formation import SH_C0, SH_C1, SH_C2, SH_C3, SH_C4
from fml_taichi.reference.meshes import uv_sphere

F64, F32 = torch.float64, torch.float32


def rand(*shape, seed=0, dtype=F64, lo=-1.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)


def smooth_image(b, h, w, dtype=F64):
    """A smooth RGB pattern (finite differences of bilinear sampling are meaningful on it)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    chans = [0.5 + 0.4 * torch.sin(0.45 * x + 0.3 * y + c + 0.7 * k) for k in range(b) for c in range(3)]
    return torch.stack(chans, -1).reshape(h, w, b, 3).permute(2, 0, 1, 3).contiguous()


def leaves(*ts, dtype=None):
    return [t.detach().to(dtype or t.dtype).clone().requires_grad_() for t in ts]


def grads_of(fn, inputs, seed=7):
    """Outputs of fn(*inputs) and the gradients of a random projection of them w.r.t. inputs."""
    out = fn(*inputs)
    w = rand(*out.shape, seed=seed).to(out.dtype)  # the same weights in both dtypes
    grads = torch.autograd.grad((out * w).sum(), inputs)
    return out.detach(), [g.detach() for g in grads]


def assert_matches_reference(kernel_fn, ref_fn, inputs64, rtol32=1e-4):
    """Kernel f64 == reference f64 (outputs, gradients) and kernel f32 ~ reference f64."""
    out_k, g_k = grads_of(kernel_fn, leaves(*inputs64))
    out_r, g_r = grads_of(ref_fn, leaves(*inputs64))
    torch.testing.assert_close(out_k, out_r, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_k, g_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    out_32, g_32 = grads_of(kernel_fn, leaves(*inputs64, dtype=F32))
    assert out_32.dtype == F32
    scale = out_r.abs().max().item() + 1e-12
    torch.testing.assert_close(out_32.double(), out_r, rtol=rtol32, atol=rtol32 * scale)
    for a, b in zip(g_32, g_r):
        torch.testing.assert_close(a.double(), b, rtol=rtol32, atol=rtol32 * (b.abs().max().item() + 1e-12))


# ------------------------------------------------------------------------------------------ transform


def test_euler_matches_scipy_extrinsic_xyz_and_is_a_rotation():
    angles = rand(5, 3, seed=1, lo=-math.pi, hi=math.pi)
    rot = K.euler_to_matrix(angles)
    # scipy's lower-case "xyz" is extrinsic x, then y, then z: R = Rz @ Ry @ Rx (docs/conventions.md).
    expected = torch.from_numpy(Rotation.from_euler("xyz", angles.numpy()).as_matrix())
    torch.testing.assert_close(rot, expected)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=F64).expand(5, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(5, dtype=F64))
    torch.testing.assert_close(K.euler_to_matrix(torch.zeros(1, 3, dtype=F64))[0], torch.eye(3, dtype=F64))


def test_rigid_transform_known_answers():
    v = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]], dtype=F64)
    t = torch.tensor([[10.0, 20.0, 30.0]], dtype=F64)
    torch.testing.assert_close(K.rigid_transform(v, torch.zeros(1, 3, dtype=F64), t), v + t[:, None])
    quarter_z = torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=F64)  # x -> y
    out = K.rigid_transform(v, quarter_z, torch.zeros(1, 3, dtype=F64))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=F64))


def test_rigid_transform_matches_reference_and_gradcheck():
    inputs = (rand(2, 7, 3, seed=1) * 50, rand(2, 3, seed=2), rand(2, 3, seed=3) * 10)
    assert_matches_reference(K.rigid_transform, R.rigid_transform, inputs)
    small = leaves(inputs[0][:, :4], inputs[1], inputs[2])
    assert torch.autograd.gradcheck(K.rigid_transform, small)


# ------------------------------------------------------------------------------------------ projection


def test_project_known_point_and_shared_or_batched_intrinsics():
    v = torch.tensor([[[10.0, -20.0, 500.0]]], dtype=F64)
    k = torch.tensor([600.0, 500.0, 119.5, 100.0], dtype=F64)
    expected = torch.tensor([[[600 * 10 / 500 + 119.5, 500 * -20 / 500 + 100.0]]], dtype=F64)
    torch.testing.assert_close(K.project(v, k), expected)
    torch.testing.assert_close(K.project(v, k[None]), expected)
    behind = K.project(torch.tensor([[[1.0, 1.0, -5.0]]], dtype=F64), k)
    assert torch.isfinite(behind).all()  # z clamped, no inf


def test_project_matches_reference_and_gradcheck():
    v = rand(2, 6, 3, seed=4) * 40 + torch.tensor([0.0, 0.0, 400.0], dtype=F64)
    k = torch.tensor([[600.0, 610.0, 120.0, 118.0], [300.0, 320.0, 60.0, 61.0]], dtype=F64)
    assert_matches_reference(K.project, R.project, (v, k))
    assert torch.autograd.gradcheck(K.project, leaves(v[:, :3], k))


# ------------------------------------------------------------------------------------------ normals


CUBE_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def unit_cube():
    """Cube [-1, 1]^3, each face split along its a-c diagonal into (a, b, c), (a, c, d)."""
    v = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=F64)
    tris = [t for a, b, c, d in CUBE_QUADS for t in ((a, b, c), (a, c, d))]
    return v, torch.tensor(tris, dtype=torch.int32)


def test_normals_of_cube_and_sphere_point_outward():
    v, tris = unit_cube()
    n = K.vertex_normals(v[None].contiguous(), tris)[0]
    # Known answer: every triangle has area 2 (|cross| = 4) and the face's axis as outward normal; a
    # corner on the split diagonal (a, c) gets both triangles of that face, b and d one each.
    expected = torch.zeros(8, 3, dtype=F64)
    for a, b, c, d in CUBE_QUADS:
        axis = v[[a, b, c, d]].mean(0)  # the face centre is its outward unit axis
        for corner, count in ((a, 2), (b, 1), (c, 2), (d, 1)):
            expected[corner] += 4.0 * count * axis
    torch.testing.assert_close(n, torch.nn.functional.normalize(expected, dim=-1))
    assert bool((torch.sign(n) == torch.sign(v)).all())  # outward: in each corner's own octant
    sv, st = uv_sphere(6, 10, radius=3.0, dtype=F64)
    sn = K.vertex_normals(sv[None].contiguous(), st)[0]
    torch.testing.assert_close(sn.norm(dim=-1), torch.ones(len(sv), dtype=F64))
    assert bool(((sn * sv / 3.0).sum(-1) > 0.97).all())


def test_normals_isolated_vertex_and_zero_area_face_give_zero_without_nan():
    v = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0],
                       [2.0, 2.0, 2.0], [3.0, 3.0, 3.0], [4.0, 4.0, 4.0]]], dtype=F64, requires_grad=True)
    tris = torch.tensor([[0, 1, 2], [4, 5, 6]], dtype=torch.int32)  # vertex 3 isolated; face 2 collinear
    for impl in (K, R):
        n = impl.vertex_normals(v, tris)
        torch.testing.assert_close(n[0, :3], torch.tensor([[0.0, 0.0, 1.0]] * 3, dtype=F64))
        assert bool((n[0, 3:] == 0).all())
        (g,) = torch.autograd.grad((n * rand(*n.shape, seed=3)).sum(), v)
        assert bool(torch.isfinite(g).all()) and bool((g[0, 3:] == 0).all())


def test_normals_match_reference_and_gradcheck():
    sv, st = uv_sphere(3, 5, radius=2.0, dtype=F64)
    v = (sv.expand(2, -1, -1) + 0.2 * rand(2, len(sv), 3, seed=5)).contiguous()
    assert_matches_reference(lambda x: K.vertex_normals(x, st), lambda x: R.vertex_normals(x, st), (v,))
    assert torch.autograd.gradcheck(lambda x: K.vertex_normals(x, st), leaves(v[:1]))


# ------------------------------------------------------------------------------------------ shading


def fibonacci_sphere(n):
    i = torch.arange(n, dtype=F64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = torch.sqrt(1 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def test_sh_basis_is_orthonormal_with_the_stated_constants():
    h = K.sh_basis(fibonacci_sphere(20000)[None])[0]
    gram = (h.T @ h) * (4 * math.pi / h.shape[0])  # quadrature of int H_i H_j dOmega
    torch.testing.assert_close(gram, torch.eye(9, dtype=F64), atol=2e-3, rtol=0)
    n = torch.tensor([[[0.36, 0.48, 0.8]]], dtype=F64)  # unit
    x, y, z = 0.36, 0.48, 0.8
    expected = [SH_C0, SH_C1 * y, SH_C1 * z, SH_C1 * x, SH_C2 * x * y, SH_C2 * y * z, SH_C3 * (3 * z * z - 1),
                SH_C2 * x * z, SH_C4 * (x * x - y * y)]
    torch.testing.assert_close(K.sh_basis(n)[0, 0], torch.tensor(expected, dtype=F64))
    assert abs(SH_C0 - 0.282095) < 1e-6 and abs(SH_C4 - 0.546274) < 1e-6


def test_sh_shading_ambient_only_gives_reflectance_times_gamma0_c0():
    n = torch.nn.functional.normalize(rand(2, 5, 3, seed=1), dim=-1)
    r = rand(2, 5, 3, seed=2, lo=0.0, hi=1.0)
    light = torch.zeros(2, 9, 3, dtype=F64)
    light[:, 0] = torch.tensor([1.0 / SH_C0, 2.0, 0.5], dtype=F64)
    out = K.sh_shading(n, r, light)
    torch.testing.assert_close(out, r * light[:, 0][:, None] * SH_C0)
    torch.testing.assert_close(out[..., 0], r[..., 0])  # uniform light of 1 leaves reflectance


def test_sh_shading_matches_reference_and_gradcheck():
    n = torch.nn.functional.normalize(rand(2, 6, 3, seed=1), dim=-1)
    inputs = (n, rand(2, 6, 3, seed=2, lo=0.0, hi=1.0), rand(2, 9, 3, seed=3))
    assert_matches_reference(K.sh_shading, R.sh_shading, inputs)
    assert torch.autograd.gradcheck(K.sh_shading, leaves(n[:, :3], inputs[1][:, :3], inputs[2]))


# ------------------------------------------------------------------------------------------ visibility


def test_backface_visibility_known_answer_and_no_grad():
    v = torch.tensor([[[0.0, 0.0, 10.0], [0.0, 0.0, 10.0], [5.0, 0.0, 10.0]]], dtype=F64)
    n = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]], dtype=F64)
    for impl in (K, R):
        vis = impl.backface_visibility(v, n)
        assert vis.dtype == F64 and not vis.requires_grad
        assert vis.tolist() == [[1.0, 0.0, 0.0]]  # facing; facing away; grazing (dot > 0)
    assert K.backface_visibility(v.float(), n.float()).dtype == F32


# ------------------------------------------------------------------------------------------ sampling


def test_bilinear_known_answers_integer_pixel_midpoint_and_border_clamp():
    img = rand(1, 4, 5, 3, seed=3, lo=0.0, hi=1.0)
    uv = torch.tensor([[[2.0, 1.0], [4.0, 3.0], [0.5, 0.0], [-3.0, 1.0], [9.0, 7.0]]], dtype=F64)
    out = K.bilinear_sample(img, uv)[0]
    torch.testing.assert_close(out[0], img[0, 1, 2])  # integer pixel: that pixel
    torch.testing.assert_close(out[1], img[0, 3, 4])  # the last pixel centre
    torch.testing.assert_close(out[2], 0.5 * (img[0, 0, 0] + img[0, 0, 1]))
    torch.testing.assert_close(out[3], img[0, 1, 0])  # clamped to the left border
    torch.testing.assert_close(out[4], img[0, 3, 4])  # clamped to the bottom-right corner


def test_bilinear_matches_reference_and_gradcheck_on_a_smooth_image():
    img = smooth_image(2, 9, 11)
    # Positions away from pixel boundaries (fractions in [0.2, 0.8]), one outside the image.
    base = torch.tensor([[1, 1], [4, 2], [9, 7], [0, 6], [7, 3]], dtype=F64)
    uv = (base + rand(5, 2, seed=4, lo=0.2, hi=0.8)).expand(2, 5, 2).contiguous()
    uv[1, 0] = torch.tensor([-2.3, 4.5], dtype=F64)
    assert_matches_reference(K.bilinear_sample, R.bilinear_sample, (img, uv))
    assert torch.autograd.gradcheck(K.bilinear_sample, leaves(img, uv))


# ------------------------------------------------------------------------------------------ loss


def test_photometric_loss_known_answer():
    sampled = torch.zeros(1, 4, 3, dtype=F64)
    colors = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]], dtype=F64)
    visible = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=F64)
    for impl in (K, R):
        loss = impl.photometric_loss(sampled, colors, visible)
        # (5 + 2 + ~0) / N with N = 4 counting invisible vertices too; eps adds ~1e-5 per visible one.
        torch.testing.assert_close(loss, torch.tensor([7.0 / 4], dtype=F64), atol=1e-4, rtol=0)


def test_photometric_loss_matches_reference_and_gradcheck():
    inputs = (rand(2, 6, 3, seed=1), rand(2, 6, 3, seed=2))
    vis = (rand(2, 6, seed=3) > 0).to(F64)
    assert_matches_reference(lambda s, c: K.photometric_loss(s, c, vis.to(s.dtype)),
                             lambda s, c: R.photometric_loss(s, c, vis.to(s.dtype)), inputs)
    assert torch.autograd.gradcheck(lambda s, c: K.photometric_loss(s, c, vis), leaves(*inputs))


# ------------------------------------------------------------------------------------------ bridge


def test_gradients_do_not_accumulate_across_backward_calls():
    v, rot, t = leaves(rand(1, 5, 3, seed=1) * 10, rand(1, 3, seed=2), rand(1, 3, seed=3))
    out = K.rigid_transform(v, rot, t)
    w = rand(*out.shape, seed=4)
    g1 = torch.autograd.grad((out * w).sum(), [v, rot, t], retain_graph=True)
    g2 = torch.autograd.grad((out * w).sum(), [v, rot, t])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for _ in range(2):  # .grad accumulates exactly twice, not more
        (K.rigid_transform(v, rot, t) * w).sum().backward()
    torch.testing.assert_close(v.grad, 2 * g1[0])


def test_backward_leaves_the_callers_grad_untouched():
    # Taichi sets .grad = zeros on any requires-grad tensor it is launched with: the ops must not.
    n = torch.nn.functional.normalize(rand(1, 4, 3, seed=1), dim=-1)
    n, r, light, v, k = leaves(n, rand(1, 4, 3, seed=2), rand(1, 9, 3, seed=3),
                               rand(1, 4, 3, seed=4) + torch.tensor([0.0, 0.0, 5.0], dtype=F64),
                               torch.tensor([10.0, 10.0, 2.0, 2.0], dtype=F64))
    colors = K.sh_shading(n, r, light)
    loss = K.photometric_loss(colors, K.project(v, k).sum(-1, keepdim=True).expand(1, 4, 3).contiguous(),
                              torch.ones(1, 4, dtype=F64))
    grads = torch.autograd.grad(loss.sum(), [n, r, light, v, k])
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(x.grad is None for x in (n, r, light, v, k))


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_value_errors_naming_the_argument():
    v = rand(1, 4, 3, seed=1) * 10 + torch.tensor([0.0, 0.0, 100.0], dtype=F64)
    rot, t = torch.zeros(1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64)
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    n = torch.nn.functional.normalize(v, dim=-1)
    img = rand(1, 4, 4, 3, seed=2, lo=0.0, hi=1.0)
    nan_v = v.clone()
    nan_v[0, 1, 2] = float("nan")
    cases = [
        (lambda: K.rigid_transform(v[0], rot, t), "vertices: expected shape"),
        (lambda: K.rigid_transform(v.to(torch.int64), rot, t), "vertices: expected dtype"),
        (lambda: K.rigid_transform(v.transpose(1, 2).contiguous().transpose(1, 2), rot, t),
         "vertices: expected a contiguous"),
        (lambda: K.rigid_transform(nan_v, rot, t), "vertices: contains NaN"),
        (lambda: K.rigid_transform(v, rot.float(), t), "rotation: dtype"),
        (lambda: K.rigid_transform(v, torch.zeros(2, 3, dtype=F64), t), "rotation: expected shape"),
        (lambda: K.project(v, torch.ones(3, dtype=F64)), "intrinsics: expected shape"),
        (lambda: K.project(v, torch.tensor([-1.0, 1, 0, 0], dtype=F64)), "intrinsics: focal"),
        (lambda: K.vertex_normals(v, tris.long()), "triangles: expected dtype"),
        (lambda: K.vertex_normals(v, tris + 2), "triangles: index out of range"),
        (lambda: K.vertex_normals(v, tris - 1), "triangles: index out of range"),
        (lambda: K.vertex_normals(v, tris[:0]), "triangles: expected at least 1 triangle"),
        (lambda: K.vertex_normals(v[:, :0].contiguous(), tris), "vertices: expected at least 1 vertex"),
        (lambda: K.sh_shading(n, v[:, :3].contiguous(), torch.zeros(1, 9, 3, dtype=F64)),
         "reflectance: expected shape"),
        (lambda: K.sh_shading(n, v, torch.zeros(1, 4, 3, dtype=F64)), "light: expected shape"),
        (lambda: K.sh_shading(n, v, torch.full((1, 9, 3), float("inf"), dtype=F64)), "light: contains NaN or inf"),
        (lambda: K.bilinear_sample(img[0], v[..., :2].contiguous()), "image: expected shape"),
        (lambda: K.bilinear_sample(img[:, :0].contiguous(), v[..., :2].contiguous()), "image: expected a non-empty"),
        (lambda: K.bilinear_sample(img.float(), v[..., :2].contiguous()), "image: dtype"),
        (lambda: K.photometric_loss(v, v, torch.ones(1, 3, dtype=F64)), "visible: expected shape"),
        (lambda: K.backface_visibility(v, n[:, :2].contiguous()), "normals_cam: expected shape"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # The reference validates the same way (it is the fallback).
    with pytest.raises(ValueError, match="triangles: index out of range"):
        R.vertex_normals(v, tris + 2)
    assert np.isfinite(K.vertex_normals(v, tris).numpy()).all()
