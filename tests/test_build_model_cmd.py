"""`fml-taichi build-model` writes a loadable model file and names bad inputs."""
import numpy as np
import scipy.io

from fml_taichi.apps.cli import main
from fml_taichi.model import load_face_model


def test_default_model_file_roundtrip(tmp_path):
    out = tmp_path / "m.npz"
    assert main(["build-model", "default", "--n-vertices", "2000", "--out", str(out)]) == 0
    m = load_face_model(out)
    assert 1800 <= m.n_vertices <= 2200 and m.landmarks.shape == (68,)


def test_missing_and_corrupt_source_files_are_named(tmp_path, capsys):
    missing = tmp_path / "nope.mat"
    assert main(["build-model", "bfm2009", str(missing), "--out", str(tmp_path / "a.npz")]) == 1
    assert "nope.mat" in capsys.readouterr().err
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"shapeMU": np.zeros((7, 1))})
    assert main(["build-model", "bfm2009", str(bad), "--out", str(tmp_path / "b.npz")]) == 1
    assert "bad.mat" in capsys.readouterr().err
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()
