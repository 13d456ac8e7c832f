"""``fml-taichi reconstruct`` into a folder used before, and faces whose mesh cannot be seen."""
import json
import shutil

import pytest

from fml_taichi.apps.cli import main
from fml_taichi.io.images import write_png
from fml_taichi.io.pts import write_pts
from reconstruct_fixtures import paste, synthetic_faces, write_tiny_checkpoint

OFFSET = (80, 30)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    faces = synthetic_faces((0,))
    write_png(d / "face.png", paste(faces["image"][:1], [OFFSET]))
    write_pts(d / "face.pts", faces["landmarks"][0] + OFFSET)
    return d / "face.png"


def _reconstruct(photo, out, checkpoint, capsys, *extra):
    code = main(["reconstruct", str(photo), "--out", str(out), "--checkpoint", checkpoint, "--detector", "pts",
                 "--runner", "torch", "--quiet", *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_a_rerun_removes_face_files_of_an_earlier_run_that_found_more(tmp_path, checkpoint, photo, capsys):
    out = tmp_path / "out"
    assert _reconstruct(photo, out, checkpoint, capsys)[0] == 0
    # What a run that found three faces leaves: face_01 and face_02 files beside face_00.
    for k in ("01", "02"):
        for ext in (".obj", ".mtl", ".ply", ".json", ".npz", ".figure.png"):
            shutil.copy(out / f"face.face_00{ext}", out / f"face.face_{k}{ext}")
    (out / "face.face_01.my_notes.txt").write_text("not written by reconstruct")
    (out / "other.face_01.obj").write_text("another input's file")
    assert _reconstruct(photo, out, checkpoint, capsys)[0] == 0
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.startswith(("face.face_01.", "face.face_02.")) and not n.endswith(".txt")]
    assert {"face.face_00.obj", "face.face_00.json", "face.overlay.png", "face.face_01.my_notes.txt",
            "other.face_01.obj"} <= set(left)
    # An input that now fails leaves none of its old files (they would pass for this run's).
    photo.with_suffix(".pts").rename(photo.with_suffix(".pts.off"))
    try:
        code, _, err = _reconstruct(photo, out, checkpoint, capsys)
    finally:
        photo.with_suffix(".pts.off").rename(photo.with_suffix(".pts"))
    assert code == 1
    assert not list(out.glob("face.face_0*.obj")) and not (out / "face.overlay.png").exists()
    assert (out / "face.face_01.my_notes.txt").exists()


def test_a_face_behind_the_camera_is_warned_about_and_counted(tmp_path, checkpoint, photo, capsys, monkeypatch):
    from fml_taichi.recon.pipeline import FacePipeline

    real = FacePipeline.reconstruct_crops

    def behind(self, crops):
        params, out = real(self, crops)
        params.translation[:, 2] = -params.translation[:, 2]  # the head 0.5 m behind the camera
        return params, out

    monkeypatch.setattr(FacePipeline, "reconstruct_crops", behind)
    # the encoder's path: its pose comes from reconstruct_crops, which this test breaks on purpose
    code, stdout, err = _reconstruct(photo, tmp_path / "out", checkpoint, capsys, "--init", "encoder")
    assert code == 0, err
    assert "face 0: the mesh lies (partly) behind the camera" in err and str(photo) in err
    assert "1 face(s) behind the camera or with no visible triangle" in err
    record = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]
    assert record["not_visible"] == [0]


def test_a_visible_face_is_not_flagged(tmp_path, checkpoint, photo, capsys):
    code, _, err = _reconstruct(photo, tmp_path / "out", checkpoint, capsys)
    assert code == 0 and "warning" not in err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]["not_visible"] == []
