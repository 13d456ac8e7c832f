"""``fml-taichi reconstruct`` end to end on synthetic "photos": exports, JSON fields, error paths, video,
ONNX vs torch, the shipping checkpoint, refinement."""
import glob
import json
import os

import cv2
import numpy as np
import pytest
import torch

from fml_taichi.apps.cli import main
from fml_taichi.io.exports import read_params_npz
from fml_taichi.io.images import write_png
from fml_taichi.io.pts import write_pts
from reconstruct_fixtures import (dlib_ready, mean_landmarks, onnx_ready, paste, synthetic_faces,
                                  write_tiny_checkpoint)

SEEDS = tuple(range(12))
OFFSET = (80, 30)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 300 x 400 'photo' with one synthetic face and its landmarks in IMAGE.pts."""
    d = tmp_path_factory.mktemp("photos")
    faces = synthetic_faces(SEEDS)
    img = paste(faces["image"][:1], [OFFSET])
    write_png(d / "face.png", img)
    write_pts(d / "face.pts", faces["landmarks"][0] + OFFSET)
    return d / "face.png"


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_reconstruct_writes_every_export_with_valid_fields(tmp_path, checkpoint, photo, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(["reconstruct", str(photo), "--out", str(out), "--checkpoint", checkpoint,
                              "--detector", "pts", "--runner", "torch", "--quiet"], capsys)
    assert code == 0, err
    assert "reconstructed 1 of 1" in stdout
    prefix = out / "face.face_00"
    for ext in (".obj", ".mtl", ".ply", ".json", ".npz", ".figure.png"):
        assert (prefix.parent / (prefix.name + ext)).is_file(), ext
    overlay = cv2.imread(str(out / "face.overlay.png"))
    assert overlay.shape == (300, 400, 3)
    figure = cv2.imread(str(prefix) + ".figure.png")
    assert figure.shape[1] > 4 * 240  # five panels side by side

    doc = json.loads((prefix.parent / "face.face_00.json").read_text())
    extra = doc["extra"]
    lm2d = np.array(extra["landmarks_2d"])
    assert lm2d.shape == (68, 2)
    assert (lm2d[:, 0] >= 0).all() and (lm2d[:, 0] < 400).all() and (lm2d[:, 1] >= 0).all() and (lm2d[:, 1] < 300).all()
    x0, y0, x1, y1 = extra["bbox"]
    gt = synthetic_faces(SEEDS)["landmarks"][0] + OFFSET
    assert (x0, y0, x1, y1) == pytest.approx((*gt.min(0), *gt.max(0)), abs=1e-2)
    assert extra["image_size"] == [400, 300] and extra["face_index"] == 0
    assert extra["input"] == str(photo) and extra["checkpoint"] == checkpoint

    # landmarks_2d is what the stored parameters give: model -> pose -> the stored image intrinsics
    from fml_taichi.reference.image_formation import euler_to_matrix
    from fml_taichi.recon.reconstructor import Reconstructor

    params, extra_npz = read_params_npz(prefix.parent / "face.face_00.npz")
    assert extra_npz["landmarks_2d"] == extra["landmarks_2d"]
    rec = Reconstructor.from_checkpoint(checkpoint)
    with torch.no_grad():
        geo = rec.multilevel(params).final_geometry[0]
    v = geo[extra["landmark_vertices"]] @ euler_to_matrix(params.rotation)[0].T + params.translation[0]
    k = np.array(extra["image_intrinsics"])
    uv = k[:2] * v[:, :2].numpy() / v[:, 2:].numpy() + k[2:]
    np.testing.assert_allclose(uv, lm2d, atol=0.01)
    # the OBJ holds the final mesh of the model
    n_v = sum(1 for line in open(str(prefix) + ".obj") if line.startswith("v "))
    assert n_v == rec.face_model.n_vertices
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"][0]["status"] == "ok" and summary["inputs"][0]["faces"] == 1


def test_failing_inputs_are_reported_and_the_others_go_on(tmp_path, checkpoint, photo, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "text.jpg").write_text("this is not an image")
    data = photo.read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 3])
    write_png(src / "blank.png", np.full((120, 160, 3), 0.5, np.float32))  # no .pts: no face
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code, stdout, err = _run(["reconstruct", str(missing), str(src), str(photo), "--out", str(out), "--checkpoint",
                              checkpoint, "--detector", "pts", "--runner", "torch", "--quiet"], capsys)
    assert code == 1
    assert f"input not found: '{missing}'" in err
    assert f"{src / 'text.jpg'}" in err and "not an image" in err
    assert f"{src / 'truncated.png'}" in err and "truncated" in err
    assert f"no face found in '{src / 'blank.png'}'" in err
    assert f"{src / 'broken.mp4'}" in err and "cannot decode video" in err
    assert "reconstructed 1 of 6 input(s)" in stdout and "5 failed" in stdout
    assert (out / "face.face_00.json").is_file()  # the good input after the bad ones went through
    for name in ("text", "truncated", "blank", "broken", "missing"):
        assert glob.glob(str(out / f"{name}.*")) == [], name  # nothing half-written
    assert not glob.glob(str(out / ".tmp-*"))
    status = {r["name"]: r["status"] for r in json.loads((out / "summary.json").read_text())["inputs"]}
    assert status == {"missing": "failed", "blank": "failed", "broken": "failed", "text": "failed",
                      "truncated": "failed", "face": "ok"}


def test_unwritable_output_names_the_input(tmp_path, checkpoint, photo, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    code, _, err = _run(["reconstruct", str(photo), "--out", str(blocker / "out"), "--checkpoint", checkpoint,
                         "--detector", "pts", "--runner", "torch", "--quiet"], capsys)
    assert code == 1
    assert str(photo) in err and "cannot create output folder" in err


def test_setup_errors_exit_2(tmp_path, photo, capsys, monkeypatch):
    import fml_taichi.recon.pipeline as rc

    monkeypatch.setattr(rc, "DEFAULT_CHECKPOINT", str(tmp_path / "none.pt"))
    code, _, err = _run(["reconstruct", str(photo), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2 and "--checkpoint" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = _run(["reconstruct", str(photo), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)], capsys)
    assert code == 2 and str(bad) in err
    code, _, err = _run(["reconstruct", str(photo), "--out", str(tmp_path / "o"), "--refine", "-1"], capsys)
    assert code == 2 and "--refine" in err


@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1] or "dlib ready")
def test_several_faces_per_image_with_dlib(tmp_path, checkpoint, capsys):
    from fml_taichi.data.detect import DlibDetector

    det = DlibDetector(landmarks_3d=mean_landmarks())
    faces = synthetic_faces(SEEDS)
    found = [i for i in range(len(SEEDS))
             if any(d.confidence > 0.5 for d in det(paste(faces["image"][i:i + 1], [OFFSET])))][:2]
    assert len(found) == 2
    img = paste(faces["image"][found], [(20, 40), (380, 60)], size=(340, 660))
    write_png(tmp_path / "group.png", img)
    code, _, err = _run(["reconstruct", str(tmp_path / "group.png"), "--out", str(tmp_path / "out"),
                         "--checkpoint", checkpoint, "--quiet"], capsys)
    assert code == 0, err
    boxes = []
    for k in range(2):
        extra = json.loads((tmp_path / "out" / f"group.face_{k:02d}.json").read_text())["extra"]
        lm = np.array(extra["landmarks_2d"])
        x0, y0, x1, y1 = extra["crop_box"]
        assert ((lm >= [x0, y0]) & (lm <= [x1, y1])).all()  # each face's landmarks inside its own crop
        boxes.append(extra["bbox"])
    centres = sorted((b[0] + b[2]) / 2 for b in boxes)
    assert centres[0] < 330 < centres[1]  # one face on each side


@pytest.mark.skipif(not onnx_ready(), reason="onnxruntime / onnx not installed (pip install onnxruntime onnx)")
def test_onnx_runtime_matches_torch(checkpoint, tmp_path, monkeypatch):
    from fml_taichi.recon.runners import OnnxRunner, TorchRunner
    from fml_taichi.recon.reconstructor import Reconstructor

    monkeypatch.setenv("FML_TAICHI_CACHE", str(tmp_path))
    rec = Reconstructor.from_checkpoint(checkpoint)
    crops = torch.from_numpy(synthetic_faces(SEEDS)["image"][:3].copy())
    p_t, g_t, r_t = TorchRunner(rec.encoder, rec.multilevel)(crops)
    onnx = OnnxRunner(rec.encoder, rec.multilevel)
    p_o, g_o, r_o = onnx(crops)
    assert glob.glob(str(tmp_path / "onnx" / "*.onnx"))  # cached for the next run
    for name in ("rotation", "translation", "expression", "delta_geometry", "light"):
        np.testing.assert_allclose(getattr(p_o, name).numpy(), getattr(p_t, name).numpy(), atol=1e-4, rtol=1e-4)
    assert (g_t[0] - g_t[1]).abs().max() > 0.01  # outputs depend on the input (the check has teeth)
    np.testing.assert_allclose(g_o.numpy(), g_t.numpy(), atol=1e-3)  # mm
    np.testing.assert_allclose(r_o.numpy(), r_t.numpy(), atol=1e-5)
    p_c, g_c, _ = OnnxRunner(rec.encoder, rec.multilevel)(crops)  # from the cache file
    np.testing.assert_allclose(g_c.numpy(), g_o.numpy(), atol=1e-6)


def test_ship_checkpoint_halves_weights_and_keeps_results(checkpoint, tmp_path, capsys):
    from fml_taichi.apps.ship_checkpoint_cmd import main as ship_main
    from fml_taichi.recon.reconstructor import compare_checkpoints
    from fml_taichi.nets.checkpoint import load_checkpoint
    from fml_taichi.recon.reconstructor import Reconstructor

    dst = tmp_path / "default.pt"
    assert ship_main([checkpoint, str(dst)]) == 0
    assert "MB" in capsys.readouterr().out
    ck = load_checkpoint(dst)
    assert ck.optimizer is None and ck.rng == {} and ck.extra["shipped"]["storage"] == "float16"
    from fml_taichi.nets.shipping import MIN_NUMEL

    src = load_checkpoint(checkpoint)
    for part in ("encoder", "multilevel"):
        for key, t in getattr(ck, part).items():
            big = t.is_floating_point() and t.numel() >= MIN_NUMEL
            assert t.dtype == (torch.float16 if big else getattr(src, part)[key].dtype), key
    assert ck.multilevel["geometry_corrective.theta"].dtype == torch.float16
    assert os.path.getsize(dst) < 0.7 * os.path.getsize(checkpoint)
    rec = Reconstructor.from_checkpoint(dst)
    assert all(p.dtype == torch.float32 for p in rec.model.parameters())  # loaded back as float32
    diff = compare_checkpoints(checkpoint, dst)
    assert diff["geometry_mm"] < 0.05 and diff["rotation_rad"] < 1e-3


def test_refine_improves_the_fit(checkpoint):
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.refine import refine_results

    # the encoder start of an untrained checkpoint: far from the landmarks, so refinement must help
    pipe = FacePipeline.from_checkpoint(checkpoint, detector="pts", runner="torch", init="encoder")
    faces = synthetic_faces(SEEDS)
    img = paste(faces["image"][:1], [OFFSET])

    def known(image, path=None):  # the renderer's landmarks as the "detector"
        from fml_taichi.data.detect import PtsFileDetector

        lm = faces["landmarks"][0] + OFFSET
        return [PtsFileDetector(pipe.landmarks_3d)._scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, float("inf"),
                                                                     "test")]

    pipe.detector = known
    (res,) = refine_results(pipe(img), pipe.multilevel, 25)
    st = res.extra["refine"]
    assert st["iterations"] == 25
    assert st["loss_after"] < 0.8 * st["loss_before"]
    assert st["landmark_nme_after"] < st["landmark_nme_before"]
    assert st["photo_error_after"] < st["photo_error_before"]


def test_video_track_is_smoothed_and_drawn(checkpoint, tmp_path):
    """A face sliding across a video, with detector landmarks jittering by ~2 px: every frame gets
    parameters, the overlay video has every frame, and the smoothed track jitters less than the raw one."""
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.video import reconstruct_video
    from fml_taichi.data.detect import PtsFileDetector

    faces = synthetic_faces(SEEDS)
    lm0 = faces["landmarks"][0]
    n = 24
    xs = [40 + 3 * t for t in range(n)]
    path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (400, 300))
    for x in xs:
        writer.write((paste(faces["image"][:1], [(x, 30)])[:, :, ::-1] * 255).astype(np.uint8))
    writer.release()
    pipe = FacePipeline.from_checkpoint(checkpoint, detector="pts", runner="torch")
    scorer = PtsFileDetector(pipe.landmarks_3d)._scorer
    rng = np.random.default_rng(0)
    state = {"t": 0}

    def jittery(image, path=None):
        lm = lm0 + [xs[state["t"]], 30] + rng.normal(0, 2.0, (1, 2))  # the whole face shifts per frame
        state["t"] += 1
        return [scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, float("inf"), "test")]

    pipe.detector = jittery
    info = reconstruct_video(pipe, path, str(tmp_path / "out"), "clip", min_cutoff=1.0, progress=False)
    assert info["frames"] == n and info["frames_with_face"] == n
    z = np.load(tmp_path / "out" / "clip.params.npz")
    assert z["param_rotation"].shape == (n, 3) and z["landmarks_2d"].shape == (n, 68, 2) and z["detected"].all()
    raw, smooth = info["jitter_raw_vs_smoothed"]["translation"]
    assert smooth < 0.5 * raw
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == n
    assert (tmp_path / "out" / "clip.track.png").is_file()


def test_video_reader_flags_truncation_and_rejects_what_it_cannot_decode(tmp_path):
    from fml_taichi.data.video import VideoReader, VideoWriter

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for _ in range(20):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = (tmp_path / "v.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with VideoReader(tmp_path / "v.avi") as v:
        frames = list(v)
        assert len(frames) == 20 and not v.truncated and frames[0].shape == (48, 64, 3)
        assert frames[0].dtype == np.float32 and 0.0 <= frames[0].min() and frames[0].max() <= 1.0
    with VideoReader(tmp_path / "cut.avi") as v:
        n = sum(1 for _ in v)
        assert 0 < n < 20 and v.truncated
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match="cannot decode video"):
        VideoReader(tmp_path / "junk.mp4")
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoReader(tmp_path / "none.mp4")
    # a failed writer leaves nothing behind
    with pytest.raises(ValueError, match="frame"):
        with VideoWriter(tmp_path / "out.mp4", 25.0, (64, 48)) as w:
            w.write(np.zeros((10, 10, 3), np.float32))
    assert not list(tmp_path.glob("*out.mp4*"))


def test_runner_falls_back_to_torch_without_onnx_runtime(checkpoint, monkeypatch):
    import fml_taichi.recon.runners as ox
    from fml_taichi.recon.reconstructor import Reconstructor

    rec = Reconstructor.from_checkpoint(checkpoint)
    monkeypatch.setattr(ox, "onnx_available", lambda: False)
    assert ox.make_runner(rec.encoder, rec.multilevel).name == "torch"
    with pytest.raises(RuntimeError, match="pip install onnxruntime onnx"):
        ox.make_runner(rec.encoder, rec.multilevel, runner="onnxruntime")
    with pytest.raises(ValueError, match="runner"):
        ox.make_runner(rec.encoder, rec.multilevel, runner="tensorrt")


def test_packaged_checkpoint_is_the_default(tmp_path, checkpoint, photo, capsys, monkeypatch):
    import fml_taichi.recon.pipeline as rc

    assert rc.DEFAULT_CHECKPOINT.endswith(os.path.join("fml_taichi", "checkpoints", "default.pt"))
    monkeypatch.setattr(rc, "DEFAULT_CHECKPOINT", checkpoint)  # as if installed with the package
    code, _, err = _run(["reconstruct", str(photo), "--out", str(tmp_path / "o"), "--detector", "pts",
                         "--runner", "torch", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "face.face_00.json").read_text())["extra"]["checkpoint"] == checkpoint
