"""Z-buffer vertex visibility: the op against its torch twin, known occlusions, and E_photo with it."""
import pytest
import torch

from fml_taichi.losses import terms
from fml_taichi.model import FaceParams
from fml_taichi.ops.visibility import zbuffer_visibility
from fml_taichi.reference.meshes import uv_sphere
from fml_taichi.reference.rasterize import zbuffer_visibility as zbuffer_visibility_ref

K = torch.tensor([100.0, 100.0, 31.5, 31.5])


def _grid(z: float, half: float, n: int = 5):
    """An n x n vertex grid at depth z (camera frame), triangles facing the camera."""
    s = torch.linspace(-half, half, n)
    y, x = torch.meshgrid(s, s, indexing="ij")
    v = torch.stack([x, y, torch.full_like(x, z)], -1).reshape(-1, 3)
    tris = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            tris += [[a, d, b], [b, d, e]]
    return v, torch.tensor(tris, dtype=torch.int32)


def _two_planes():
    """A small plane in front of a large one: the large plane's centre vertices are hidden."""
    front, tf = _grid(5.0, 0.6)
    back, tb = _grid(10.0, 2.5, 9)
    v = torch.cat([front, back])[None].contiguous()
    return v, torch.cat([tf, tb + front.shape[0]]), front.shape[0]


def test_hidden_vertices_are_found_and_the_twin_agrees():
    v, tris, n_front = _two_planes()
    vis = zbuffer_visibility(v, tris, K, 64, 64)
    ref = zbuffer_visibility_ref(v, tris, K, 64, 64)
    assert torch.equal(vis, ref)
    assert bool((vis[0, :n_front] == 1).all())  # nothing hides the front plane
    back = v[0, n_front:]
    behind = (back[:, 0].abs() < 1.1) & (back[:, 1].abs() < 1.1)  # within the front plane's shadow (x2 depth)
    assert bool((vis[0, n_front:][behind] == 0).all())
    assert bool((vis[0, n_front:][~behind & (back[:, 0].abs() < 3.0)] == 1).any())


def test_convex_mesh_front_half_is_visible_and_off_image_is_not():
    v, tris = uv_sphere(24, 48, radius=1.0)
    v = (v + torch.tensor([0.0, 0.0, 6.0]))[None].contiguous()
    vis = zbuffer_visibility(v, tris, K, 64, 64)
    facing = v[0, :, 2] < 6.0 - 0.4  # clearly on the camera's side (away from the silhouette)
    hidden = v[0, :, 2] > 6.0 + 0.2
    assert bool((vis[0][facing] == 1).all()) and bool((vis[0][hidden] == 0).all())
    shifted = (v + torch.tensor([50.0, 0.0, 0.0])).contiguous()  # projected far outside the image
    assert float(zbuffer_visibility(shifted, tris, K, 64, 64).sum()) == 0.0


class _Model:
    def __init__(self, tris):
        self.triangles = tris


@pytest.mark.parametrize("impl", ["taichi", "torch"])
def test_photo_term_with_zbuffer_drops_hidden_vertices_and_is_differentiable(impl):
    v, tris, n_front = _two_planes()
    v = v.double()
    b, n = 1, v.shape[1]
    refl = torch.full((b, n, 3), 0.5, dtype=torch.float64, requires_grad=True)
    light = torch.zeros(b, 9, 3, dtype=torch.float64)
    light[:, 0] = 2.0
    light.requires_grad_()
    image = torch.rand(b, 64, 64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = FaceParams(torch.zeros(b, 0), torch.zeros(b, 0), torch.zeros(b, 0), torch.zeros(b, 0), torch.zeros(b, 0),
                        torch.zeros(b, 3, dtype=torch.float64), torch.zeros(b, 3, dtype=torch.float64), light)
    model = _Model(tris)
    k = K.double()
    plain = terms.level_photo(v, refl, params, model, image, k, impl)
    zbuf = terms.level_photo(v, refl, params, model, image, k, impl, visibility="zbuffer")
    assert float(zbuf.visible.sum()) < float(plain.visible.sum())
    assert float(zbuf.loss) < float(plain.loss)
    assert bool((zbuf.visible <= plain.visible).all())

    def f(r, li):
        p = FaceParams(params.shape, params.expression, params.reflectance, params.delta_geometry,
                       params.delta_reflectance, params.rotation, params.translation, li)
        return terms.level_photo(v, r, p, model, image, k, impl, visibility="zbuffer").loss

    assert torch.autograd.gradcheck(f, (refl, light), eps=1e-6, atol=1e-6)
