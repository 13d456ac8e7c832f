"""Synthetic 3D supervision of the geometry: E_teacher (value, gradient), the PCA start of Theta_g,
the config keys, and a tiny training run with both (and the paper config still training)."""
import copy

import numpy as np
import pytest
import torch

from fml_taichi.losses.metrics import umeyama
from fml_taichi.losses.teacher import geometry_teacher_term, similarity_to
from fml_taichi.nets.config import ConfigError, from_dict
from fml_taichi.train import trainer as T
from fml_taichi.train.warm_start import true_geometry_residuals


def _random_rotation(g):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def _meshes(b=2, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 30
    pred = truth + torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 2
    region = torch.rand(n, generator=g) < 0.7
    return pred, truth, region, g


def test_teacher_value_matches_the_evaluation_alignment():
    """Prediction aligned onto the truth by the evaluation's Umeyama (numpy), then mean squared mm."""
    pred, truth, region, _ = _meshes()
    got = geometry_teacher_term(pred, truth, region)
    r = region.numpy()
    for i in range(pred.shape[0]):
        sim = umeyama(pred[i].numpy()[r], truth[i].numpy()[r])
        want = np.mean(np.sum((sim.apply(pred[i].numpy()[r]) - truth[i].numpy()[r]) ** 2, axis=1))
        assert float(got[i]) == pytest.approx(want, rel=1e-9)
    assert float(got.min()) > 1.0  # 2 mm noise per axis: not aligned away


def test_teacher_is_zero_for_a_similar_copy_and_ignores_the_rest():
    pred, truth, region, g = _meshes()
    rot = _random_rotation(g)
    moved = 1.3 * truth @ rot.T + torch.tensor([5.0, -2.0, 40.0], dtype=torch.float64)
    moved[:, ~region] += 100.0  # outside the region: not scored
    assert float(geometry_teacher_term(moved, truth, region).abs().max()) < 1e-16 * 1e6
    s, r, t = similarity_to(moved[:, region], truth[:, region])
    assert torch.allclose(s, torch.full_like(s, 1 / 1.3))


def test_teacher_gradient_matches_finite_differences_of_the_realigned_distance():
    """The alignment is detached; at the optimal transform that is the exact gradient (envelope theorem)."""
    pred, truth, region, _ = _meshes(b=1, n=12, seed=3)
    x = pred.clone().requires_grad_(True)
    geometry_teacher_term(x, truth, region).sum().backward()
    eps, fd = 1e-6, torch.zeros_like(pred)
    for idx in np.ndindex(*pred.shape):
        hi, lo = pred.clone(), pred.clone()
        hi[idx] += eps
        lo[idx] -= eps
        fd[idx] = (geometry_teacher_term(hi, truth, region) - geometry_teacher_term(lo, truth, region)).sum() / (2 * eps)
    assert torch.allclose(x.grad, fd, atol=1e-6, rtol=1e-5)
    assert float(x.grad[:, ~region].abs().max()) == 0.0


def test_teacher_rejects_bad_shapes():
    pred, truth, region, _ = _meshes()
    with pytest.raises(ValueError, match="truth"):
        geometry_teacher_term(pred, truth[:, :-1], region)
    with pytest.raises(ValueError, match="region"):
        geometry_teacher_term(pred, truth, region[:-1])


def test_true_residuals_bring_the_prediction_to_the_aligned_truth():
    pred, truth, region, g = _meshes()
    rot = _random_rotation(g)
    truth_moved = 0.9 * truth @ rot.T + 7.0
    r = true_geometry_residuals(pred, truth_moved, region)
    assert float(r[:, ~region].abs().max()) == 0.0
    # pred + r is the truth in pred's frame: its teacher distance to the moved truth vanishes.
    assert float(geometry_teacher_term(pred + r, truth_moved, region).max()) < 1e-12


# ---- config and training ----------------------------------------------------------------------------

TINY = {
    "seed": 0,
    "model": {"n_vertices": 500, "n_correctives_geometry": 8, "n_correctives_reflectance": 8, "geometry_smooth": 20},
    "encoder": {"input_size": 32, "width": 0.5, "n_features": 64},
    "data": {"n_train": 12, "n_val": 2, "image_size": 64, "synthetic": {"fields": "rbf"}},
    "losses": {"impl": "torch", "geometry_teacher": 1.0},
    "stage1": {"steps": 2, "batch_size": 2, "optimizer": "adam", "lr": {"base": 0.001}},
    "stage2": {"steps": 3, "batch_size": 2, "optimizer": "adam", "geometry_warm_start": 12,
               "lr": {"base": 0.001, "geometry": 0.001, "reflectance": 0.001}},
    "log": {"every": 1, "val_every": 10, "checkpoint_every": 10, "progress": False},
    "eval": {"n": 2, "at_end": False},
}


def test_config_keys_parse_and_default_to_the_paper():
    cfg = from_dict(TINY)
    assert cfg.losses.geometry_teacher == 1.0 and cfg.stage2.geometry_warm_start == 12
    assert from_dict(cfg.to_dict()) == cfg
    plain = from_dict({})
    assert plain.losses.geometry_teacher == 0.0 and plain.stage2.geometry_warm_start == 0


@pytest.mark.parametrize("change, match", [
    ({"losses": {"geometry_teacher": -1.0}}, r"losses\.geometry_teacher: must be >= 0"),
    ({"losses": {"geometry_teacher": 1.0}, "data": {"kind": "folder", "root": "x"}}, r"losses\.geometry_teacher.*synthetic"),
    ({"losses": {"geometry_teacher": 1.0}, "data": {"pool": False}}, r"losses\.geometry_teacher.*pool"),
    ({"stage2": {"geometry_warm_start": 4}, "model": {"kind": "mlp"}}, r"geometry_warm_start.*linear"),
    ({"stage1": {"geometry_warm_start": 4}}, r"stage1\.geometry_warm_start"),
])
def test_config_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(change)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tr = T.Trainer(from_dict(copy.deepcopy(TINY)), str(tmp_path_factory.mktemp("teacher")), progress=False)
    tr.run(stop_at=TINY["stage1"]["steps"])
    warm = {}
    original = tr._warm_start_geometry

    def spy(n):
        original(n)
        corr = tr.model.multilevel.geometry_corrective
        warm.update(weight=corr.weight.detach().clone(), head=tr.model.encoder.head_geometry.weight.detach().clone(),
                    report=dict(tr.timings))
    tr._warm_start_geometry = spy
    tr.run()
    return tr, warm


def test_pool_keeps_the_truth_only_when_asked(teacher_run):
    tr, _ = teacher_run
    b = tr.source.batch(torch.arange(2))
    assert b["gt_vertices"].shape == (2, tr.face_model.n_vertices, 3)
    plain = T.Trainer(from_dict({**copy.deepcopy(TINY), "losses": {"impl": "torch"},
                                 "stage2": {**TINY["stage2"], "geometry_warm_start": 0}}), "unused", progress=False)
    assert not plain.uses_truth and plain.region is None


def test_geometry_warm_start_is_the_pca_of_the_true_residuals(teacher_run):
    tr, warm = teacher_run
    k, c = TINY["model"]["geometry_smooth"], TINY["model"]["n_correctives_geometry"]
    w = warm["weight"]
    assert w.shape == (k, 3, c)
    # The columns are principal directions: mutually orthogonal, decreasing in size.
    cols = w.reshape(3 * k, c)
    gram = cols.T @ cols
    off = gram - torch.diag(torch.diag(gram))
    assert float(off.abs().max()) < 1e-4 * float(gram.diagonal().max())
    norms = gram.diagonal()
    assert bool((norms[:-1] >= norms[1:] - 1e-6).all()) and float(norms[0]) > 0.01
    assert float(warm["head"].abs().sum()) > 0  # the head starts at the ridge map, no longer 0
    assert 0.0 < warm["report"]["geometry_warm_start_explained"] <= 1.0 + 1e-6


def test_stage2_logs_the_teacher_and_moves_theta_g(teacher_run):
    tr, warm = teacher_run
    rows = [r for r in tr.history.train if r["stage"] == 2]
    assert rows and all(np.isfinite(r["teacher"]) and r["teacher"] > 0 for r in rows)
    assert all("teacher" not in r for r in tr.history.train if r["stage"] == 1)
    assert not torch.allclose(tr.model.multilevel.geometry_corrective.weight.detach(), warm["weight"])


def _shrunk(name, tmp_path):
    """A shipped config with only its sizes shrunk (the same options, a few steps)."""
    import dataclasses
    import os

    from fml_taichi.nets.config import load_config

    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", name))
    s2 = dataclasses.replace(cfg.stage2, steps=2, batch_size=2, warm_start=min(cfg.stage2.warm_start, 6),
                             geometry_warm_start=min(cfg.stage2.geometry_warm_start, 6))
    return dataclasses.replace(
        cfg, threads=1, model=dataclasses.replace(cfg.model, n_vertices=500, geometry_smooth=min(cfg.model.geometry_smooth, 20)),
        encoder=dataclasses.replace(cfg.encoder, input_size=32, width=0.5, n_features=64),
        data=dataclasses.replace(cfg.data, n_train=6, n_val=2, image_size=64),
        stage1=dataclasses.replace(cfg.stage1, steps=2, batch_size=2, warmup_steps=0), stage2=s2,
        log=dataclasses.replace(cfg.log, every=1, val_every=4, checkpoint_every=4, progress=False),
        eval=dataclasses.replace(cfg.eval, n=2, at_end=False))


@pytest.mark.parametrize("name, teacher", [("paper_cpu.yaml", False), ("geometry_teacher.yaml", True)])
def test_shipped_configs_train_with_and_without_the_teacher(tmp_path, name, teacher):
    """The paper's path keeps no ground truth and has no teacher term; the teacher config uses both."""
    cfg = _shrunk(name, tmp_path)
    assert (cfg.losses.geometry_teacher > 0) == teacher and (cfg.stage2.geometry_warm_start > 0) == teacher
    tr = T.Trainer(cfg, str(tmp_path / "run"), progress=False)
    tr.run()
    assert tr.uses_truth == teacher
    assert ("gt_vertices" in tr.source.batch(torch.arange(2))) == teacher
    stage2 = [r for r in tr.history.train if r["stage"] == 2]
    assert len(stage2) == 2 and all(np.isfinite(r["total"]) for r in stage2)
    assert all(("teacher" in r) == teacher for r in stage2)
