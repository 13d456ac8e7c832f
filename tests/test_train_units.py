"""Training building blocks without a training run: config, checkpoint file, crop folder, batches."""
import json
import math
import os

import numpy as np
import pytest
import torch

from fml_taichi.nets import config as C
from fml_taichi.train.batches import DatasetSource, ImagePool, SampleOrder
from fml_taichi.data.cached_dataset import CachedCropDataset, write_crop
from fml_taichi.nets.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

# ----------------------------------------------------------------------------------------------
# config


def test_config_defaults_follow_the_paper_and_validate():
    cfg = C.from_dict({})
    assert cfg.stage2.lr == {"base": 0.001, "geometry": 0.005, "reflectance": 0.01}
    assert cfg.stage1.batch_size == 5 and cfg.stage1.optimizer == "adadelta"
    assert cfg.model.n_correctives_geometry == 500
    assert C.from_dict(cfg.to_dict()) == cfg  # a checkpoint's dict rebuilds the same config


@pytest.mark.parametrize("data, match", [
    ({"stage1": {"stepz": 3}}, r"stage1\.stepz.*did you mean 'steps'"),
    ({"bogus": 1}, r"unknown config key 'bogus'"),
    ({"stage2": {"lr": {"geometry": "fast"}}}, r"stage2\.lr\.geometry"),
    ({"stage2": {"lr": {"texture": 0.1}}}, r"unknown part 'texture'"),
    ({"stage1": {"lr": {"base": 0.1, "geometry": 0.1}}}, r"stage1\.lr: stage 1 trains the base level only"),
    ({"stage1": {"batch_size": 0}}, r"stage1\.batch_size: must be > 0"),
    ({"stage1": {"steps": 2.5}}, r"stage1\.steps: expected int"),
    ({"stage2": {"optimizer": "lbfgs"}}, r"stage2\.optimizer"),
    ({"model": {"kind": "cubic"}}, r"model\.kind"),
    ({"data": {"kind": "folder"}}, r"data\.root"),
    ({"model": "big"}, r"model: expected a mapping"),
    ({"log": {"progress": 1}}, r"log\.progress: expected bool"),
])
def test_config_errors_name_the_key(data, match):
    with pytest.raises(C.ConfigError, match=match):
        C.from_dict(data)


def test_load_config_reports_file_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        C.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("stage2:\n  batchsize: 4\n")
    with pytest.raises(C.ConfigError, match=r"typo\.yaml.*stage2\.batchsize.*batch_size"):
        C.load_config(typo)


def test_shipped_configs_load():
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    for name in ("default.yaml", "paper_cpu.yaml", "gpu_long.yaml", "images_folder.yaml"):
        cfg = C.load_config(os.path.join(root, name))
        assert cfg.total_steps > 0, name
        assert cfg.losses.weights is None or os.path.isfile(cfg.losses.weights), name


def test_gpu_long_config_trains_a_few_steps_on_the_cpu(tmp_path):
    """configs/gpu_long.yaml with only its sizes shrunk: AdaDelta, C = 500, flatten pooling, on-the-fly
    data and its learning rates all run (a config nobody runs on a CPU would otherwise rot)."""
    import dataclasses

    from fml_taichi.train.trainer import Trainer

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    cfg = C.load_config(os.path.join(root, "gpu_long.yaml"))
    assert cfg.stage1.optimizer == cfg.stage2.optimizer == "adadelta"
    assert cfg.model.n_correctives_geometry == cfg.model.n_correctives_reflectance == 500
    assert cfg.encoder.pool == "flatten" and cfg.data.pool is False
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, n_vertices=500),
        encoder=dataclasses.replace(cfg.encoder, input_size=64, n_features=64),
        data=dataclasses.replace(cfg.data, n_val=2, image_size=64),
        stage1=dataclasses.replace(cfg.stage1, steps=2, batch_size=2),
        stage2=dataclasses.replace(cfg.stage2, steps=2, batch_size=2),
        log=dataclasses.replace(cfg.log, every=1, val_every=2, checkpoint_every=2, progress=False),
        eval=dataclasses.replace(cfg.eval, n=2))
    tr = Trainer(cfg, str(tmp_path / "run"), progress=False)
    metrics = tr.run()
    assert [r["step"] for r in tr.history.train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["total"]) for r in tr.history.train)
    assert math.isfinite(metrics["geom_mm_final"])
    assert tr.model.multilevel.n_correctives_geometry == 500


# ----------------------------------------------------------------------------------------------
# checkpoint


def _ckpt(step=7):
    return Checkpoint(config={"seed": 1}, face_model_spec={"source": "default", "n_vertices": 500},
                      encoder={"w": torch.arange(4.0)}, multilevel={"theta": torch.ones(2, 3)}, step=step, stage=2,
                      optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                      rng={"torch": torch.get_rng_state()}, extra={"history": [{"step": 1, "loss": 0.5}]})


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(path, _ckpt())
    ck = load_checkpoint(path)
    assert ck.step == 7 and ck.stage == 2 and ck.version == 1
    assert torch.equal(ck.encoder["w"], torch.arange(4.0))
    assert ck.face_model_spec == {"source": "default", "n_vertices": 500}
    assert ck.extra["history"][0]["loss"] == 0.5
    assert torch.equal(ck.rng["torch"], torch.get_rng_state())
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, _ckpt())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a fml_taichi training checkpoint"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    payload = _ckpt().to_payload()
    payload["version"] = 99
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)
    del payload["encoder"]
    payload["version"] = 1
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="misses field.*encoder"):
        load_checkpoint(future)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _ckpt(step=1))
    bad = _ckpt(step=2)
    bad.extra = {"unpicklable": lambda x: x}  # torch.save raises mid-write
    with pytest.raises(Exception):
        save_checkpoint(path, bad)
    assert load_checkpoint(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


# ----------------------------------------------------------------------------------------------
# cached crop folder


def _write_folder(root, n=3, size=32):
    g = np.random.default_rng(0)
    for i in range(n):
        img = g.random((size, size, 3)).astype(np.float32)
        lm = g.random((68, 2)).astype(np.float32) * (size - 1)
        conf = np.linspace(0, 1, 68, dtype=np.float32) if i == 1 else None
        write_crop(root, f"face{i:02d}", img, lm, conf)
    return g


def test_cached_crop_dataset_round_trip(tmp_path):
    root = tmp_path / "crops"
    _write_folder(root)
    ds = CachedCropDataset(root, image_size=32)
    assert len(ds) == 3 and ds.names == ["face00", "face01", "face02"]
    item = ds[1]
    assert item["image"].shape == (32, 32, 3) and item["image"].dtype == torch.float32
    assert item["landmarks"].shape == (68, 2)
    torch.testing.assert_close(item["landmark_conf"], torch.linspace(0, 1, 68))
    assert torch.equal(ds[0]["landmark_conf"], torch.ones(68))
    assert np.load(root / "face02.landmarks.npy").shape == (68, 2)
    # A .pts file works instead of the .npy (1-based on disk, 0-based in memory).
    from fml_taichi.io.pts import write_pts
    lm = np.load(root / "face00.landmarks.npy")
    os.remove(root / "face00.landmarks.npy")
    write_pts(root / "face00.pts", lm)
    torch.testing.assert_close(CachedCropDataset(root)[0]["landmarks"], torch.from_numpy(lm), atol=1e-3, rtol=0)
    sub = CachedCropDataset(root, indices=[2])
    assert len(sub) == 1 and sub[0]["name"] == "face02"


def test_cached_crop_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CachedCropDataset(tmp_path / "nothing")
    root = tmp_path / "crops"
    _write_folder(root)
    with pytest.raises(ValueError, match="32px crops but the config expects 240px"):
        CachedCropDataset(root, image_size=240)
    os.remove(root / "face01.landmarks.npy")
    with pytest.raises(FileNotFoundError, match="face01.*no landmarks"):
        CachedCropDataset(root)
    np.save(root / "face01.landmarks.npy", np.full((68, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="face01.*NaN"):
        CachedCropDataset(root)
    np.save(root / "face01.landmarks.npy", np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"face01.*\(68, 2\)"):
        CachedCropDataset(root)
    np.save(root / "face01.landmarks.npy", np.zeros((68, 2), np.float32))
    (root / "face02.png").write_bytes(b"broken")
    ds = CachedCropDataset(root)
    with pytest.raises(ValueError, match="face02.png"):
        ds[2]
    (root / "crops.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a crop-folder manifest"):
        CachedCropDataset(root)
    os.remove(root / "crops.json")
    with pytest.raises(FileNotFoundError, match="crops.json"):
        CachedCropDataset(root)


# ----------------------------------------------------------------------------------------------
# batches


def test_sample_order_is_a_seeded_function_of_position():
    order = SampleOrder(10, seed=3)
    first_epoch = order.positions(0, 10)
    assert sorted(first_epoch.tolist()) == list(range(10))  # each item once per epoch
    assert not torch.equal(first_epoch, order.positions(10, 10))  # epochs reshuffle
    # Reading positions in any order, from a fresh object, gives the same answer (resume).
    assert torch.equal(SampleOrder(10, seed=3).positions(7, 6), torch.cat([first_epoch[7:], order.positions(10, 3)]))
    assert not torch.equal(SampleOrder(10, seed=4).positions(0, 10), first_epoch)
    # Ranks take disjoint slices of a global batch.
    r0, r1 = order.batch_indices(4, 3, rank=0, world=2), order.batch_indices(4, 3, rank=1, world=2)
    assert torch.equal(torch.cat([r0, r1]), order.positions(4, 6))


class _ToyDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(8, 8, 3, generator=g), "landmarks": torch.full((68, 2), float(i)),
                "landmark_conf": torch.ones(68), "gt_vertices": torch.zeros(5, 3)}


def test_image_pool_matches_the_dataset_within_uint8_rounding():
    ds = _ToyDataset()
    pool = ImagePool.from_dataset(ds, progress=False)
    direct = DatasetSource(ds)
    idx = torch.tensor([3, 1])
    a, b = pool.batch(idx), direct.batch(idx)
    assert set(a) == {"image", "landmarks", "landmark_conf"}  # ground truth never enters a batch
    assert a["image"].shape == (2, 8, 8, 3) and a["image"].is_contiguous()
    assert (a["image"] - b["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(a["landmarks"], b["landmarks"]) and a["landmarks"][0, 0, 0] == 3.0


def test_pool_rejects_bad_items():
    class Bad(_ToyDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["landmarks"][0, 0] = float("nan")
            return item
    with pytest.raises(ValueError, match="item 0: landmarks contains NaN"):
        ImagePool.from_dataset(Bad(), progress=False)
