"""Model files cannot run code: FLAME .pkl and landmark .pkl/.npy go through the restricted unpickler."""
import os
import pickle

import numpy as np
import pytest
import scipy.sparse

from fml_taichi.common import safe_pickle
from fml_taichi.apps.cli import main
from fml_taichi.model import load_flame
from fml_taichi.model.sources.common import read_landmarks


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): a file appears if the loader runs what the file says."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_weapon_works_with_plain_pickle(tmp_path):
    target = tmp_path / "created_by_plain_pickle"
    pickle.loads(pickle.dumps(_CreatesAFile(target))).close()
    assert target.exists()  # so the checks below prove something


def test_a_flame_pickle_that_would_create_a_file_is_refused_and_nothing_runs(tmp_path, capsys):
    target = tmp_path / "pwned"
    model = tmp_path / "generic_model.pkl"
    model.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": _CreatesAFile(target)}, protocol=2))
    with pytest.raises(safe_pickle.RefusedPickle, match=r"generic_model.pkl: refused to load io\.open"):
        load_flame(model, landmarks=list(range(68)))
    assert not target.exists()
    lms = tmp_path / "lmk.npy"
    lms.write_text("x")
    assert main(["build-model", "flame", str(model), "--landmarks", str(lms), "--out", str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert "refused to load io.open" in err and "Traceback" not in err
    assert not target.exists() and not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("suffix", [".pkl", ".npy"])
def test_landmark_files_are_read_without_running_code(tmp_path, suffix):
    target = tmp_path / "pwned"
    path = tmp_path / f"landmarks{suffix}"
    payload = {"full_lmk_faces_idx": _CreatesAFile(target), "full_lmk_bary_coords": np.zeros((68, 3))}
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(payload))
    else:
        np.save(path, payload, allow_pickle=True)
    with pytest.raises(safe_pickle.RefusedPickle, match=r"landmarks\.(pkl|npy): refused to load io\.open"):
        read_landmarks(path, 100, np.zeros((10, 3), np.int64))
    assert not target.exists()


@pytest.mark.parametrize("cls, name", [(os.system, "posix.system"), (eval, "builtins.eval"),
                                       (getattr, "builtins.getattr")])
def test_callables_are_refused_by_name(cls, name):
    class Call:
        def __reduce__(self):
            return (cls, ("1",))

    with pytest.raises(safe_pickle.RefusedPickle, match=name.replace(".", r"\.")):
        safe_pickle.loads(pickle.dumps(Call()))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_what_model_files_hold_loads_at_every_protocol(protocol):
    data = {"v": np.arange(6.0).reshape(2, 3), "f": np.arange(3, dtype=np.uint32)[None], "s": np.float32(2.5),
            "J": scipy.sparse.csc_matrix(np.eye(3)), "b": b"bytes", "t": ("lbs", 1, None), "o": {1, 2}}
    out = safe_pickle.loads(pickle.dumps(data, protocol=protocol))
    assert np.array_equal(out["v"], data["v"]) and out["f"].dtype == np.uint32 and out["s"] == np.float32(2.5)
    assert (out["J"] != data["J"]).nnz == 0 and out["b"] == b"bytes" and out["t"] == data["t"] and out["o"] == {1, 2}


def test_plain_arrays_and_dict_npy_files_still_load(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(68))
    assert read_landmarks(tmp_path / "a.npy", 100).tolist() == list(range(68))
    np.save(tmp_path / "d.npy", {"x": np.ones(2)}, allow_pickle=True)
    assert np.array_equal(safe_pickle.load_npy(tmp_path / "d.npy")["x"], np.ones(2))
