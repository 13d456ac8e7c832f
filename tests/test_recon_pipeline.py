"""The landmark start inside FacePipeline and the CLI: fields, both inits, the shipped checkpoint, refinement."""
import json
import os

import numpy as np
import pytest
import torch

from reconstruct_fixtures import mean_landmarks, paste, synthetic_faces, write_tiny_checkpoint

QUALITY_KEYS = {"detector_score", "yaw_deg", "pitch_deg", "roll_deg", "landmark_nme", "photo_error_base",
                "photo_error_final"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.fixture(scope="module")
def photo_with_pts(tmp_path_factory):
    from fml_taichi.io.images import write_png
    from fml_taichi.io.pts import write_pts

    faces = synthetic_faces((10_000_020,))
    frame = paste(faces["image"], [(60, 30)])
    d = tmp_path_factory.mktemp("photos")
    path = os.fspath(d / "face.png")
    write_png(path, frame)
    write_pts(os.path.splitext(path)[0] + ".pts", faces["landmarks"][0] + np.array([60.0, 30.0]))
    return path


def _detector(points):
    from fml_taichi.data.detect import PtsFileDetector

    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer

    def detect(image, path=None):
        return [scorer.detection(np.r_[points.min(0), points.max(0)], points, float("inf"), "given")]
    return detect


def test_cli_writes_quality_fields_for_both_inits(tmp_path, checkpoint, photo_with_pts, capsys):
    from fml_taichi.apps import cli

    for init in ("landmarks", "encoder"):
        out = tmp_path / init
        code = cli.main(["reconstruct", photo_with_pts, "--out", os.fspath(out), "--checkpoint", checkpoint,
                         "--detector", "pts", "--init", init, "--report", "--quiet", "--runner", "torch"])
        assert code == 0
        extra = json.load(open(out / "face.face_00.json"))
        extra = extra.get("extra", extra)
        q = extra["quality"]
        assert QUALITY_KEYS <= set(q)
        if init == "landmarks":
            assert q["landmark_nme"] < 0.05  # anchored on the landmarks even with an untrained encoder
        printed = capsys.readouterr().out
        assert "NME" in printed and "face" in printed
        summary = json.load(open(out / "summary.json"))
        assert summary["inputs"][0]["quality"][0]["landmark_nme"] == q["landmark_nme"]


def test_shipped_checkpoint_reconstructs_with_the_landmark_start():
    from fml_taichi.recon.pipeline import FacePipeline

    faces = synthetic_faces((10_000_021,))
    pts = faces["landmarks"][0].astype(np.float32)
    pipe = FacePipeline.from_checkpoint(detector=_detector(pts), runner="torch")
    r = pipe(faces["image"][0])[0]
    fm = pipe.face_model
    assert r.params.reflectance.shape == (1, fm.m_reflectance)  # the checkpoint's layout, unchanged
    with torch.no_grad():
        again = pipe.multilevel(r.params)
    torch.testing.assert_close(again.final_reflectance, r.output.final_reflectance)
    from fml_taichi.losses.metrics import landmark_nme

    assert landmark_nme(r.landmarks_2d, pts)[0] < 0.04
    assert set(pipe.last_timings) == {"landmark_fit", "colour_fit", "crop_wait", "align", "encoder", "encoder_wait",
                                      "before_features", "heads", "model", "reflectance_fit"}
    assert all(v >= 0 for v in pipe.last_timings.values())


def test_refine_does_not_move_away_from_the_landmarks(checkpoint):
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.refine import NME_SLACK, NME_SLACK_ABS, refine_results

    faces = synthetic_faces((10_000_022,))
    pipe = FacePipeline.from_checkpoint(checkpoint, detector=_detector(faces["landmarks"][0].astype(np.float32)),
                                        runner="torch")
    res = refine_results(pipe(faces["image"][0]), pipe.multilevel, 4)
    st = res[0].extra["refine"]
    assert st["landmark_nme_after"] <= st["landmark_nme_before"] * (1 + NME_SLACK) + NME_SLACK_ABS
    assert st["loss_after"] <= st["loss_before"] or st["kept_start"]


def test_low_score_faces_are_kept_when_plausible_and_min_score_filters(checkpoint):
    from fml_taichi.recon.pipeline import FacePipeline, NoFaceFound
    from fml_taichi.data.detect import PtsFileDetector

    faces = synthetic_faces((10_000_023,))
    pts = faces["landmarks"][0].astype(np.float32)
    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer

    def weak(image, path=None):  # a real face that dlib scores below its own threshold
        return [scorer.detection(np.r_[pts.min(0), pts.max(0)], pts, -0.2, "dlib")]

    kept = FacePipeline.from_checkpoint(checkpoint, detector=weak, runner="torch")(faces["image"][0])
    assert len(kept) == 1 and kept[0].detection.confidence == 0.0
    with pytest.raises(NoFaceFound):
        FacePipeline.from_checkpoint(checkpoint, detector=weak, runner="torch", min_score=0.0)(faces["image"][0])
    with pytest.raises(NoFaceFound):
        FacePipeline.from_checkpoint(checkpoint, detector=weak, runner="torch", init="encoder")(faces["image"][0])


def test_small_faces_get_a_finer_pyramid_level(checkpoint):
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.data.detect import PtsFileDetector

    faces = synthetic_faces((10_000_024,))
    pts = faces["landmarks"][0].astype(np.float32)
    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer
    seen = []

    class Hog:  # finds the face only one upsampling level finer than it starts
        upsample = 1

        def _boxes(self, img):
            return []

        def __call__(self, image, path=None):
            seen.append(self.upsample)
            if self.upsample < 2:
                return []
            return [scorer.detection(np.r_[pts.min(0), pts.max(0)], pts, 1.0, "dlib")]

    res = FacePipeline.from_checkpoint(checkpoint, detector=Hog(), runner="torch")(faces["image"][0])
    assert len(res) == 1 and seen == [1, 2]


def test_bad_options_are_one_line_errors(tmp_path, checkpoint, photo_with_pts, capsys):
    from fml_taichi.apps import cli

    for argv, word in ((["--focal-px", "-3"], "--focal-px"), (["--min-score", "nan"], "--min-score")):
        code = cli.main(["reconstruct", photo_with_pts, "--out", os.fspath(tmp_path), "--checkpoint", checkpoint,
                         "--detector", "pts", "--quiet", *argv])
        err = capsys.readouterr().err
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="init"):
        from fml_taichi.recon.pipeline import FacePipeline

        FacePipeline.from_checkpoint(checkpoint, detector="pts", init="magic")
