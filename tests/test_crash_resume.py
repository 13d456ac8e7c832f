"""Crash safety of training: SIGKILL at random moments and inside every kind of write, then --resume.

After every kill the run folder either holds none of the trainer's files or a loadable
``checkpoint.pt``; after the last resume the weights, the stage-1 checkpoint and the metrics equal
those of an uninterrupted run, bit for bit, and no temp file is left. The suite runs one chain of
kills (inside each kind of write, and at random moments); ``FML_CRASH_KILLS=N`` runs N more random
kills by hand (docs/reliability.md lists the counts run).
"""
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from fml_taichi.nets.checkpoint import load_checkpoint
from fml_taichi.train.run_folder import CHECKPOINT, RUN_FILES, STAGE1_CHECKPOINT
from test_train_loop import TINY

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_child.py")
EXTRA_KILLS = int(os.environ.get("FML_CRASH_KILLS", "3"))  # CI: 3 random kills; by hand: FML_CRASH_KILLS=100
WRITES = ["checkpoint.pt", "checkpoint_stage1.pt", "config.yaml", "train_log.csv", "train_log.json", "val_log.csv",
          "val_log.json", "curves_loss.png", "curves_val_photo.png", "metrics.json", "run_info.json"]


class Trainer:
    """Client of crash_child.py's fork server: each call is one ``fml-taichi train`` process."""

    def __init__(self, log):
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TI_SKIP_VERSION_CHECK="ON")
        self.proc = subprocess.Popen([sys.executable, SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True)
        self.log = str(log)

    def start(self, argv, **env) -> int:
        self.proc.stdin.write(json.dumps({"argv": [*argv, "--no-progress"], "env": env, "log": self.log}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        return json.loads(self.proc.stdout.readline())["code"]

    def run(self, argv, **env) -> int:
        self.start(argv, **env)
        return self.wait()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    cfg = copy.deepcopy(TINY)
    cfg["threads"] = 1
    cfg["log"]["checkpoint_every"] = 1  # a checkpoint write at every step: many writes to be killed in
    cfg["eval"] = {"n": 2}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trainer = Trainer(root / "train.log")
    ref = str(root / "reference")
    assert trainer.run(["--config", str(path), "--out", ref]) == 0, (root / "train.log").read_text()[-3000:]
    yield trainer, root, str(path), ref
    trainer.close()


def _weights(path):
    ck = load_checkpoint(path)
    return ck.step, {**{"enc." + k: v for k, v in ck.encoder.items()}, **{"ml." + k: v for k, v in ck.multilevel.items()}}


def _check_folder(out):
    """The promise after a kill: none of the trainer's files, or a loadable checkpoint.pt."""
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))] if os.path.isdir(out) else []
    if present:
        assert CHECKPOINT in present, present
        load_checkpoint(os.path.join(out, CHECKPOINT))  # raises if unreadable


def _argv(out, cfg):
    """Resume when the folder holds a run, else start it (what a user does after a crash)."""
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        return ["--out", out, "--resume"]
    return ["--config", cfg, "--out", out]


def _same_as_reference(out, ref):
    step_a, a = _weights(os.path.join(ref, CHECKPOINT))
    step_b, b = _weights(os.path.join(out, CHECKPOINT))
    assert step_a == step_b and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    _, s1a = _weights(os.path.join(ref, STAGE1_CHECKPOINT))
    _, s1b = _weights(os.path.join(out, STAGE1_CHECKPOINT))
    assert all(torch.equal(s1a[k], s1b[k]) for k in s1a)
    assert json.load(open(os.path.join(out, "metrics.json"))) == json.load(open(os.path.join(ref, "metrics.json")))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def _kill_chain(trainer, out, cfg, plan, rng) -> int:
    """Run ``plan`` (items ("write", "NAME:K", how) or ("random", max_s)), then resume to the end.
    Returns how many of the planned kills hit (a random one may come after the run finished)."""
    killed = 0
    for item in plan:
        if item[0] == "write":
            code = trainer.run(_argv(out, cfg), FML_KILL_AT_WRITE=item[1], FML_KILL_HOW=item[2])
        else:
            pid = trainer.start(_argv(out, cfg))
            time.sleep(rng.uniform(0.0, item[1]))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = trainer.wait()
        assert code in (0, -signal.SIGKILL), (item, code)  # a run the kill missed must have succeeded
        killed += code == -signal.SIGKILL
        _check_folder(out)
    assert trainer.run(_argv(out, cfg)) == 0
    return killed


@pytest.mark.slow
def test_kills_in_every_kind_of_write_and_at_random_moments_resume_exactly(setup):
    trainer, root, cfg, ref = setup
    out = str(root / "killed")
    plan = [("write", "checkpoint.pt:1", "half"),         # the very first file of a run
            ("write", "checkpoint_stage1.pt:1", "half"),  # the end of stage 1
            ("write", "train_log.csv:2", "full"),         # logs and curves after a step
            ("random", 2.5),
            ("write", "checkpoint.pt:2", "full"),         # a periodic checkpoint in stage 2
            ("write", "metrics.json:1", "half")]          # the final evaluation
    killed = _kill_chain(trainer, out, cfg, plan, random.Random(0))
    assert killed >= len(plan) - 1
    _same_as_reference(out, ref)


def test_many_random_kills(setup):
    trainer, root, cfg, ref = setup
    rng = random.Random(int(os.environ.get("FML_CRASH_SEED", "1")))
    total, chains = 0, 0
    while total < EXTRA_KILLS:
        plan = [("random", 3.5) if rng.random() < 0.5 else
                ("write", f"{rng.choice(WRITES)}:{rng.randint(1, 3)}", rng.choice(["half", "full"]))
                for _ in range(min(4, EXTRA_KILLS - total))]
        out = str(root / f"chain{chains}")
        total += _kill_chain(trainer, out, cfg, plan, rng)
        _same_as_reference(out, ref)
        chains += 1
    print(f"\n{total} kills survived in {chains} chains")
