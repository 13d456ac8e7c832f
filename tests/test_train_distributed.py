"""Data-parallel training: two CPU processes (gloo) launched by torchrun end with identical weights."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from fml_taichi.nets.checkpoint import load_checkpoint
from fml_taichi.train.distributed import DistInfo, env_info, state_digest

TINY = {
    "seed": 3,
    "threads": 1,
    "model": {"n_vertices": 500, "n_correctives_geometry": 8, "n_correctives_reflectance": 8},
    "encoder": {"input_size": 32, "width": 0.5, "n_features": 64},
    "data": {"n_train": 8, "n_val": 2, "image_size": 64},
    "stage1": {"steps": 2, "batch_size": 2, "optimizer": "adam", "lr": {"base": 0.001}},
    "stage2": {"steps": 2, "batch_size": 2, "optimizer": "adam",
               "lr": {"base": 0.001, "geometry": 0.005, "reflectance": 0.01}},
    "log": {"every": 1, "val_every": 4, "checkpoint_every": 4, "progress": False},
    "eval": {"n": 2},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_env_info_reads_torchrun_variables(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_info() == DistInfo(0, 1, 0) and not env_info().enabled
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert info.enabled and info.rank == 1 and not info.is_main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        env_info()


def test_state_digest_sees_every_bit():
    m = torch.nn.Linear(3, 2)
    d = state_digest(m)
    assert d == state_digest(m)
    with torch.no_grad():
        m.weight[0, 0] = torch.nextafter(m.weight[0, 0], torch.tensor(1e9))
    assert d != state_digest(m)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", FML_TAICHI_ARCH="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={_free_port()}", os.path.join(root, "examples", "train_fml.py"),
           "--config", str(cfg), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 4
    digests = info["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # The checkpoint written by rank 0 holds those weights, and training changed them.
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck.step == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2
    # Each rank consumed its own slice: the global cursor advanced by world * batch per step.
    assert ck.extra["cursor"] == 4 * 2 * 2
