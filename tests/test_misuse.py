"""Misuse a new user might try: an occupied run folder, empty configs, bad sizes, missing files and
packages, NaN weights and learning rates, a viewer without a checkpoint, stray start-up output."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import yaml

from fml_taichi.apps import cli
from fml_taichi.train import trainer as T
from fml_taichi.nets.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fml_taichi.nets.config import ConfigError, from_dict, load_config
from test_train_loop import TINY


def _tiny(**sections) -> dict:
    d = copy.deepcopy(TINY)
    d["stage1"]["steps"] = d["stage2"]["steps"] = 1
    d["eval"] = {"n": 0}
    d.update(sections)
    return d


def _one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---- train: an occupied run folder ---------------------------------------------------------------


def test_train_refuses_a_folder_holding_a_run_and_force_starts_over(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny()))
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"the old run's weights")
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert cli.main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "--resume", "--force", str(out))
    assert (out / "checkpoint.pt").read_bytes() == b"the old run's weights"  # untouched
    assert cli.main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--force"]) == 1
    _one_error_line(capsys.readouterr().err, "choose one")
    assert cli.main(["train", "--config", str(cfg), "--out", str(out), "--force", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.pt").step == 2
    assert (out / "notes.txt").read_text() == "mine"  # only the trainer's own files are replaced
    # A folder with other files but no run is not refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli.main(["train", "--config", str(cfg), "--out", str(other), "--no-progress"]) == 0


# ---- train: the stage-1 checkpoint and stale temp files ------------------------------------------


def test_a_kill_at_the_end_of_stage_1_never_loses_the_stage_1_checkpoint(tmp_path, monkeypatch):
    """Whichever of the writes at the stage boundary a kill interrupts, resume ends with the file."""
    out = str(tmp_path / "run")
    s1 = TINY["stage1"]["steps"]
    real_save = T.Trainer.save
    calls = []

    class Killed(BaseException):
        pass

    def save(self, name=T.CHECKPOINT):
        if self.state.step == s1:
            calls.append(name)
            if len(calls) == 2:  # the second write at the boundary dies
                raise Killed
        real_save(self, name)

    monkeypatch.setattr(T.Trainer, "save", save)
    with pytest.raises(Killed):
        T.Trainer(from_dict(copy.deepcopy(TINY)), out, progress=False).run()
    monkeypatch.setattr(T.Trainer, "save", real_save)
    T.trainer_from_checkpoint(os.path.join(out, T.CHECKPOINT), out, progress=False).run()
    ck = load_checkpoint(os.path.join(out, T.STAGE1_CHECKPOINT))
    assert ck.step == s1 and ck.stage == 1


def test_stale_temp_files_are_removed_on_start_and_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [".tmp-checkpoint.pt-k3j2.tmp", ".tmp-train_log.csv-x1.csv", ".tmp-curves_loss.png-a.png"]
    for name in stale:
        (out / name).write_bytes(b"half a file")
    (out / ".tmp-someone-elses").write_text("not ours")
    cfg = _tiny()
    cfg["stage1"]["steps"] = 2
    tr = T.Trainer(from_dict(cfg), str(out), progress=False)
    tr.run(stop_at=1)
    assert not any((out / n).exists() for n in stale)
    assert (out / ".tmp-someone-elses").exists()
    (out / stale[0]).write_bytes(b"left by a kill")
    T.trainer_from_checkpoint(str(out / "checkpoint.pt"), str(out), progress=False).run()
    assert not (out / stale[0]).exists()


# ---- configs: empty, sizes below their minimum, NaN ----------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_a_config_that_sets_nothing_is_an_error_naming_the_file(tmp_path, text, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="empty.yaml.*sets nothing"):
        load_config(path)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "empty.yaml")
    assert not (tmp_path / "o").exists()  # nothing started


@pytest.mark.parametrize("section, key, value", [
    ("data", "n_train", 0), ("data", "image_size", 8), ("encoder", "input_size", 16), ("encoder", "width", 0.01),
    ("model", "n_vertices", 100), ("encoder", "n_features", 0), ("stage1", "grad_clip", float("nan")),
    ("losses", "final_landmarks", float("inf")),
])
def test_sizes_below_their_minimum_name_the_key(section, key, value):
    d = _tiny()
    d[section] = {**d.get(section, {}), key: value}
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: must"):
        from_dict(d)


def test_a_folder_dataset_may_still_use_every_crop():
    cfg = from_dict(_tiny(data={"kind": "folder", "root": "crops", "n_train": 0, "n_val": 2}))
    assert cfg.data.n_train == 0


def test_a_nan_learning_rate_names_the_key(tmp_path, capsys):
    path = tmp_path / "nan.yaml"
    d = _tiny()
    d["stage2"]["lr"]["geometry"] = float("nan")
    path.write_text(yaml.safe_dump(d))
    assert ".nan" in path.read_text()
    with pytest.raises(ConfigError, match=r"nan.yaml: stage2.lr.geometry: expected a positive finite number, got nan"):
        load_config(path)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "stage2.lr.geometry")


# ---- checkpoints with NaN weights ----------------------------------------------------------------


def _tiny_checkpoint(path, poison=None):
    from fml_taichi.nets.models import build_networks, face_model_from_spec, face_model_spec

    cfg = from_dict(_tiny())
    spec = face_model_spec(cfg.model)
    ml, enc = build_networks(cfg, face_model_from_spec(spec))
    state = {"encoder": enc.state_dict(), "multilevel": ml.state_dict()}
    if poison:
        section, key = poison
        state[section][key] = state[section][key].clone()
        state[section][key].view(-1)[0] = float("nan")
    save_checkpoint(path, config=cfg.to_dict(), face_model_spec=spec, step=0, **state)
    return str(path)


def test_nan_weights_in_a_checkpoint_name_the_file_and_what_to_do(tmp_path, capsys):
    bad = _tiny_checkpoint(tmp_path / "diverged.pt", ("encoder", "head_base.weight"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert "diverged.pt" in msg and "'encoder'" in msg and "NaN" in msg and "earlier checkpoint" in msg
    bad2 = _tiny_checkpoint(tmp_path / "diverged2.pt", ("multilevel", "reflectance_corrective.theta"))
    with pytest.raises(CheckpointError, match="diverged2.pt.*'multilevel' holds NaN"):
        load_checkpoint(bad2)
    # Every command that reads a checkpoint says the same in one line.
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--resume", bad, "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "diverged.pt", "NaN")
    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    assert cli.main(["reconstruct", str(photo), "--out", str(tmp_path / "o"), "--checkpoint", bad,
                     "--detector", "pts", "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "diverged.pt", "NaN")


def test_a_nan_learning_rate_in_a_checkpoints_config_names_the_file(tmp_path):
    good = _tiny_checkpoint(tmp_path / "good.pt")
    ck = load_checkpoint(good)
    ck.config["stage1"]["lr"]["base"] = float("nan")
    save_checkpoint(tmp_path / "nanlr.pt", ck)
    with pytest.raises(ConfigError, match="nanlr.pt.*stage1.lr.base"):
        T.trainer_from_checkpoint(str(tmp_path / "nanlr.pt"), str(tmp_path / "r"), progress=False)


# ---- build-model and the top-level error guard ---------------------------------------------------


def test_build_model_missing_file_uncreatable_out_and_missing_package(tmp_path, capsys, monkeypatch):
    assert cli.main(["build-model", "bfm2017", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "m.npz")]) == 1
    _one_error_line(capsys.readouterr().err, "missing.h5")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["build-model", "default", "--n-vertices", "600", "--out", str(blocker / "sub" / "m.npz")]) == 1
    _one_error_line(capsys.readouterr().err, "cannot create output folder")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n")
    monkeypatch.setitem(sys.modules, "h5py", None)  # what an install without h5py sees
    assert cli.main(["build-model", "bfm2017", str(h5), "--out", str(tmp_path / "m.npz")]) == 1
    _one_error_line(capsys.readouterr().err, "'h5py'", "fml_taichi[bfm2017]")
    assert not list(tmp_path.glob("*.npz"))


def test_cli_turns_documented_errors_into_one_line_and_keeps_tracebacks_for_bugs(monkeypatch, capsys):
    from fml_taichi.apps import demo_cmd

    def disk_full(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo_cmd, "run", disk_full)
    assert cli.main(["demo"]) == 1
    assert _one_error_line(capsys.readouterr().err).startswith("fml-taichi demo: error:")
    assert cli.main(["--verbose", "demo"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "No space left" in err.splitlines()[-1]

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(demo_cmd, "run", bug)
    with pytest.raises(KeyError):
        cli.main(["demo"])


def test_demo_into_an_uncreatable_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["demo", "--steps", "1", "--size", "32", "--out", str(blocker / "demo")]) == 1
    _one_error_line(capsys.readouterr().err, "a_file")


# ---- view defaults to the shipped checkpoint -----------------------------------------------------


def test_view_without_a_source_uses_the_shipped_checkpoint():
    import argparse

    from fml_taichi.apps import view_cmd
    from fml_taichi.recon.pipeline import DEFAULT_CHECKPOINT

    parser = argparse.ArgumentParser()
    view_cmd.add_arguments(parser)
    fm, multilevel, _ = view_cmd.load_sources(parser.parse_args([]))
    shipped = load_checkpoint(DEFAULT_CHECKPOINT)
    assert multilevel is not None  # the learned correctives to show
    theta = shipped.multilevel["reflectance_corrective.theta"]
    torch.testing.assert_close(multilevel.reflectance_corrective.theta, theta.to(torch.float32))
    fm, multilevel, _ = view_cmd.load_sources(parser.parse_args(["--untrained", "--vertices", "600"]))
    assert multilevel is None


# ---- Taichi's start-up banner --------------------------------------------------------------------


def _run_cli(*args, cwd):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.pop("ENABLE_TAICHI_HEADER_PRINT", None)
    return subprocess.run([sys.executable, "-m", "fml_taichi.apps.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_taichi_banner_is_quiet_unless_verbose(tmp_path, monkeypatch, capsys):
    # reconstruct starts Taichi before it looks at its inputs: the cheapest command that does
    quiet = _run_cli("reconstruct", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"), "--detector", "pts",
                     "--runner", "torch", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 1, quiet.stderr[-2000:]
    assert "[Taichi]" not in quiet.stdout + quiet.stderr
    assert "reconstructed 0 of 1" in quiet.stdout  # the command's own output is still there
    # --verbose reaches the runtime module (before or after the command name) ...
    from fml_taichi.common import runtime
    from fml_taichi.apps import demo_cmd

    seen = []
    monkeypatch.setattr(runtime, "set_verbose", seen.append)
    monkeypatch.setattr(demo_cmd, "run", lambda args: 0)
    assert cli.main(["--verbose", "demo"]) == 0 and cli.main(["demo", "--verbose"]) == 0 and cli.main(["demo"]) == 0
    assert seen == [True, True, False]
    # ... which then shows both start-up lines (a fresh process: the banner is printed at import).
    code = "import fml_taichi.common.runtime as b; b.set_verbose(True); b.init()"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.pop("ENABLE_TAICHI_HEADER_PRINT", None)
    loud = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "[Taichi] version" in loud.stdout and "[Taichi] Starting on arch" in loud.stdout
