"""Landmark kernels vs their torch references, float64 gradient checks, selection and input errors."""
import math

import pytest
import torch

from fml_taichi.ops import landmarks as K
from fml_taichi.reference import landmarks as R


def _inputs(dtype, b=2, n=40, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(b, n, 3, generator=g, dtype=dtype) * 30
    rotation = torch.randn(b, 3, generator=g, dtype=dtype) * 0.3
    translation = torch.tensor([[2.0, -1.0, 500.0], [-4.0, 3.0, 420.0]], dtype=dtype)[:b]
    intrinsics = torch.tensor([600.0, 590.0, 119.5, 121.0], dtype=dtype)
    idx = torch.randint(0, n, (b, k), generator=g, dtype=torch.int32)
    targets = torch.rand(b, k, 2, generator=g, dtype=dtype) * 240
    weights = torch.rand(b, k, generator=g, dtype=dtype)
    return points, idx, rotation, translation, intrinsics, targets, weights


def _rot(axis, a):
    c, s = math.cos(a), math.sin(a)
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return torch.tensor(m, dtype=torch.float64)


def test_euler_convention_is_rz_ry_rx():
    ang = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    want = _rot("z", 1.1) @ _rot("y", -0.7) @ _rot("x", 0.3)
    assert torch.allclose(R.euler_zyx(ang)[0], want, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_reprojection_matches_reference(dtype, tol):
    points, idx, rot, tr, intr, tg, w = _inputs(dtype)
    outs = []
    for mod in (K, R):
        p, r, t = (x.clone().requires_grad_() for x in (points, rot, tr))
        loss = mod.sparse_reprojection_loss(p, idx, r, t, intr, tg, w)
        grads = torch.autograd.grad((loss * torch.tensor([1.0, -2.0], dtype=dtype)).sum(), [p, r, t])
        outs.append((loss, *grads))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max()))
    # Loss is a real quantity (not trivially zero) and the gathered points get gradient.
    assert (outs[0][0] > 0).all() and outs[0][1].abs().sum() > 0


def test_reprojection_gradcheck_float64():
    points, idx, rot, tr, intr, tg, w = _inputs(torch.float64, n=12, k=5)
    ins = tuple(x.clone().requires_grad_() for x in (points, rot, tr))
    assert torch.autograd.gradcheck(lambda p, r, t: K.sparse_reprojection_loss(p, idx, r, t, intr, tg, w), ins)


def test_reprojection_zero_at_exact_projections_and_per_batch_intrinsics():
    points, idx, rot, tr, intr, _, w = _inputs(torch.float64)
    intr_b = torch.stack([intr, intr * torch.tensor([1.1, 1.1, 1.0, 1.0], dtype=torch.float64)])
    q = torch.einsum("bij,bkj->bki", R.euler_zyx(rot), torch.gather(points, 1, idx.long()[..., None].expand(-1, -1, 3)))
    q = q + tr[:, None]
    exact = (q[..., :2] / q[..., 2:] * intr_b[:, None, :2] + intr_b[:, None, 2:]).contiguous()
    assert K.sparse_reprojection_loss(points, idx, rot, tr, intr_b, exact, w).abs().max() < 1e-16
    # One pixel off in x on every target: the loss is the mean weight.
    off = exact + torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(K.sparse_reprojection_loss(points, idx, rot, tr, intr_b, off, w), w.mean(1))


def test_closest_to_rays_picks_the_point_on_the_ray():
    dtype = torch.float64
    rot = torch.tensor([[0.1, -0.2, 0.05]], dtype=dtype)
    tr = torch.tensor([[0.0, 0.0, 400.0]], dtype=dtype)
    intr = torch.tensor([500.0, 500.0, 64.0, 64.0], dtype=dtype)
    targets = torch.tensor([[[30.0, 70.0], [90.0, 20.0]]], dtype=dtype)
    # Candidates for target k: one point exactly on its ray (model space, via the inverse pose), others off it.
    rmat = R.euler_zyx(rot)[0]
    pts = []
    for (x, y), depth in zip(targets[0].tolist(), (380.0, 420.0)):
        cam = torch.tensor([(x - 64.0) / 500.0 * depth, (y - 64.0) / 500.0 * depth, depth], dtype=dtype)
        on_ray = rmat.T @ (cam - tr[0])
        pts += [on_ray + torch.tensor([5.0, 0, 0], dtype=dtype), on_ray, on_ray + torch.tensor([0, -3.0, 1], dtype=dtype)]
    points = torch.stack(pts)[None].contiguous()
    offsets = torch.tensor([0, 3, 6], dtype=torch.int32)
    cands = torch.tensor([0, 1, 2, 3, 4, 5], dtype=torch.int32)
    assert K.closest_to_rays(points, rot, tr, intr, targets, offsets, cands).tolist() == [[1, 4]]
    # Reordering candidates must follow the point, not the slot.
    cands2 = torch.tensor([1, 0, 2, 5, 3, 4], dtype=torch.int32)
    assert K.closest_to_rays(points, rot, tr, intr, targets, offsets, cands2).tolist() == [[1, 4]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closest_to_rays_matches_reference(dtype):
    points, _, rot, tr, intr, tg, _ = _inputs(dtype, n=60, k=5, seed=3)
    offsets = torch.tensor([0, 4, 9, 20, 21, 30], dtype=torch.int32)
    cands = torch.randint(0, 60, (30,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    got = K.closest_to_rays(points, rot, tr, intr, tg, offsets, cands)
    assert got.dtype == torch.int32 and got.shape == (2, 5)
    assert torch.equal(got, R.closest_to_rays(points, rot, tr, intr, tg, offsets, cands))


def test_bad_inputs_raise_value_errors_naming_the_argument():
    points, idx, rot, tr, intr, tg, w = _inputs(torch.float32)
    f = K.sparse_reprojection_loss
    cases = [
        (lambda: f(points[..., :2].contiguous(), idx, rot, tr, intr, tg, w), "points"),
        (lambda: f(points, idx.long(), rot, tr, intr, tg, w), "indices"),
        (lambda: f(points, idx + 100, rot, tr, intr, tg, w), "indices"),
        (lambda: f(points, idx, rot.double(), tr, intr, tg, w), "rotation"),
        (lambda: f(points, idx, rot, tr, intr[:3], tg, w), "intrinsics"),
        (lambda: f(points, idx, rot, tr, intr * 0, tg, w), "intrinsics"),
        (lambda: f(points, idx, rot, tr, intr, tg.transpose(0, 1), w), "targets"),
        (lambda: f(points, idx, rot, tr, intr, tg, w * float("nan")), "weights"),
        (lambda: f(points[:, :0].contiguous(), idx, rot, tr, intr, tg, w), "points"),
    ]
    offsets = torch.tensor([0, 2, 2], dtype=torch.int32)
    cands = torch.tensor([0, 1], dtype=torch.int32)
    g = K.closest_to_rays
    cases += [
        (lambda: g(points, rot, tr, intr, tg[:, :2].contiguous(), offsets, cands), "offsets"),  # empty group
        (lambda: g(points, rot, tr, intr, tg[:, :1].contiguous(), offsets[:2], cands + 99), "candidates"),
        (lambda: g(points, rot, tr, intr, tg[:, :1].contiguous(), offsets[:2], cands[:1]), "offsets"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("mod", [K, R])
def test_closest_to_rays_resolves_sub_millimetre_offsets_in_float32(mod):
    # At 500 mm the textbook |q|^2 - (q.d)^2/|d|^2 loses ~0.03 mm^2 to float32 cancellation; candidates
    # 0.05 mm off the ray must still lose against the one on it, whatever their order.
    intr = torch.tensor([300.0, 300.0, 31.5, 31.5])
    rot, tr = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 500.0]])
    on = torch.tensor([-70.0, 10.0, 30.0])  # the old formula picked candidate 0 here
    cam = on + tr[0]
    target = torch.tensor([[[300 * cam[0] / cam[2] + 31.5, 300 * cam[1] / cam[2] + 31.5]]])
    offs = [torch.tensor([0.05, 0.0, 0.0]), torch.tensor([0.0, -0.05, 3.0]), torch.tensor([0.0, 0.04, -2.0])]
    points = torch.stack([on + o for o in offs[:2]] + [on] + [on + offs[2]])[None].contiguous()
    got = mod.closest_to_rays(points, rot, tr, intr, target, torch.tensor([0, 4], dtype=torch.int32),
                              torch.tensor([0, 1, 2, 3], dtype=torch.int32))
    assert got.tolist() == [[2]]


def test_point_behind_the_camera_gives_a_finite_loss():
    points, idx, rot, tr, intr, tg, w = _inputs(torch.float64)
    tr = tr.clone()
    tr[:, 2] = -1000.0  # every point behind the camera
    p = points.clone().requires_grad_()
    loss = K.sparse_reprojection_loss(p, idx, rot, tr, intr, tg, w)
    (g,) = torch.autograd.grad(loss.sum(), p)
    assert torch.isfinite(loss).all() and torch.isfinite(g).all()
    assert torch.allclose(loss, R.sparse_reprojection_loss(points, idx, rot, tr, intr, tg, w), rtol=1e-9)
