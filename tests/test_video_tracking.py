"""Video tracking: ids and re-detection (fake detector), upright patches, lag-free smoothing, the
stream outputs (CSV / NPZ / --every), camera input through a fake capture, the synthetic clip's truth."""
import csv
import json

import cv2
import numpy as np
import pytest
from reconstruct_fixtures import dlib_ready, write_tiny_checkpoint
from tracking_fixtures import FakeDetection as _Det
from tracking_fixtures import K
from tracking_fixtures import project as _project

from fml_taichi.data.crop import mean_landmarks_3d
from fml_taichi.model import default_face_model
from fml_taichi.recon.landmark_fit import LandmarkFitter
from fml_taichi.recon.tracking import (
    FaceTracker,
    TrackerConfig,
    box_iou,
    landmark_box,
    upright_landmarks,
)


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(2000)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


class _World:
    """Faces with known landmarks per frame; a fake detector and a fake shape predictor over them."""

    def __init__(self, lm3):
        self.lm3, self.t, self.faces, self.garbage, self.detect_calls = lm3, 0, {}, set(), []

    def landmarks(self, name):
        x, y, z = self.faces[name](self.t)
        return _project(self.lm3, [0.0, 0.0, 0.05], np.array([x, y, z]))

    def visible(self):
        return [n for n in self.faces if self.faces[n](self.t) is not None]

    def detect(self, image):
        self.detect_calls.append(self.t)
        return [_Det(self.landmarks(n)) for n in self.visible()]

    def predict(self, image, boxes):
        out = []
        for b in boxes:  # the face whose landmark box overlaps most, like a predictor run on it
            best = max(self.visible(), key=lambda n: box_iou(b, landmark_box(self.landmarks(n))), default=None)
            if best is None or box_iou(b, landmark_box(self.landmarks(best))) < 0.2:
                out.append(np.random.default_rng(self.t).uniform(0, 300, (68, 2)))
            elif best in self.garbage:
                out.append(np.random.default_rng(self.t).uniform(b[0], b[2], (68, 2)))  # no face shape
            else:
                out.append(self.landmarks(best))
        return out


def test_tracker_keeps_ids_detects_new_faces_and_redetects_on_loss(face_model):
    lm3 = mean_landmarks_3d(face_model)
    world = _World(lm3)
    world.faces["a"] = lambda t: (-60.0 + 2 * t, 0.0, 700.0)
    world.faces["b"] = lambda t: None if t < 4 else (70.0, -10.0, 800.0)
    tracker = FaceTracker(world.detect, world.predict, LandmarkFitter(face_model), K,
                          TrackerConfig(redetect_every=5, upright=False))
    ids = []
    for t in range(16):
        world.t = t
        if t == 11:
            world.garbage.add("a")  # the predictor loses face a: its fit degrades
        if t == 12:
            world.garbage.discard("a")
        faces = tracker(np.zeros((240, 320), np.uint8))
        ids.append(sorted((f.face_id, round(float(f.translation[0]))) for f in faces))
    # face a keeps id 0 while tracked; b appears at 4 and is admitted by the periodic detection at 5
    assert all(any(i == 0 for i, _ in ids[t]) for t in range(11))
    assert [i for i, _ in ids[4]] == [0] and sorted(i for i, _ in ids[5]) == [0, 1]
    # at 11 face a's fit fails: its track ends and a re-detection in the same frame gives it a new id
    assert 11 in world.detect_calls and sorted(i for i, _ in ids[11]) == [1, 2]
    assert all(sorted(i for i, _ in ids[t]) == [1, 2] for t in range(12, 16))
    # detections: start, every 5 frames, and on the loss; none in between
    assert world.detect_calls == [0, 5, 10, 11]
    # the tracked translation is the truth (noise-free landmarks)
    assert abs(ids[3][0][1] - (-60 + 6)) <= 2


def test_tracker_drops_a_face_that_leaves_the_frame(face_model):
    world = _World(mean_landmarks_3d(face_model))
    world.faces["a"] = lambda t: (40.0 * t, 0.0, 700.0) if t < 7 else None  # slides out to the right
    tracker = FaceTracker(world.detect, world.predict, LandmarkFitter(face_model), K,
                          TrackerConfig(redetect_every=100, upright=False))
    alive = []
    for t in range(10):
        world.t = t
        alive.append(len(tracker(np.zeros((240, 320), np.uint8))))
    assert alive[0] == 1 and alive[-1] == 0
    lost_at = alive.index(0)
    assert 2 <= lost_at <= 7  # when less than min_inside of its box is in the frame (or it is gone)


def test_upright_patch_maps_points_back():
    img = np.zeros((200, 240), np.uint8)
    pts = np.array([[100.0, 80.0], [130.0, 95.0], [110.0, 130.0]])
    for x, y in pts.astype(int):
        img[y - 1:y + 2, x - 1:x + 2] = 255

    def brightest(patch, boxes):  # a "predictor" that returns where the dots are in the patch
        found = []
        p = patch.astype(float).copy()
        for _ in range(3):
            y, x = np.unravel_index(np.argmax(p), p.shape)
            found.append([x, y])
            p[max(0, y - 4):y + 5, max(0, x - 4):x + 5] = 0
        return [np.array(found, float)]

    out = upright_landmarks(brightest, img, np.array([70.0, 60.0, 170.0, 160.0]), np.radians(25))
    d = np.linalg.norm(out[:, None] - pts[None], axis=-1).min(1)
    assert d.max() < 1.6


def test_window_smoothing_is_lag_free_and_cuts_jitter():
    from fml_taichi.eval.video_metrics import jitter_deg, lag_frames
    from fml_taichi.recon.window_smoothing import smooth_track

    t = np.arange(300.0)
    truth = np.stack([0.3 * np.sin(2 * np.pi * t / 110), 0.6 * np.sin(2 * np.pi * t / 150), 0.1 * np.cos(t / 20)], 1)
    noisy = truth + np.random.default_rng(0).normal(0, np.radians(0.7), truth.shape)
    s = smooth_track(noisy, 8, 8)
    assert jitter_deg(noisy, truth) > 3 * jitter_deg(s, truth)
    assert abs(lag_frames(s, truth)) < 0.3
    quad = 0.01 * t ** 2 - 0.5 * t + 3
    np.testing.assert_allclose(smooth_track(quad, 8, 2)[1:], quad[1:], atol=1e-6)  # exact from 4 samples on
    assert lag_frames(np.roll(truth, 3, 0)[10:], truth[10:]) == pytest.approx(3.0, abs=0.2)  # the metric


@pytest.fixture(scope="module")
def clip(tmp_path_factory, face_model):
    from fml_taichi.data.synthetic_clip import ClipConfig, write_clip

    d = tmp_path_factory.mktemp("clip")
    cfg = ClipConfig(frames=12, width=192, height=144, face_px=80, focal_px=240, roll_deg=20, yaw_deg=25, batch=6)
    truth = write_clip(str(d / "clip.mp4"), cfg, face_model)
    np.savez(d / "clip.landmarks.npz", landmarks=truth.landmarks)
    return d / "clip.mp4", truth, cfg


def test_clip_truth_matches_the_rendering(clip, face_model):
    path, truth, cfg = clip
    frames = _frames(path)
    assert len(frames) == cfg.frames and frames[0].shape == (cfg.height, cfg.width, 3)
    for t in range(cfg.frames):
        x0, y0, x1, y1 = truth.mask_box[t]
        inner = truth.landmarks[t, 17:][truth.visible[t, 17:]]
        assert len(inner) > 40
        assert (inner[:, 0] >= x0 - 1).all() and (inner[:, 0] <= x1).all()  # landmarks on the rendered face
        assert (inner[:, 1] >= y0 - 1).all() and (inner[:, 1] <= y1).all()
        # the true pose puts the mean face's inner landmarks where the rendered ones are (identity,
        # expression and variation move them by a few px)
        proj = _project(mean_landmarks_3d(face_model)[17:], truth.rotation[t], truth.translation[t], truth.intrinsics)
        iod = np.linalg.norm(truth.landmarks[t, 36] - truth.landmarks[t, 45])
        assert np.median(np.linalg.norm(proj - truth.landmarks[t, 17:], axis=1)) < 0.15 * iod
    assert np.degrees(np.ptp(truth.rotation[:, 1])) > 5  # it turns
    noise = np.linalg.norm(truth.noisy_landmarks - truth.landmarks, axis=-1)
    assert 0.5 < np.median(noise) < 5


def test_stream_writes_csv_npz_overlay_and_every(clip, checkpoint, tmp_path):
    from fml_taichi.apps.cli import main

    path, truth, cfg = clip
    out = tmp_path / "out"
    code = main(["reconstruct", str(path), "--out", str(out), "--detector", "pts", "--every", "2", "--focal-px",
                 str(cfg.focal_px), "--checkpoint", checkpoint, "--smooth-frames", "2", "--quiet"])
    assert code == 0
    rec = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert rec["status"] == "ok" and rec["frames"] == cfg.frames // 2 and rec["face_ids"] == [0]
    with open(out / "clip.params.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == ("frame", "time_s", "face_id", "rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm",
                              "detector_score", "fit_nme")
    body = rows[1:]
    frames = [int(r[0]) for r in body]
    assert frames == list(range(0, cfg.frames, 2))
    assert [float(r[1]) for r in body] == pytest.approx([f / cfg.fps for f in frames], abs=1e-3)
    rz = np.array([float(r[5]) for r in body])
    np.testing.assert_allclose(rz, np.degrees(truth.rotation[frames, 2]), atol=2.0)  # exact landmarks: close
    tz = np.array([float(r[8]) for r in body])
    np.testing.assert_allclose(tz, truth.translation[frames, 2], rtol=0.05)
    assert body[0][9] == "inf" or float(body[0][9]) > 0  # detected on the first frame
    assert all(r[9] == "" for r in body[1:])  # tracked afterwards: no detector score
    z = np.load(out / "clip.params.npz")
    n = len(frames)
    assert z["rotation"].shape == (n, 3) and z["rotation_raw"].shape == (n, 3)
    assert z["landmarks"].shape == (n, 68, 2) and z["fit_landmarks"].shape == (n, 68, 2)
    assert int(z["every"]) == 2 and list(z["frame"]) == frames and z["detected"][0] and not z["detected"][1:].any()
    assert z["param_rotation"].shape == (n, 3) and (z["encoder_frame"] == 0).all()  # encoder on the track's 1st frame
    np.testing.assert_allclose(np.degrees(z["rotation"][:, 2]), rz, atol=2e-3)
    cap = cv2.VideoCapture(str(out / "clip.overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == n
    assert (out / "clip.track.png").stat().st_size > 1000


class FakeCapture:
    """A camera stand-in: the given BGR frames, then end of stream; no fps reported."""

    def __init__(self, frames):
        self.frames, self.released = list(frames), False

    def isOpened(self):
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def test_camera_input_via_a_fake_capture_has_no_window_without_display(clip, checkpoint, tmp_path, monkeypatch):
    from fml_taichi.apps.cli import main
    from fml_taichi.recon import stream

    path, truth, cfg = clip
    ann = tmp_path / "camera0.landmarks.npz"
    np.savez(ann, landmarks=truth.landmarks)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("a window without a display"))
    fakes, frames = [], _frames(path)

    def fake_video_capture(source, *a):
        assert source == 0
        fakes.append(FakeCapture(frames))
        return fakes[-1]

    monkeypatch.setattr(stream.cv2, "VideoCapture", fake_video_capture)
    from fml_taichi.recon.pipeline import FacePipeline
    from fml_taichi.recon.tracking import AnnotatedLandmarks

    pipe = FacePipeline.from_checkpoint(checkpoint, detector="pts", runner="torch")
    info = stream.reconstruct_stream(pipe, 0, str(tmp_path / "cam"), "camera0", focal_px=cfg.focal_px, overlay="mesh",
                                     landmark_source=AnnotatedLandmarks(ann))
    assert fakes and fakes[0].released
    assert info["frames"] == cfg.frames and info["source"] == "camera 0"
    z = np.load(tmp_path / "cam" / "camera0.params.npz")
    assert int(z["smooth_ahead"]) == stream.CAMERA_LOOKAHEAD  # live: short look-ahead
    assert np.all(np.diff(z["time_s"]) > 0) and float(z["fps"]) == 30.0  # wall-clock times, default rate
    # the CLI's --camera path reaches the same capture (no annotation for dlib here: it reports the error)
    code = main(["reconstruct", "--camera", "0", "--out", str(tmp_path / "cli"), "--checkpoint", checkpoint,
                 "--detector", "pts", "--quiet"])
    assert code == 1
    rec = json.loads((tmp_path / "cli" / "summary.json").read_text())["inputs"][0]
    assert rec["kind"] == "stream" and "landmark file" in rec["error"]


@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1])
def test_dlib_landmarks_in_boxes_match_detection():
    from reconstruct_fixtures import paste, synthetic_faces

    from fml_taichi.data.detect import DlibDetector

    faces = synthetic_faces((3, 5, 7))
    img = (paste(faces["image"][:3], [(0, 0), (240, 0), (0, 240)], size=(480, 480)) * 255).astype(np.uint8)
    det = DlibDetector()
    found = det(img)
    assert found
    for d in found:
        (lm,) = det.landmarks_in_boxes(img, [d.box])
        np.testing.assert_allclose(lm, d.landmarks, atol=0.5)
