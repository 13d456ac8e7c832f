"""The generic differentiable renderer (fml_taichi.ops.render.render_textured) against the same pipeline composed
from the plain-torch twins, and its gradients."""
import pytest
import torch

from fml_taichi.ops.render import render_textured as render
from fml_taichi.reference import raster_ops as Ref
from fml_taichi.reference import sh_shading, vertex_normals
from fml_taichi.reference.meshes import uv_sphere

SIZE = 20


def _scene(dtype=torch.float64):
    v, tri = uv_sphere(8, 12, 1.0, dtype)
    pos = torch.stack([v + torch.tensor([0.1, 0.0, 4.0], dtype=dtype),
                       v * 0.9 + torch.tensor([-0.1, 0.1, 4.2], dtype=dtype)])
    g = torch.Generator().manual_seed(0)
    light = torch.zeros(2, 9, 3, dtype=dtype)
    light[:, 0] = 2.5
    light[:, 3] = torch.rand((2, 3), generator=g, dtype=dtype)
    f = 1.1 * SIZE
    K = torch.tensor([f, f, (SIZE - 1) / 2, (SIZE - 1) / 2], dtype=dtype)
    col = torch.rand((2, v.shape[0], 3), generator=g, dtype=dtype)
    uv = torch.rand((v.shape[0], 2), generator=g, dtype=dtype)
    tex = torch.rand((6, 7, 3), generator=g, dtype=dtype)
    return pos.contiguous(), tri, K, col, light, uv, tex


def _expected(pos, tri, K, albedo_fn, light, background):
    rast = Ref.rasterize(pos, tri, SIZE, K)
    a = albedo_fn(rast)
    n = Ref.interpolate(vertex_normals(pos, tri), rast, tri)
    n = n / (n.norm(dim=-1, keepdim=True) + 1e-12)
    b = pos.shape[0]
    img = sh_shading(n.reshape(b, -1, 3), a.reshape(b, -1, 3), light).view(b, SIZE, SIZE, 3)
    m = rast.mask.unsqueeze(-1).to(img.dtype)
    layers = torch.cat([img * m + background * (1 - m), m], -1)
    out = Ref.antialias(layers, rast, pos, tri)
    return out[..., :3], out[..., 3], rast.depth


@pytest.mark.parametrize("textured", [False, True])
def test_render_matches_the_reference_composition(textured):
    pos, tri, K, col, light, uv, tex = _scene()
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    if textured:
        got = render(pos, tri, SIZE, K, uv=uv, tex=tex, light=light, background=bg)
        albedo = lambda r: Ref.texture(tex, Ref.interpolate(uv, r, tri))  # noqa: E731
    else:
        got = render(pos, tri, SIZE, K, colours=col, light=light, background=bg)
        albedo = lambda r: Ref.interpolate(col, r, tri)  # noqa: E731
    image, mask, depth = _expected(pos, tri, K, albedo, light, bg)
    assert 0.1 < float(mask.mean()) < 0.9
    assert float(((mask > 0) & (mask < 1)).sum()) > 10  # antialiased edge pixels
    torch.testing.assert_close(got.image, image)
    torch.testing.assert_close(got.mask, mask)
    torch.testing.assert_close(got.depth, depth)


def test_render_gradients_reach_geometry_colours_light_and_texture():
    pos, tri, K, col, light, uv, tex = _scene(torch.float32)
    leaves = [t.clone().requires_grad_() for t in (pos, col, light, tex)]
    a = render(leaves[0], tri, SIZE, K, colours=leaves[1], light=leaves[2])
    b = render(leaves[0], tri, SIZE, K, uv=uv, tex=leaves[3], light=leaves[2])
    (a.image.sum() + b.image.sum() + a.mask.sum()).backward()
    for t in leaves:
        assert t.grad is not None and float(t.grad.abs().max()) > 0


def test_render_rejects_ambiguous_albedo():
    pos, tri, K, col, light, uv, tex = _scene()
    with pytest.raises(ValueError, match="colours"):
        render(pos, tri, SIZE, K, colours=col, uv=uv, tex=tex)
    with pytest.raises(ValueError, match="uv"):
        render(pos, tri, SIZE, K, uv=uv)


def test_pose_render_with_antialias_gives_silhouette_gradients_and_matches_inside():
    """``ops.render.render(antialias=True)``: the face path's renderer through the differentiable ops."""
    from fml_taichi.ops.render import render as render_posed

    v, tris = uv_sphere(16, 32, radius=1.0)
    v = v[None].contiguous()
    k = torch.tensor([60.0, 60.0, 31.5, 31.5])
    refl = torch.full_like(v, 0.8)
    light = torch.zeros(1, 9, 3)
    light[:, 0] = 3.0
    t = torch.tensor([[0.1, 0.0, 5.0]], requires_grad=True)
    rot = torch.zeros(1, 3)
    aa = render_posed(v, tris, k, 64, 64, rotation=rot, translation=t, reflectance=refl, light=light, antialias=True)
    with torch.no_grad():
        plain = render_posed(v, tris, k, 64, 64, rotation=rot, translation=t.detach(), reflectance=refl, light=light)
    inside = plain.mask.clone()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        inside &= torch.roll(plain.mask, (dy, dx), (1, 2))
    assert torch.allclose(aa.image.detach()[inside], plain.image[inside], atol=1e-4)
    assert bool(((aa.mask > 0) & (aa.mask < 1)).any())  # a fractional rim: the silhouette is blended
    # Moving the sphere sideways changes the coverage: only silhouette gradients see that.
    aa.mask.sum().backward()
    assert t.grad is not None and float(t.grad[0, :2].abs().sum()) + float(t.grad[0, 2].abs()) > 0
