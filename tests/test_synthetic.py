"""Synthetic faces: determinism per seed, ground-truth consistency, out-of-space variation, dataset API."""
import math

import pytest
import torch

from fml_taichi.data import (EVAL_SEED_START, SyntheticConfig, SyntheticFaces, SyntheticRenderer,
                             collate_synthetic)
from fml_taichi.data import backgrounds, landmark_noise, variation
from fml_taichi.data.synthetic import draw_light, min_irradiance, stream
from fml_taichi.model import FaceParams, default_face_model
from fml_taichi.reference.image_formation import euler_to_matrix

N_VERTICES = 3000
SIZE = 120  # small images keep the tests fast; framing scales with the size


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(N_VERTICES)


@pytest.fixture(scope="module")
def renderer(face_model):
    return SyntheticRenderer(face_model, SyntheticConfig(image_size=SIZE))


@pytest.fixture(scope="module")
def batch(renderer):
    return renderer.render(list(range(100, 106)))


def project(vertices, params: FaceParams, intrinsics):
    rot = euler_to_matrix(params.rotation)
    v_cam = torch.bmm(vertices, rot.transpose(1, 2)) + params.translation.unsqueeze(1)
    return landmark_noise.project_points(v_cam, intrinsics)


def test_same_seed_same_image_whatever_the_batch(renderer, batch):
    again = renderer.render([103, 100])
    for key in ("image", "landmarks", "landmark_conf", "gt_vertices", "gt_reflectance", "face_mask"):
        assert torch.allclose(again[key][1].float(), batch[key][0].float(), atol=1e-5), key
        assert torch.allclose(again[key][0].float(), batch[key][3].float(), atol=1e-5), key
    # Different seeds differ.
    assert (batch["image"][0] - batch["image"][1]).abs().mean() > 0.02


def test_item_layout_and_ranges(batch, face_model):
    b, n = 6, face_model.n_vertices
    assert batch["image"].shape == (b, SIZE, SIZE, 3) and batch["image"].dtype == torch.float32
    assert batch["image"].is_contiguous()
    assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1
    assert batch["landmarks"].shape == (b, 68, 2) and batch["landmark_conf"].shape == (b, 68)
    assert float(batch["landmark_conf"].min()) >= 0 and float(batch["landmark_conf"].max()) <= 1
    for key in ("gt_vertices", "gt_reflectance", "gt_geometry_offset", "gt_reflectance_offset"):
        assert batch[key].shape == (b, n, 3), key
    assert batch["face_mask"].dtype == torch.bool
    coverage = batch["face_mask"].float().mean(dim=(1, 2))
    assert bool((coverage > 0.2).all()) and bool((coverage < 0.85).all()), coverage  # a detector-like crop
    assert batch["gt_params"].light.shape == (b, 9, 3)
    assert batch["gt_params"].delta_geometry.shape == (b, 0)


def test_ground_truth_is_consistent(batch, face_model):
    p = batch["gt_params"]
    base_g, base_r = face_model.base(p.shape, p.expression, p.reflectance)
    assert torch.allclose(base_g + batch["gt_geometry_offset"], batch["gt_vertices"], atol=1e-4)
    assert torch.allclose(base_r + batch["gt_reflectance_offset"], batch["gt_reflectance"], atol=1e-5)
    # Projected GT landmark vertices are the noise-free landmarks ...
    v = torch.gather(batch["gt_vertices"], 1, batch["gt_landmark_vertices"].unsqueeze(-1).expand(-1, -1, 3))
    uv = project(v, p, batch["intrinsics"][0])
    assert torch.allclose(uv, batch["gt_landmarks"], atol=1e-3)
    # ... and the detections scatter around them by a few pixels (sigma 1.5 px, up to ~3.75 px at low
    # confidence, plus a 0.5 px shared shift).
    err = (batch["landmarks"] - batch["gt_landmarks"]).norm(dim=-1)
    assert 0.5 < float(err.mean()) < 4.0
    assert float(err.max()) < 20.0
    # Fixed (non-jaw) landmarks use the model's landmark vertices.
    assert bool((batch["gt_landmark_vertices"][:, 17:] == face_model.landmarks[17:].long()).all())


def test_jaw_landmarks_slide_to_the_silhouette_on_a_turned_head(face_model):
    cfg = SyntheticConfig(image_size=SIZE, yaw_deg=30.0, pitch_deg=0.0, roll_deg=0.0)
    r = SyntheticRenderer(face_model, cfg)
    out = r.render(list(range(40)))
    yaw = out["gt_params"].rotation[:, 1]
    turned = yaw.abs() > math.radians(20)
    assert int(turned.sum()) >= 5
    jaw_moved = (out["gt_landmark_vertices"][:, :17] != face_model.landmarks[:17].long()).any(dim=1)
    assert bool(jaw_moved[turned].all())  # each turned head has sliding jaw points
    # Those points come with lower confidence than the inner face.
    conf = out["landmark_conf"][turned]
    moved = (out["gt_landmark_vertices"][turned, :17] != face_model.landmarks[:17].long())
    assert float(conf[:, :17][moved].mean()) < float(conf[:, 17:].mean()) - 0.2
    # The chosen outline points lie on the rendered face (within a pixel of the mask).
    mask = out["face_mask"].float().unsqueeze(1)
    grown = torch.nn.functional.max_pool2d(mask, 5, 1, 2)[:, 0] > 0
    px = out["gt_landmarks"].round().long().clamp(0, SIZE - 1)
    on_face = grown[torch.arange(40).unsqueeze(1), px[..., 1], px[..., 0]]
    assert float(on_face.float().mean()) > 0.97


def test_out_of_space_offsets_are_local_and_outside_the_base_span(batch, face_model):
    off = batch["gt_geometry_offset"]
    mag = off.norm(dim=-1)
    assert float(mag.max()) < 20.0  # bumps + region fields: millimetres, not centimetres
    assert float(mag.max()) > 2.0
    # Localised: a good part of the mesh (upper forehead, temples, ears) stays put.
    assert float((mag < 0.05).float().mean()) > 0.2
    # Not expressible by the base geometry model: the least-squares projection onto the shape and
    # expression bases leaves most of each offset.
    basis = torch.cat([face_model.shape_basis, face_model.expression_basis], dim=2).reshape(-1, face_model.m_shape
                                                                                            + face_model.m_expression)
    for i in range(off.shape[0]):
        y = off[i].reshape(-1, 1).double()
        if float(y.norm()) < 1.0:
            continue
        coef = torch.linalg.lstsq(basis.double(), y).solution
        residual = (y - basis.double() @ coef).norm() / y.norm()
        assert float(residual) > 0.5


def test_variation_strength_zero_gives_faces_in_the_base_span(face_model):
    r = SyntheticRenderer(face_model, SyntheticConfig(image_size=SIZE, variation=0.0))
    out = r.render([7, 8, 9])
    assert float(out["gt_geometry_offset"].abs().max()) == 0.0
    assert float(out["gt_reflectance_offset"].abs().max()) < 1e-6


def test_reflectance_patches_change_their_regions(face_model):
    tables = variation.VariationTables.from_model(face_model)
    base = face_model.mean_reflectance
    albedo = base.mean(0)
    draw = variation.VariationParams(
        amplitude=torch.zeros(len(tables.bump_group)), width=torch.ones(len(tables.bump_group)), tone=None,
        beard=("moustache", variation.HAIR[0], 1.0), lipstick=(variation.LIPSTICK[0], 1.0), eye_shadow=None,
        speckle_seed=0)
    out = variation.reflectance_with_patches(tables, base, draw, albedo)
    lips = tables.masks["lips"] > 0.9
    moustache = tables.masks["moustache"] > 0.9
    far = (tables.masks["lips"] < 1e-3) & (tables.masks["moustache"] < 1e-3)
    assert bool(lips.any()) and bool(moustache.any())
    assert torch.allclose(out[lips], variation.LIPSTICK[0].expand(int(lips.sum()), 3), atol=0.05)
    assert float(out[moustache].mean()) < 0.15  # dark hair
    assert torch.allclose(out[far], base[far], atol=1e-3)  # elsewhere untouched
    # Facial hair stays outside the skin mask (the regions the E_glo term treats as clean skin).
    assert float(tables.masks["moustache"][face_model.skin_mask].max()) < 0.5


def test_light_is_frontal_and_positive(renderer):
    for seed in range(30):
        light = draw_light(stream(seed, "params"), renderer.config)
        assert float(min_irradiance(light).min()) >= 0.15 - 1e-4
        # Frontal-ish: a normal facing the camera gets more light than one facing away from it.
        front = torch.tensor([[[0.0, 0.0, -1.0]]])
        back = torch.tensor([[[0.0, 0.0, 1.0]]])
        from fml_taichi.reference.image_formation import sh_basis
        assert float((sh_basis(front)[0] @ light).mean()) > float((sh_basis(back)[0] @ light).mean())


def test_backgrounds_vary_and_stay_in_range():
    for kind in backgrounds.KINDS:
        a = backgrounds.random_background(torch.Generator().manual_seed(3), 64, 48, kind)
        b = backgrounds.random_background(torch.Generator().manual_seed(4), 64, 48, kind)
        assert a.shape == (64, 48, 3) and a.dtype == torch.float32
        assert 0 <= float(a.min()) and float(a.max()) <= 1
        assert float((a - b).abs().mean()) > 0.01, kind  # seeds give different backgrounds
    # Structure differs by family: stripes have much more high-frequency energy than a gradient.
    def roughness(img):
        return float((img[1:] - img[:-1]).abs().mean() + (img[:, 1:] - img[:, :-1]).abs().mean())
    def draw(kind, seed):
        return backgrounds.random_background(torch.Generator().manual_seed(seed), 64, 64, kind)
    g = [roughness(draw("gradient", s)) for s in range(5)]
    st = [roughness(draw("stripes", s)) for s in range(5)]
    assert sum(st) > 3 * sum(g)
    plain = backgrounds.gradient(torch.Generator().manual_seed(3), 64, 48)
    cluttered = backgrounds.clutter(torch.Generator().manual_seed(3), 64, 48)
    assert float((plain - cluttered).abs().max()) > 0.1  # shapes painted over the same gradient
    with pytest.raises(ValueError, match="kind"):
        backgrounds.random_background(torch.Generator(), 8, 8, "plaid")


def test_dataset_split_and_collate(face_model):
    ds = SyntheticFaces(3, split="eval", face_model=face_model, config=SyntheticConfig(image_size=SIZE))
    assert ds.seed_start == EVAL_SEED_START
    items = ds.__getitems__([0, 2])
    assert int(items[1]["seed"]) == EVAL_SEED_START + 2
    single = ds[2]
    assert torch.allclose(single["image"], items[1]["image"], atol=1e-5)
    assert set(single["gt_params"]) == set(FaceParams.names())
    assert single["gt_params"]["light"].shape == (9, 3)
    b = collate_synthetic(items)
    assert isinstance(b["gt_params"], FaceParams) and b["gt_params"].batch_size == 2
    assert b["image"].shape == (2, SIZE, SIZE, 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_synthetic)
    (full,) = list(loader)
    assert torch.allclose(full["image"][2], single["image"], atol=1e-5)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="evaluation range"):
        SyntheticFaces(10, split="train", seed_start=EVAL_SEED_START - 5, renderer=ds.renderer)
    with pytest.raises(ValueError, match="training range"):
        SyntheticFaces(10, split="eval", seed_start=5, renderer=ds.renderer)


def test_bad_input_is_named(face_model, renderer):
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=8)
    with pytest.raises(ValueError, match="yaw_deg"):
        SyntheticConfig(yaw_deg=-1.0)
    with pytest.raises(ValueError, match="face_fraction"):
        SyntheticConfig(face_fraction=(0.8, 0.5))
    with pytest.raises(ValueError, match="seeds"):
        renderer.render([])
    with pytest.raises(ValueError, match="seeds"):
        renderer.render([-1])
    with pytest.raises(ValueError, match="float32"):
        SyntheticRenderer(face_model.to(dtype=torch.float64))


def test_fused_composite_matches_shade_image(face_model, batch):
    from fml_taichi.ops.composite import composite
    from fml_taichi.ops.rasterize import rasterize, shade_image

    p = batch["gt_params"]
    rot = euler_to_matrix(p.rotation)
    v_cam = (torch.bmm(batch["gt_vertices"], rot.transpose(1, 2)) + p.translation.unsqueeze(1)).contiguous()
    raster = rasterize(v_cam, face_model.triangles, batch["intrinsics"][0], SIZE, SIZE, cull_backfaces=True)
    colours = batch["gt_reflectance"].contiguous()
    bg = torch.rand(6, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(composite(raster, face_model.triangles, colours, bg),
                               shade_image(raster, face_model.triangles, colours, bg), atol=1e-5, rtol=0)
    # A half-resolution background is upsampled: a horizontal ramp stays a ramp at full size.
    ramp = torch.linspace(0, 1, SIZE // 2).reshape(1, 1, -1, 1).expand(6, SIZE // 2, -1, 3).contiguous()
    img = composite(raster, face_model.triangles, colours, ramp)
    row = img[0, 0, :, 0]  # the top row is background
    assert not bool(raster.mask[0, 0].any())
    assert bool((row[1:] >= row[:-1] - 1e-6).all()) and float(row[0]) < 0.01 and float(row[-1]) > 0.99


def test_blur_and_noise_statistics_and_determinism():
    from fml_taichi.ops.composite import blur_and_noise

    flat = torch.full((3, 64, 64, 3), 0.5)
    out = blur_and_noise(flat, 0.6, torch.tensor([7, 7, 8]), torch.tensor([0.02, 0.02, 0.0]))
    assert float(out[0].std()) == pytest.approx(0.02, rel=0.05)  # requested noise SD
    assert torch.equal(out[0], out[1])  # same key, same pattern
    assert float((out[2] - 0.5).abs().max()) < 1e-6  # no noise, and blurring a constant keeps it
    edge = torch.zeros(1, 8, 8, 3)
    edge[:, :, 4:] = 1.0
    soft = blur_and_noise(edge, 0.6, torch.tensor([0]), torch.tensor([0.0]))
    assert 0.0 < float(soft[0, 0, 3, 0]) < 0.5 < float(soft[0, 0, 4, 0]) < 1.0  # the edge is softened
    # Exactly a normalised 3 x 3 Gaussian with replicated borders.
    x = torch.rand(2, 16, 20, 3, generator=torch.Generator().manual_seed(1))
    side = math.exp(-1 / (2 * 0.6 ** 2))
    w = torch.tensor([side, 1.0, side]) / (1 + 2 * side)
    ker = (w[:, None] * w[None, :]).expand(3, 1, 3, 3).contiguous()
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate"),
                                     ker, groups=3).permute(0, 2, 3, 1)
    torch.testing.assert_close(blur_and_noise(x, 0.6, torch.tensor([0, 1]), torch.zeros(2)), ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="sigma"):
        blur_and_noise(x, 1.5, torch.tensor([0, 1]), torch.zeros(2))


def test_grey_probability_makes_some_images_grey_and_leaves_the_others_unchanged():
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
    from fml_taichi.model import default_face_model

    fm = default_face_model(1000)
    seeds = list(range(40))
    colour = SyntheticRenderer(fm, SyntheticConfig(image_size=48)).render(seeds)["image"]
    mixed = SyntheticRenderer(fm, SyntheticConfig(image_size=48, grey_probability=0.3)).render(seeds)["image"]
    chroma = (mixed - mixed.mean(-1, keepdim=True)).abs().amax(dim=(1, 2, 3))
    grey = chroma < 1e-6
    assert 4 <= int(grey.sum()) <= 20
    assert torch.equal(mixed[~grey], colour[~grey])
