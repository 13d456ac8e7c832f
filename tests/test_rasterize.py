"""Rasteriser: scenes with known answers (coverage, depth, occlusion, silhouettes), consistency of
barycentrics and depth, culling, agreement with the torch reference, and bad-input errors."""
import numpy as np
import pytest
import torch

from fml_taichi.ops.rasterize import BACKGROUND_DEPTH, interpolate, rasterize, shade_image
from fml_taichi.reference.rasterize import rasterize as rasterize_reference

QUAD_TRIS = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def quad(x0, y0, x1, y1, z):
    """Front-parallel rectangle, counter-clockwise seen from the camera (outward normal -z)."""
    return torch.tensor([[x0, y0, z], [x0, y1, z], [x1, y1, z], [x1, y0, z]], dtype=torch.float32)


def pixel_rays(h, w, intr):
    """Unit-z ray directions through every pixel centre, [H, W, 3]."""
    fx, fy, cx, cy = intr.tolist()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)


def inside_convex(points, hull, margin):
    """Pixel centres inside a convex polygon (either orientation) by more than ``margin`` pixels, and
    those within ``margin`` of its boundary (ambiguous for any rasteriser)."""
    x, y = hull[:, 0], hull[:, 1]
    orient = np.sign(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))  # shoelace: interior side
    d = []
    for a, c in zip(hull, np.roll(hull, -1, axis=0)):
        e = c - a
        cross = e[0] * (points[..., 1] - a[1]) - e[1] * (points[..., 0] - a[0])
        d.append(orient * cross / np.linalg.norm(e))
    d = np.stack(d, -1)
    return (d > margin).all(-1), (np.abs(d) <= margin).any(-1) & (d > -margin).all(-1)


def test_quad_coverage_and_depth_known_answer():
    # fx = 10, z = 10: one camera-space unit is one pixel. x in [-3, 3] -> u in [3.5, 9.5] with cx = 6.5,
    # y in [-2, 2] -> v in [2.5, 6.5] with cy = 4.5: exactly columns 4..9 and rows 3..6 (no pixel centre
    # lies on the border, so the answer does not depend on the edge rule).
    intr = torch.tensor([10.0, 10.0, 6.5, 4.5])
    r = rasterize(quad(-3, -2, 3, 2, 10.0)[None], QUAD_TRIS, intr, 10, 14)
    expect = torch.zeros(10, 14, dtype=torch.bool)
    expect[3:7, 4:10] = True
    assert torch.equal(r.mask[0], expect)
    assert r.mask.sum() == 24
    assert torch.allclose(r.depth[0][expect], torch.tensor(10.0))
    assert (r.depth[0][~expect] == BACKGROUND_DEPTH).all()
    assert set(r.triangle_id[0][expect].tolist()) == {0, 1}
    assert (r.triangle_id[0][~expect] == -1).all()
    assert (r.barycentrics[0][~expect] == 0).all()


def test_tilted_plane_depth_is_exact_ray_plane_intersection():
    # A quad on the plane z = 20 + 0.5 x (strongly tilted): depth at each pixel centre is where that
    # pixel's ray meets the plane, computed here in float64 independently of the rasteriser.
    corners = torch.tensor([[-8.0, -6, 0], [-8, 6, 0], [8, 6, 0], [8, -6, 0]])
    corners[:, 2] = 20 + 0.5 * corners[:, 0]
    intr = torch.tensor([30.0, 30.0, 20.0, 20.0])
    r = rasterize(corners[None], QUAD_TRIS, intr, 42, 42)
    rays = pixel_rays(42, 42, intr)
    z_true = 20.0 / (1.0 - 0.5 * rays[..., 0])
    uv = corners.double().numpy()
    hull = np.stack([intr[0].item() * uv[:, 0] / uv[:, 2] + intr[2].item(),
                     intr[1].item() * uv[:, 1] / uv[:, 2] + intr[3].item()], -1)
    pix = np.stack(np.mgrid[0:42, 0:42][::-1], -1).astype(np.float64)
    inside, border = inside_convex(pix, hull, 1e-3)
    m = r.mask[0].numpy()
    assert inside.sum() > 400
    assert m[inside].all() and not m[~inside & ~border].any()
    np.testing.assert_allclose(r.depth[0].numpy()[inside], z_true[inside], rtol=1e-5)


def test_occlusion_nearer_triangle_wins_in_any_order():
    near_q, far_q = quad(-2, -2, 2, 2, 5.0), quad(0, -6, 8, 2, 10.0)  # overlapping; the far one sticks out
    intr = torch.tensor([20.0, 20.0, 16.0, 16.0])
    tris_nf = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], dtype=torch.int32)
    tris_fn = torch.tensor([[4, 5, 6], [4, 6, 7], [0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    v = torch.cat([near_q, far_q])[None]
    for tris, near_ids in ((tris_nf, {0, 1}), (tris_fn, {2, 3})):
        r = rasterize(v, tris, intr, 33, 33)
        near_only = rasterize(near_q[None], QUAD_TRIS, intr, 33, 33).mask[0]
        # Wherever the near quad covers a pixel it is what we see, at depth 5; elsewhere the far one.
        assert set(r.triangle_id[0][near_only].tolist()) == near_ids
        assert torch.allclose(r.depth[0][near_only], torch.tensor(5.0))
        far_visible = r.mask[0] & ~near_only
        assert far_visible.sum() > 50
        assert torch.allclose(r.depth[0][far_visible], torch.tensor(10.0))


def cube(half=1.0):
    """Closed cube, triangles counter-clockwise seen from outside (checked below)."""
    c = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = []
    for a, b, cc, d in quads:
        for t in ((a, b, cc), (a, cc, d)):
            p = c[list(t)]
            n = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
            tris.append(t if (n * p.mean(0)).sum() > 0 else (t[0], t[2], t[1]))
    return c, torch.tensor(tris, dtype=torch.int32)


def rot(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rx_ = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry_ = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz_ = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return torch.tensor(rz_ @ ry_ @ rx_, dtype=torch.float32)


def convex_hull_2d(p):
    """Monotone chain convex hull of 2D points (numpy), counter-clockwise in y-up axes."""
    p = sorted(map(tuple, p))
    cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])  # noqa: E731
    lo, hi = [], []
    for q in p:
        while len(lo) >= 2 and cross(lo[-2], lo[-1], q) <= 0:
            lo.pop()
        lo.append(q)
    for q in reversed(p):
        while len(hi) >= 2 and cross(hi[-2], hi[-1], q) <= 0:
            hi.pop()
        hi.append(q)
    return np.array(lo[:-1] + hi[:-1])


@pytest.mark.parametrize("cull", [False, True])
def test_cube_silhouette_matches_projected_hull(cull):
    verts, tris = cube()
    v_cam = verts @ rot(0.4, -0.7, 0.2).T + torch.tensor([0.3, -0.2, 6.0])
    intr = torch.tensor([60.0, 60.0, 31.5, 29.5])
    r = rasterize(v_cam[None].contiguous(), tris, intr, 60, 64, cull_backfaces=cull)
    uv = (v_cam[:, :2] / v_cam[:, 2:] * intr[:2] + intr[2:]).double().numpy()
    pix = np.stack(np.mgrid[0:60, 0:64][::-1], -1).astype(np.float64)
    inside, border = inside_convex(pix, convex_hull_2d(uv), 1e-3)
    m = r.mask[0].numpy()
    assert inside.sum() > 500
    assert m[inside].all(), "pixel inside the projected cube left empty"
    assert not m[~inside & ~border].any(), "pixel outside the projected cube drawn"
    if cull:  # only front faces remain, and they alone cover the whole silhouette
        p = v_cam[tris.long()]
        front = (torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]) * p[:, 0]).sum(-1) < 0
        seen = r.triangle_id[0][r.mask[0]].long().unique()
        assert front[seen].all() and 2 <= len(seen) <= 6


def test_barycentrics_are_perspective_correct():
    # One strongly tilted triangle (depth 3 to 30). Perspective-correct barycentrics sum to 1, and
    # the 3D point they interpolate lies on the pixel's ray at the reported depth; affine screen-space
    # weights would miss the ray by several pixels here.
    v = torch.tensor([[[-2.0, -2.0, 3.0], [25.0, -1.0, 30.0], [-1.0, 20.0, 28.0]]])
    intr = torch.tensor([30.0, 30.0, 10.0, 12.0])
    tris = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    r = rasterize(v, tris, intr, 40, 44)
    m = r.mask[0]
    assert m.sum() > 200
    b = r.barycentrics[0][m]
    assert torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5)
    assert (b >= 0).all() and (b <= 1).all()
    p = interpolate(v, r, tris)[0]
    assert torch.allclose(p[..., 2][m], r.depth[0][m], rtol=1e-5)
    vv, uu = torch.meshgrid(torch.arange(40.0), torch.arange(44.0), indexing="ij")
    u = intr[0] * p[..., 0] / p[..., 2] + intr[2]
    w = intr[1] * p[..., 1] / p[..., 2] + intr[3]
    assert (u - uu)[m].abs().max() < 2e-3 and (w - vv)[m].abs().max() < 2e-3
    assert (p[~m] == 0).all()


def test_backface_culling_keeps_only_triangles_facing_the_camera():
    front = quad(-2, -2, 2, 2, 5.0)  # counter-clockwise seen from the camera: faces it
    back = quad(-1, -1, 3, 3, 4.0)[[0, 3, 2, 1]]  # clockwise: faces away, and nearer
    v = torch.cat([front, back])[None]
    tris = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], dtype=torch.int32)
    intr = torch.tensor([10.0, 10.0, 16.0, 16.0])
    keep = rasterize(v, tris, intr, 33, 33)
    cull = rasterize(v, tris, intr, 33, 33, cull_backfaces=True)
    assert {2, 3} <= set(keep.triangle_id.unique().tolist())
    assert set(cull.triangle_id.unique().tolist()) == {-1, 0, 1}
    front_only = rasterize(front[None], QUAD_TRIS, intr, 33, 33)
    assert torch.equal(cull.mask, front_only.mask) and torch.equal(cull.depth, front_only.depth)


def test_near_plane_skips_triangles_and_batch_intrinsics_shift():
    # Image 0: the quad sits in front of the camera. Image 1: one vertex behind it -> skipped entirely.
    q = quad(-2, -2, 2, 2, 5.0)
    behind = q.clone()
    behind[0, 2] = -1.0
    v = torch.stack([q, behind, q])
    intr = torch.tensor([[10.0, 10.0, 10.0, 10.0]] * 2 + [[10.0, 10.0, 13.0, 8.0]])
    r = rasterize(v, QUAD_TRIS, intr, 21, 21)
    assert r.mask[0].sum() == 81 and r.mask[1].sum() == 0  # +-2 at z=5, f=10: 9 x 9 px
    # Per-image intrinsics: cx + 3, cy - 2 moves the picture 3 px right and 2 px up.
    assert torch.equal(r.mask[2], torch.roll(r.mask[0], shifts=(-2, 3), dims=(0, 1)))


def test_agrees_with_torch_reference_on_random_soup():
    g = torch.Generator().manual_seed(3)
    centres = torch.rand(2, 300, 1, 3, generator=g) * torch.tensor([8.0, 8.0, 6.0]) + torch.tensor([-4.0, -4.0, 6.0])
    v = (centres + torch.randn(2, 300, 3, 3, generator=g)).reshape(2, 900, 3).contiguous()
    tris = torch.arange(900, dtype=torch.int32).reshape(300, 3)
    intr = torch.tensor([30.0, 30.0, 23.5, 20.0])
    for cull in (False, True):
        a = rasterize(v, tris, intr, 40, 48, cull_backfaces=cull)
        b = rasterize_reference(v, tris, intr, 40, 48, cull_backfaces=cull)
        same = a.triangle_id == b.triangle_id
        assert a.mask.float().mean() > 0.3
        assert same.float().mean() > 0.995  # the rest: pixels on shared edges / equal depths, rounding
        assert torch.allclose(a.depth[same], b.depth[same], rtol=1e-5)
        assert torch.allclose(a.barycentrics[same], b.barycentrics[same], atol=1e-4)


def test_shade_image_colours_and_background():
    intr = torch.tensor([10.0, 10.0, 6.5, 4.5])
    v = quad(-3, -2, 3, 2, 10.0)[None]
    r = rasterize(v, QUAD_TRIS, intr, 10, 14)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    img = shade_image(r, QUAD_TRIS, colours, background=(0.2, 0.3, 0.4))
    assert img.shape == (1, 10, 14, 3)
    assert torch.allclose(img[0][~r.mask[0]], torch.tensor([0.2, 0.3, 0.4]))
    expect = (r.barycentrics[0][..., None] * colours[QUAD_TRIS.long()][r.triangle_id[0].clamp(min=0).long()]).sum(-2)
    assert torch.allclose(img[0][r.mask[0]], expect[r.mask[0]])
    bg = torch.rand(1, 10, 14, 3)
    img2 = shade_image(r, QUAD_TRIS, colours[None], background=bg)
    assert torch.equal(img2[0][~r.mask[0]], bg[0][~r.mask[0]])
    # interpolate is differentiable with respect to the attributes.
    c = colours.clone().requires_grad_()
    interpolate(c, r, QUAD_TRIS).sum().backward()
    assert torch.allclose(c.grad.sum(), r.mask.sum().float() * 3)


def _good():
    return quad(-2, -2, 2, 2, 5.0)[None], QUAD_TRIS, torch.tensor([10.0, 10.0, 5.0, 5.0])


@pytest.mark.parametrize("change, word", [
    (lambda v, t, k: (v[0], t, k), "v_cam"),
    (lambda v, t, k: (v.double().int(), t, k), "v_cam"),
    (lambda v, t, k: (v.repeat(1, 1, 2)[..., :3], t, k), "v_cam"),  # non-contiguous
    (lambda v, t, k: (v.index_fill(1, torch.tensor([1]), float("nan")), t, k), "v_cam"),
    (lambda v, t, k: (v[:, :0], t, k), "v_cam"),
    (lambda v, t, k: (v, t.long(), k), "triangles"),
    (lambda v, t, k: (v, t[:0], k), "triangles"),
    (lambda v, t, k: (v, t + 2, k), "triangles"),
    (lambda v, t, k: (v, t, k[:3]), "intrinsics"),
    (lambda v, t, k: (v, t, k * 0), "intrinsics"),
])
@pytest.mark.parametrize("impl", [rasterize, rasterize_reference], ids=["taichi", "torch"])
def test_bad_input_names_the_argument(change, word, impl):
    v, t, k = change(*_good())
    with pytest.raises(ValueError, match=word):
        impl(v, t, k, 8, 8)


def test_bad_sizes_and_mismatched_raster():
    v, t, k = _good()
    with pytest.raises(ValueError, match="height"):
        rasterize(v, t, k, 0, 8)
    with pytest.raises(ValueError, match="width"):
        rasterize(v, t, k, 8, 2.5)
    r = rasterize(v, t, k, 8, 8)
    with pytest.raises(ValueError, match="attributes"):
        interpolate(torch.zeros(3, 4, 2), r, t)
    with pytest.raises(ValueError, match="triangles"):
        interpolate(torch.zeros(4, 2), r, t[:1])
    with pytest.raises(ValueError, match="raster"):
        interpolate(torch.zeros(4, 2), r.mask, t)
    with pytest.raises(ValueError, match="background"):
        shade_image(r, t, torch.zeros(4, 3), background=(1.0, 0.0))


def test_shared_edges_are_watertight():
    # 2000 quads split by a diagonal through the pixel centre (3, 3) at random angles and lengths:
    # mathematically the centre lies on the shared edge, in float32 it is a hair to one side. It must
    # land in one of the two triangles every time (an order-dependent edge function lost ~0.7%).
    g = torch.Generator().manual_seed(0)
    n = 2000
    ang = torch.rand(n, generator=g) * np.pi
    d = torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    normal = torch.stack([-d[:, 1], d[:, 0]], -1)
    c = torch.tensor([3.0, 3.0])
    p = c - (0.5 + 1.5 * torch.rand(n, 1, generator=g)) * d
    q = c + (0.5 + 1.5 * torch.rand(n, 1, generator=g)) * d
    pts = torch.stack([p, q, c + 2.0 * normal + 0.3 * d, c - 2.0 * normal - 0.2 * d], 1)
    v = torch.cat([pts, torch.ones(n, 4, 1)], -1).contiguous()  # z = 1, identity camera: pixels = x, y
    tris = torch.tensor([[0, 1, 2], [1, 0, 3]], dtype=torch.int32)
    r = rasterize(v, tris, torch.tensor([1.0, 1.0, 0.0, 0.0]), 7, 7)
    assert int((~r.mask[:, 3, 3]).sum()) == 0
