"""The training loop on a tiny config: outputs, stage semantics, exact resume, reconstructor, errors."""
import copy
import json
import os

import numpy as np
import pytest
import torch

from fml_taichi.train import trainer as T
from fml_taichi.data.cached_dataset import write_crop
from fml_taichi.nets.checkpoint import CheckpointError, load_checkpoint
from fml_taichi.nets.config import from_dict
from fml_taichi.recon.reconstructor import Reconstructor
from fml_taichi.train.validation import LOSS_TERM_KEYS, MEAN_FACE_KEYS, METRIC_KEYS

TINY = {
    "seed": 0,
    "model": {"n_vertices": 500, "n_correctives_geometry": 8, "n_correctives_reflectance": 8},
    "encoder": {"input_size": 32, "width": 0.5, "n_features": 64},
    "data": {"n_train": 8, "n_val": 4, "image_size": 64},
    "losses": {"impl": "torch"},  # bit-reproducible reductions for the exact-resume check
    "stage1": {"steps": 3, "batch_size": 2, "optimizer": "adam", "lr": {"base": 0.001}},
    "stage2": {"steps": 3, "batch_size": 2, "optimizer": "adam",
               "lr": {"base": 0.001, "geometry": 0.005, "reflectance": 0.01}},
    "log": {"every": 1, "val_every": 3, "checkpoint_every": 2, "progress": False},
    "eval": {"n": 4},
}


def _cfg(**changes):
    d = copy.deepcopy(TINY)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            d[section][name] = value
        else:
            d[section] = value
    return from_dict(d)


def _weights(trainer):
    return {**{"enc." + k: v.clone() for k, v in trainer.model.encoder.state_dict().items()},
            **{"ml." + k: v.clone() for k, v in trainer.model.multilevel.state_dict().items()}}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("straight"))
    tr = T.Trainer(_cfg(), out, progress=False)
    fresh = _weights(tr)
    metrics = tr.run()
    return out, tr, fresh, metrics


def test_run_writes_checkpoints_logs_curves_and_metrics(straight_run):
    out, tr, _, metrics = straight_run
    for name in ("checkpoint.pt", "checkpoint_stage1.pt", "config.yaml", "train_log.csv", "val_log.json",
                 "curves_loss.png", "curves_val_photo.png", "curves_val_geometry.png", "metrics.json",
                 "run_info.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert set(saved) == set(METRIC_KEYS) | set(MEAN_FACE_KEYS) | {"heldout_alt", "loss_terms"} and saved["n"] == 4
    terms = saved.pop("loss_terms")  # E_total's terms on the held-out faces
    assert set(terms) == set(LOSS_TERM_KEYS) and all(np.isfinite(v) and v >= 0 for v in terms.values())
    assert terms["total"] > terms["sparse"] > 0
    assert all(np.isfinite(saved[k]) and saved[k] >= 0 for k in METRIC_KEYS + MEAN_FACE_KEYS)
    assert saved["geom_mm_mean_face"] > 0.1  # the landmark-placed mean face is not the truth
    assert set(saved["heldout_alt"]) >= {"geom_mm_base", "geom_mm_final", "photo_base", "photo_final"}
    alt = saved.pop("heldout_alt")
    assert alt == pytest.approx(metrics.pop("heldout_alt"))
    metrics.pop("loss_terms")
    assert saved == pytest.approx(metrics)
    assert [r["step"] for r in tr.history.train] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["stage"]) for r in tr.history.val] == [(3, 1), (6, 2)]
    assert {"total", "photo_base", "sparse", "std"} <= set(tr.history.train[0])
    assert {"photo_final", "ref", "glo", "smo", "sta"} <= set(tr.history.train[-1])
    info = json.load(open(os.path.join(out, "run_info.json")))
    assert info["timings"]["stage1_images_per_s"] > 0 and info["timings"]["stage2_images_per_s"] > 0
    assert load_checkpoint(os.path.join(out, "checkpoint.pt")).step == 6


def test_stage1_trains_the_base_level_only(straight_run):
    out, _, fresh, _ = straight_run
    ck = load_checkpoint(os.path.join(out, "checkpoint_stage1.pt"))
    assert ck.step == 3 and ck.stage == 1
    # Correctives frozen in stage 1: Theta and the corrective heads are exactly as initialised.
    for k, v in ck.multilevel.items():
        assert torch.equal(v, fresh["ml." + k]), k
    for k in ("head_geometry.weight", "head_reflectance.weight"):
        assert torch.count_nonzero(ck.encoder[k]) == 0, k
    assert not torch.equal(ck.encoder["head_base.weight"], fresh["enc.head_base.weight"])
    final = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    # Stage 2 learns the corrective bases (Theta_g, Theta_r) and heads.
    for k, v in final.multilevel.items():
        assert not torch.equal(v, fresh["ml." + k]), k
    assert torch.count_nonzero(final.encoder["head_reflectance.weight"]) > 0


@pytest.mark.parametrize("stop", [2, 5])  # interrupted in stage 1 and in stage 2
def test_resume_continues_exactly(straight_run, tmp_path, stop):
    _, straight, _, _ = straight_run
    out = str(tmp_path / "run")
    first = T.Trainer(_cfg(), out, progress=False)
    assert first.run(stop_at=stop) == {}
    first.save()  # what a crash would leave: the last checkpoint (here written at the stop)
    del first
    torch.manual_seed(1234)  # a different process state must not matter: the checkpoint restores it
    resumed = T.trainer_from_checkpoint(os.path.join(out, "checkpoint.pt"), out, progress=False)
    assert resumed.state.step == stop
    resumed.run()
    a, b = _weights(straight), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in resumed.history.train] == [1, 2, 3, 4, 5, 6]
    assert resumed.history.train[-1]["total"] == straight.history.train[-1]["total"]


def test_reconstructor_from_checkpoint(straight_run):
    out, tr, _, _ = straight_run
    rec = Reconstructor.from_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert rec.face_model.n_vertices == tr.face_model.n_vertices
    torch.testing.assert_close(rec.intrinsics, torch.tensor([160.0, 160.0, 31.5, 31.5]))
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    params, out_ = rec(images)
    assert params.shape.shape == (2, rec.face_model.m_shape)
    assert out_.final_geometry.shape == (2, rec.face_model.n_vertices, 3)
    # Same numbers as the trained model in eval mode.
    tr.model.eval()
    with torch.no_grad():
        p2, o2 = tr.model(images)
    torch.testing.assert_close(out_.final_reflectance, o2.final_reflectance)
    tr.model.train()
    assert rec(images[0])[0].batch_size == 1  # a single [H, W, 3] image works too
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        rec(images * 255)
    with pytest.raises(ValueError, match="images"):
        rec(torch.rand(2, 3, 64, 64))
    nan = images.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rec(nan)


def test_reconstructor_and_resume_report_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        Reconstructor.from_checkpoint(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="bad.pt"):
        T.trainer_from_checkpoint(str(bad), str(tmp_path))


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    real = T.stage_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out["sparse"] = out["sparse"] * float("nan")
        out["total"] = out["total"] + out["sparse"]
        return out

    monkeypatch.setattr(T, "stage_loss", poisoned)
    tr = T.Trainer(_cfg(), str(tmp_path), progress=False)
    with pytest.raises(T.TrainingDiverged, match=r"step 1 \(stage 1\).*sparse"):
        tr.run()


def test_trains_on_a_cached_crop_folder(tmp_path):
    """The folder format end to end: crops written by the writer, then two training steps."""
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
    from fml_taichi.model import default_face_model

    batch = SyntheticRenderer(default_face_model(500), SyntheticConfig(image_size=64)).render(list(range(6)))
    root = tmp_path / "crops"
    for i in range(6):
        write_crop(root, f"img{i}", batch["image"][i], batch["landmarks"][i], batch["landmark_conf"][i])
    cfg = _cfg(data={"kind": "folder", "root": str(root), "n_train": 0, "n_val": 2, "image_size": 64, "pool": False},
               stage1__steps=1, stage2__steps=1, eval={"n": 0})
    tr = T.Trainer(cfg, str(tmp_path / "run"), progress=False)
    assert tr.run() == {}  # no synthetic evaluation requested
    assert len(tr.source) == 4 and tr.state.step == 2
    val = tr.history.val[-1]
    assert np.isfinite(val["photo_final"]) and "geom_mm_final" in val and np.isnan(val["geom_mm_final"])


def test_cli_reports_config_errors(tmp_path, capsys):
    from fml_taichi.apps import train_cmd

    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1:\n  step: 3\n")
    assert train_cmd.main(["--config", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "stage1.step" in capsys.readouterr().err
    assert train_cmd.main(["--out", str(tmp_path / "none"), "--resume"]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("span", ["grey", "rgb"])
def test_reflectance_shading_span_keeps_theta_r_off_it(tmp_path, span):
    """model.reflectance_shading_span: after stage 2, Theta_r has no part in the mean face's SH shading
    span (it still trained); without the option its random start keeps such a part."""
    from fml_taichi.train.warm_start import shading_span

    parts = {}
    for free in (False, True):
        tr = T.Trainer(_cfg(model={**TINY["model"], "reflectance_shading_span": span if free else "none"},
                            eval={"n": 1, "at_end": False}), str(tmp_path / str(free)), progress=False)
        start = tr.model.multilevel.reflectance_corrective.theta.detach().clone()
        tr.run()
        theta = tr.model.multilevel.reflectance_corrective.theta.detach()
        q = shading_span(tr.face_model, span).to(theta)
        parts[free] = float((q.T @ theta).norm() / theta.norm())
        assert not torch.allclose(theta, start)
    assert parts[True] < 1e-5 < 1e-2 < parts[False]


def test_reflectance_shading_span_config_errors():
    from fml_taichi.nets.config import ConfigError
    with pytest.raises(ConfigError, match="reflectance_shading_span"):
        from_dict({"model": {"reflectance_shading_span": "yes"}})
    with pytest.raises(ConfigError, match="reflectance_shading_span"):
        from_dict({"model": {"reflectance_shading_span": "rgb", "kind": "mlp"}})
