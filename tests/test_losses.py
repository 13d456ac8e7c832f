"""E_total and its terms on the default face model: zeros where the paper's terms must vanish, descent
under a few gradient steps, Taichi vs torch backends, configuration and input errors."""
import math

import pytest
import torch

from fml_taichi.losses import (LossWeights, compute_reflectance_weights, default_weights, draw_partners,
                               landmark_vertices, total_loss)
from fml_taichi.losses import terms
from fml_taichi.losses.config import DEFAULT_CONFIG
from loss_fixtures import frontal_light, render_target
from fml_taichi.model import FaceParams, MultiLevelModel, default_face_model

SIZE = 64


@pytest.fixture(scope="module")
def setup():
    fm = default_face_model(n_vertices=3000)
    model = MultiLevelModel(fm, 8, 8, seed=3)
    g = torch.Generator().manual_seed(5)
    p = model.zero_params(2)
    p.shape[:] = torch.randn(2, fm.m_shape, generator=g) * 0.5
    p.reflectance[:] = torch.randn(2, fm.m_reflectance, generator=g) * 0.5
    p.rotation[:] = torch.tensor([[0.05, -0.2, 0.02], [-0.04, 0.15, 0.0]])
    p.translation[:] = torch.tensor([[3.0, -2.0, 510.0], [-4.0, 1.0, 490.0]])
    p.light[:] = frontal_light(2, 0.6, 0.3)
    target = render_target(model, p, SIZE)
    return fm, model, p, target


def _with_grad(p: FaceParams, names=FaceParams.names()) -> FaceParams:
    return FaceParams(**{k: v.detach().clone().requires_grad_(k in names) for k, v in p.as_dict().items()})


def _loss(model, fm, p, target, impl="taichi", weights=None, **kw):
    return total_loss(model(p), p, fm, target.image, target.landmarks, target.landmark_conf, target.intrinsics,
                      weights or default_weights(), impl=impl, **kw)


def test_weights_file_matches_dataclass_defaults_and_rejects_bad_files(tmp_path):
    assert LossWeights.from_yaml(DEFAULT_CONFIG) == LossWeights() == default_weights()
    good = tmp_path / "w.yaml"
    good.write_text("losses:\n  w_photo: 3.5\n  sliding_contour: false\n")
    w = LossWeights.from_yaml(good)
    assert w.w_photo == 3.5 and w.sliding_contour is False and w.w_glo == LossWeights().w_glo
    bad = {"typo.yaml": ("w_phot: 1.0\n", "w_phot"), "neg.yaml": ("w_reg: -1\n", "w_reg"),
           "p.yaml": ("ref_p: 3\n", "ref_p"), "str.yaml": ("w_glo: lots\n", "w_glo"),
           "list.yaml": ("- 1\n- 2\n", "mapping"), "broken.yaml": ("w_photo: [1,\n", "YAML")}
    for name, (text, match) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=match):
            LossWeights.from_yaml(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        LossWeights.from_yaml(tmp_path / "missing.yaml")


def test_partners_are_fixed_by_seed_and_stay_in_the_mask():
    mask = torch.zeros(50, dtype=torch.bool)
    mask[torch.tensor([3, 7, 8, 20, 41])] = True
    src, dst = draw_partners(mask, 6, seed=1)
    assert src.dtype == dst.dtype == torch.int32 and src.shape == (30,)
    assert mask[src.long()].all() and mask[dst.long()].all()
    assert torch.equal(torch.bincount(src.long(), minlength=50)[mask], torch.full((5,), 6))
    assert torch.equal(dst, draw_partners(mask, 6, seed=1)[1])
    assert not torch.equal(dst, draw_partners(mask, 6, seed=2)[1])
    with pytest.raises(ValueError, match="mask"):
        draw_partners(torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="count"):
        draw_partners(mask, 0)


def test_terms_vanish_where_they_must(setup):
    fm, model, p, target = setup
    out = {k: v.detach() for k, v in _loss(model, fm, p, target).items()}
    # Zero correctives (delta = 0, linear F): no smoothness or stabilisation cost.
    assert float(out["smo"]) == 0 and float(out["sta"]) == 0
    # Landmarks are exact projections of the landmark vertices (jaw ones sliding): E_sparse = 0.
    assert float(out["sparse"]) < 1e-6
    # Every other term is active here, so the zeros above are not vacuous.
    for k in ("photo", "std", "ref", "glo"):
        assert float(out[k]) > 0, k
    # Constant reflectance over the skin (anything elsewhere): E_glo = 0; constant everywhere: E_ref = 0.
    ctx_rows = torch.repeat_interleave(torch.arange(fm.n_vertices), (fm.neighbour_offsets[1:] - fm.neighbour_offsets[:-1]).long())
    src, dst = draw_partners(fm.skin_mask, 6, 0)
    refl = torch.rand(2, fm.n_vertices, 3)
    refl[:, fm.skin_mask] = torch.tensor([0.7, 0.5, 0.4])
    for be in terms.IMPLS:
        assert float(terms.glo_term(refl, src, dst, int(fm.skin_mask.sum()), 10.0, be).abs().max()) == 0
        const = torch.full((2, fm.n_vertices, 3), 0.6)
        w = torch.rand(2, fm.neighbour_indices.shape[0])
        assert float(terms.ref_term(const, ctx_rows.to(torch.int32), fm, w, 5.0, 0.9, 1e-3, be).abs().max()) == 0
    # Non-zero correctives switch E_smo and E_sta on.
    p2 = p.replace(delta_geometry=torch.randn(2, 8))
    out2 = _loss(model, fm, p2, target)
    assert float(out2["smo"]) > 0 and float(out2["sta"]) > 0


def test_total_is_the_weighted_sum_and_backends_agree(setup):
    fm, model, p, target = setup
    g = torch.Generator().manual_seed(9)
    start = p.replace(rotation=p.rotation + 0.03, translation=p.translation + torch.tensor([4.0, -3.0, 10.0]),
                      delta_geometry=torch.randn(2, 8, generator=g), delta_reflectance=torch.randn(2, 8, generator=g))
    w = default_weights()
    res = {}
    for be in terms.IMPLS:
        q = _with_grad(start)
        out = _loss(model, fm, q, target, impl=be)
        out["total"].backward()
        res[be] = (out, {k: v.grad for k, v in q.as_dict().items()})
    out = res["taichi"][0]
    assert torch.allclose(out["data"], out["sparse"] + w.w_photo * out["photo"])
    reg = out["std"] + out["smo"] + out["ref"] + out["glo"] + out["sta"]
    assert torch.allclose(out["total"], out["data"] + w.w_reg * reg)
    assert torch.allclose(out["photo"], out["photo_base"] + out["photo_final"])
    for k in out:
        a, b = float(res["taichi"][0][k]), float(res["torch"][0][k])
        assert math.isclose(a, b, rel_tol=2e-4, abs_tol=1e-6), (k, a, b)
    for k, ga in res["taichi"][1].items():
        gb = res["torch"][1][k]
        assert torch.allclose(ga, gb, rtol=2e-3, atol=2e-3 * float(gb.abs().max()) + 1e-7), k
        assert float(ga.abs().max()) > 0, k  # every parameter is reached by some term


@pytest.mark.parametrize("term,names,lr", [
    ("sparse", ["rotation", "translation", "shape"], 0.02), ("photo", ["rotation", "translation", "light"], 0.02),
    ("std", ["shape", "expression", "reflectance"], 0.02), ("smo", ["delta_geometry"], 0.3),
    ("sta", ["delta_geometry"], 0.3), ("ref", ["delta_reflectance"], 2.0),
    ("glo", ["reflectance", "delta_reflectance"], 0.3),
])
def test_each_term_falls_under_a_few_gradient_steps(setup, term, names, lr):
    fm, model, p, target = setup
    g = torch.Generator().manual_seed(11)
    start = p.replace(rotation=p.rotation + 0.04, translation=p.translation + torch.tensor([5.0, 4.0, 15.0]),
                      shape=p.shape + 0.5 * torch.randn(p.shape.shape, generator=g),
                      delta_geometry=torch.randn(2, 8, generator=g) * 3,
                      delta_reflectance=torch.randn(2, 8, generator=g) * 30)
    q = _with_grad(start, names)
    opt = torch.optim.Adam([getattr(q, n) for n in names], lr=lr)
    values = []
    for _ in range(6):
        value = _loss(model, fm, q, target)[term]
        values.append(float(value))
        opt.zero_grad()
        value.backward()
        opt.step()
    assert values[0] > 0 and values[-1] < 0.9 * values[0], values


def test_sliding_contour_landmarks_follow_the_silhouette(setup):
    fm, model, p, target = setup
    out = model(p)
    fixed = fm.landmarks.expand(2, -1)
    idx = landmark_vertices(out.base_geometry, p, fm, target.landmarks, target.intrinsics)
    # Exact projections of the fixed vertices pick those vertices again (their rays pass through them).
    assert torch.equal(idx, fixed)
    # Aim jaw landmark 3 at another candidate's projection: it slides there; fixed landmarks stay.
    lo, hi = int(fm.contour_offsets[3]), int(fm.contour_offsets[4])
    other = int(fm.contour_indices[hi - 1]) if int(fm.contour_indices[hi - 1]) != int(fm.landmarks[3]) \
        else int(fm.contour_indices[lo])
    res = terms.ops("taichi").image_formation(out.base_geometry.detach(), out.base_reflectance.detach(), fm.triangles,
                                              p.rotation, p.translation, target.intrinsics, p.light, target.image)
    moved = target.landmarks.clone()
    moved[:, 3] = res.uv[:, other]
    for be in terms.IMPLS:
        idx2 = landmark_vertices(out.base_geometry, p, fm, moved, target.intrinsics, impl=be)
        assert (idx2[:, 3] == other).all() and torch.equal(idx2[:, 17:], fixed[:, 17:])
        pinned = landmark_vertices(out.base_geometry, p, fm, moved, target.intrinsics, sliding=False, impl=be)
        assert torch.equal(pinned, fixed)


def test_reflectance_weights_are_constant_chromaticity_similarities(setup):
    fm, model, p, target = setup
    res = terms.ops("taichi").image_formation(model(p).final_geometry.detach(), model(p).final_reflectance.detach(),
                                              fm.triangles, p.rotation, p.translation, target.intrinsics, p.light,
                                              target.image)
    uv = res.uv.detach().requires_grad_()
    w = compute_reflectance_weights(target.image, uv, fm.neighbour_offsets, fm.neighbour_indices)
    w_ref = compute_reflectance_weights(target.image, uv, fm.neighbour_offsets, fm.neighbour_indices, impl="torch")
    assert w.shape == (2, fm.neighbour_indices.shape[0]) and not w.requires_grad
    assert torch.allclose(w, w_ref, atol=1e-5)
    assert float(w.min()) > 0 and float(w.max()) <= 1 and float(w.median()) > 0.5  # mostly smooth skin


def test_total_loss_rejects_bad_inputs(setup):
    fm, model, p, target = setup
    out = model(p)
    args = dict(image=target.image, landmarks=target.landmarks, landmark_conf=target.landmark_conf)

    def call(**changes):
        a = {**args, **changes}
        impl = a.pop("impl", "taichi")
        ref = a.pop("ref_weights", None)
        return total_loss(out, p, fm, a["image"], a["landmarks"], a["landmark_conf"], target.intrinsics,
                          default_weights(), ref_weights=ref, impl=impl)

    cases = [
        (dict(landmarks=target.landmarks[:, :60]), "landmarks"),
        (dict(landmark_conf=target.landmark_conf * 2), "landmark_conf"),
        (dict(image=target.image[..., :2].contiguous()), "image"),
        (dict(image=target.image * float("nan")), "image"),
        (dict(impl="cuda"), "impl"),
        (dict(ref_weights=torch.ones(2, 5)), "ref_weights"),
    ]
    for changes, name in cases:
        with pytest.raises(ValueError, match=name):
            call(**changes)
