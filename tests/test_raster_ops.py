"""The differentiable raster ops (fml_taichi.ops.raster): float64 gradchecks, agreement with the plain-torch
twins (fml_taichi.reference.raster_ops), silhouette gradients, argument errors."""
import dataclasses
import math

import pytest
import torch

from fml_taichi.ops import raster as R
from fml_taichi.reference import raster_ops as Ref
from fml_taichi.reference.meshes import uv_sphere

SIZE = 24
F64 = torch.float64


def _mesh(dtype=F64, batch=1, rings=6, segments=9):
    """A slightly squashed, off-centre sphere ~4 units in front of the camera: not symmetric in the image."""
    v, tri = uv_sphere(rings, segments, 1.0, F64)
    v = v * torch.tensor([1.0, 0.8, 0.9], dtype=F64) + torch.tensor([0.15, -0.1, 4.0], dtype=F64)
    g = torch.Generator().manual_seed(0)
    v = v + 0.03 * torch.randn(v.shape, generator=g, dtype=F64)
    pos = torch.stack([v * (1.0 + 0.05 * b) for b in range(batch)]).to(dtype).contiguous()
    return pos, tri


def _K(dtype=F64):
    f = 1.1 * SIZE
    return torch.tensor([f, f, (SIZE - 1) / 2, (SIZE - 1) / 2], dtype=dtype)


def _weights(shape, dtype=F64, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _interior_mask(rast, pos, tri, margin=1e-3):
    """Covered pixels whose centre is at least ``margin`` px inside its triangle: a perturbation of the
    positions by gradcheck's step cannot change which triangle covers them."""
    screen = Ref.screen_positions(pos, rast.intrinsics)
    f = rast.triangle_id.long().clamp(min=0)
    c = screen[0][tri.long()[f[0]]]  # [H, W, 3 corners, 3]
    h, w = rast.shape[1:]
    py, px = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    dist = []
    for k in range(3):
        a, b = c[..., (k + 1) % 3, :2], c[..., (k + 2) % 3, :2]
        e = (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])
        dist.append(e.abs() / (b - a).norm(dim=-1))
    return (rast.mask[0] & (torch.stack(dist, -1).min(-1).values > margin))[None]


def test_rasterize_barycentrics_and_depth_gradcheck():
    pos, tri = _mesh()
    K = _K()
    inside = _interior_mask(R.rasterize(pos, tri, SIZE, K), pos, tri)
    assert int(inside.sum()) > 100

    def f(p):
        r = R.rasterize(p, tri, SIZE, K)
        return r.barycentrics * inside.unsqueeze(-1), r.depth * inside

    assert torch.autograd.gradcheck(f, (pos.clone().requires_grad_(),), eps=1e-6, atol=1e-7, fast_mode=True)


def test_interpolate_gradcheck_attr_and_positions():
    pos, tri = _mesh()
    K = _K()
    inside = _interior_mask(R.rasterize(pos, tri, SIZE, K), pos, tri)
    attr = _weights((1, pos.shape[1], 2))

    def f(p, a):
        return R.interpolate(a, R.rasterize(p, tri, SIZE, K), tri) * inside.unsqueeze(-1)

    assert torch.autograd.gradcheck(f, (pos.clone().requires_grad_(), attr.requires_grad_()), eps=1e-6, atol=1e-7,
                                    fast_mode=True)


def test_interpolate_gradcheck_barycentrics_shared_attr():
    pos, tri = _mesh(batch=2)
    rast = R.rasterize(pos, tri, SIZE, _K())
    attr = _weights((pos.shape[1], 3))  # [N, C]: shared by the batch

    def f(a, bary):
        return R.interpolate(a, dataclasses.replace(rast, barycentrics=bary), tri)

    bary = rast.barycentrics.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (attr.requires_grad_(), bary), eps=1e-6, atol=1e-7, fast_mode=True)


def test_antialias_gradcheck_colour_and_positions():
    pos, tri = _mesh(batch=2)
    K = _K()
    rast = R.rasterize(pos, tri, SIZE, K)
    colour = torch.cat([R.interpolate(_weights((pos.shape[1], 2)), rast, tri).detach(),
                        rast.mask.unsqueeze(-1).to(F64)], -1).contiguous()
    topo = R.edge_neighbours(tri)
    p = pos.clone().requires_grad_()
    out = R.antialias(colour, rast, p, tri, topo)
    assert (out - colour).abs().sum() > 1.0  # it blended something
    assert torch.autograd.gradcheck(lambda c, q: R.antialias(c, rast, q, tri, topo),
                                    (colour.clone().requires_grad_(), p), eps=1e-6, atol=1e-7, fast_mode=True)


def _white_image(shift, pos, tri, K, weights):
    """sum(weights * antialiased white-on-black mask) with the mesh moved by ``shift`` (re-rasterised)."""
    p = pos + shift
    rast = R.rasterize(p, tri, SIZE, K)
    return (R.antialias(rast.mask.unsqueeze(-1).to(F64), rast, p, tri) * weights).sum()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_antialias_gradient_matches_central_differences_of_the_rerasterised_image(axis):
    """The analytic silhouette gradient against central differences of the antialiased image itself,
    re-rasterised at each step (steps of ~0.01 px at the silhouette, so some triangle ids change). The
    method is continuous along each pixel pair, not exactly in 2-D, so a little slack."""
    pos, tri = _mesh(rings=10, segments=16)
    K = _K()
    weights = _weights((1, SIZE, SIZE, 1), seed=3)
    shift = torch.zeros(3, dtype=F64, requires_grad=True)
    _white_image(shift, pos, tri, K, weights).backward()
    h = 0.0015 if axis < 2 else 0.01
    e = torch.zeros(3, dtype=F64)
    e[axis] = h
    fd = (_white_image(e, pos, tri, K, weights) - _white_image(-e, pos, tri, K, weights)) / (2 * h)
    g = shift.grad[axis]
    assert abs(float(fd)) > 1.0
    assert float(g) == pytest.approx(float(fd), rel=0.1)


def test_texture_gradcheck():
    g = torch.Generator().manual_seed(4)
    tex = torch.rand((2, 5, 7, 2), generator=g, dtype=F64)
    uv = torch.rand((2, 6, 4, 2), generator=g, dtype=F64) * 1.3 - 0.15  # some clamped
    assert torch.autograd.gradcheck(R.texture, (tex.requires_grad_(), uv.requires_grad_()), eps=1e-6, atol=1e-7,
                                    fast_mode=True)
    shared = tex[0].detach().clone().requires_grad_()  # [Ht, Wt, C] shared by the batch
    assert torch.autograd.gradcheck(R.texture, (shared, uv), eps=1e-6, atol=1e-7, fast_mode=True)


def test_soft_silhouette_gradcheck():
    pos, tri = _mesh(batch=2, rings=4, segments=6)
    K = _K()
    assert torch.autograd.gradcheck(lambda p: R.soft_silhouette(p, tri, SIZE, K, sigma=2.0),
                                    (pos.clone().requires_grad_(),), eps=1e-6, atol=1e-7, fast_mode=True)


def _all_ops(mod, pos, col, tri, K, tex, uv):
    rast = mod.rasterize(pos, tri, SIZE, K)
    img = mod.interpolate(col, rast, tri)
    aa = mod.antialias(img, rast, pos, tri)
    soft = mod.soft_silhouette(pos, tri, SIZE, K, sigma=1.5)
    tx = mod.texture(tex, uv)
    return rast, img, aa, soft, tx


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_every_op_matches_the_torch_reference(dtype):
    pos, tri = _mesh(dtype=dtype, batch=2)
    K = _K(dtype)
    col = _weights((2, pos.shape[1], 3), dtype)
    tex = _weights((2, 9, 8, 3), dtype, seed=5)
    uv = _weights((2, SIZE, SIZE, 2), dtype, seed=6)
    ins = [t.clone().requires_grad_() for t in (pos, col, tex, uv)]
    ref = [t.clone().requires_grad_() for t in (pos, col, tex, uv)]
    out = _all_ops(R, ins[0], ins[1], tri, K, ins[2], ins[3])
    exp = _all_ops(Ref, ref[0], ref[1], tri, K, ref[2], ref[3])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert torch.equal(out[0].triangle_id, exp[0].triangle_id)
    torch.testing.assert_close(out[0].barycentrics, exp[0].barycentrics, **tol)
    torch.testing.assert_close(out[0].depth, exp[0].depth, **tol)
    for a, b in zip(out[1:], exp[1:]):
        torch.testing.assert_close(a, b, **tol)
    w = [_weights(t.shape, dtype, seed=10 + i) for i, t in enumerate(out[1:])]
    sum((a * wi).sum() for a, wi in zip(out[1:], w)).backward()
    sum((a * wi).sum() for a, wi in zip(exp[1:], w)).backward()
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad, **tol)


def test_clip_space_input_equals_camera_space_with_derived_intrinsics():
    pos, tri = _mesh()
    h, w = 20, 28
    P = torch.tensor([[1.5, 0.0, 0.0, 0.0], [0.0, 1.8, 0.0, 0.0], [0.0, 0.0, 1.0, -0.1], [0.0, 0.0, 1.0, 0.0]],
                     dtype=F64)  # a perspective matrix (w = z)
    clip = torch.cat([pos, torch.ones_like(pos[..., :1])], -1) @ P.T
    rc = R.rasterize(clip.contiguous(), tri, (h, w))
    K = torch.tensor([1.5 * w / 2, 1.8 * h / 2, (w - 1) / 2, (h - 1) / 2], dtype=F64)
    rk = R.rasterize(pos, tri, (h, w), K)
    assert int(rc.mask.sum()) > 50
    assert torch.equal(rc.triangle_id, rk.triangle_id)
    torch.testing.assert_close(rc.depth, rk.depth)
    img = rc.mask.unsqueeze(-1).to(F64)
    torch.testing.assert_close(R.antialias(img, rc, clip.contiguous(), tri), R.antialias(img, rk, pos, tri))


def test_white_mesh_on_black_target_gets_position_gradients_only_through_antialias():
    """A constant-colour mesh has no interior gradient (barycentrics sum to 1): only silhouette edges move it."""
    pos, tri = _mesh(rings=10, segments=16)
    K = _K()
    grads = {}
    for use_aa in (False, True):
        p = pos.clone().requires_grad_()
        rast = R.rasterize(p, tri, SIZE, K)
        white = R.interpolate(torch.ones(pos.shape[1], 1, dtype=F64), rast, tri)
        img = R.antialias(white, rast, p, tri) if use_aa else white
        (img ** 2).sum().backward()  # L2 against a black target
        grads[use_aa] = p.grad
    assert grads[False].abs().max() < 1e-9
    assert grads[True].abs().max() > 1e-2
    # Moving away (z up) shrinks the silhouette and lowers the loss.
    assert float(grads[True][..., 2].sum()) < 0


def test_edge_neighbours_of_a_closed_mesh_and_a_boundary():
    _, tri = uv_sphere(4, 6)
    nbr = R.edge_neighbours(tri)
    assert bool((nbr >= 0).all())
    f = torch.arange(tri.shape[0])
    for k in range(3):  # symmetric: my neighbour across edge k has me as a neighbour
        assert bool((nbr[nbr[:, k].long()] == f.unsqueeze(1).to(torch.int32)).any(1).all())
    open_mesh = torch.tensor([[0, 1, 2], [2, 1, 3]], dtype=torch.int32)
    assert R.edge_neighbours(open_mesh).tolist() == [[1, -1, -1], [-1, -1, 0]]


@pytest.mark.parametrize("call, message", [
    (lambda p, t, K: R.rasterize(p, t, SIZE), "intrinsics"),
    (lambda p, t, K: R.rasterize(p, t, (SIZE, 0), K), "size"),
    (lambda p, t, K: R.rasterize(p, t.long(), SIZE, K), "tri"),
    (lambda p, t, K: R.soft_silhouette(p, t, SIZE, K, sigma=0.0), "sigma"),
    (lambda p, t, K: R.antialias(torch.zeros(1, SIZE, SIZE, 1, dtype=F64), p, p, t), "rast"),
    (lambda p, t, K: R.interpolate(torch.zeros(1, 3, dtype=F64), R.rasterize(p, t, SIZE, K), t), "tri"),
    (lambda p, t, K: R.texture(torch.zeros(2, 2, 1), torch.zeros(1, 2, 2, 2, dtype=F64)), "tex"),
])
def test_bad_arguments_name_the_argument(call, message):
    pos, tri = _mesh()
    with pytest.raises(ValueError, match=message):
        call(pos, tri, _K())


def test_soft_radius_bounds_the_neglected_tail():
    for sigma in (0.5, 2.0, 10.0):
        r = Ref.soft_radius(sigma)
        assert math.exp(-r * r / sigma) <= 1e-4
