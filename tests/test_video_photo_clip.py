"""The photo-textured clip (a real photo on the model head, truth = the render pose) and the tracker's
robustness options: jaw weight, facing weights, a fixed identity, the rotation-step guard."""
import numpy as np
import pytest
import torch
from reconstruct_fixtures import dlib_ready
from tracking_fixtures import FakeDetection as _Det
from tracking_fixtures import K
from tracking_fixtures import project as _project

from fml_taichi.data.crop import mean_landmarks_3d
from fml_taichi.data.synthetic_clip import (
    ClipConfig,
    photo_background,
    render_clip,
    render_photo_head,
    write_clip,
)
from fml_taichi.model import default_face_model
from fml_taichi.recon.landmark_fit import LandmarkFitter
from fml_taichi.recon.tracking import (
    FaceTracker,
    TrackerConfig,
    facing_weight,
    identity_fitter,
)

needs_dlib = pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1])


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(2000)


@pytest.fixture(scope="module")
def head(face_model):
    from fml_taichi.eval.photo_head import default_photo, photo_head

    photo = default_photo()
    return photo, photo_head(photo, face_model)


@needs_dlib
def test_photo_head_rendered_at_the_photo_pose_looks_like_the_photo(head, face_model):
    photo, app = head
    assert app.fit_nme < 0.04  # dlib's points on the photo sit on the fitted mesh's landmarks
    assert 0.3 < float((app.seen > 0.5).float().mean()) < 0.9  # the far side and the back are not seen
    h, w = photo.shape[:2]
    rot = torch.tensor(app.photo_rotation, dtype=torch.float32)[None]
    fit = LandmarkFitter(face_model)(_landmarks(photo, face_model)[None], app.photo_intrinsics)
    trans = torch.tensor(fit.translation, dtype=torch.float32)
    bg = torch.zeros(1, 4, 4, 3)
    ren, img = render_photo_head(app, face_model, rot, trans, torch.tensor(app.photo_intrinsics, dtype=torch.float32),
                                 h, w, bg)
    img = img[0].numpy()
    seen = _seen_pixels(ren, app, face_model)
    assert seen.sum() > 2000
    ref = photo.astype(np.float32) / 255
    err = np.abs(img - ref)[seen].mean()
    assert err < 0.04, err  # the photo's own pixels come back (bilinear resampling only)
    # and a wrong texture would not: the same comparison against the photo shifted by 6 px
    assert np.abs(img - np.roll(ref, 6, axis=1))[seen].mean() > 2 * err


def _landmarks(photo, face_model):
    from fml_taichi.data.detect import DlibDetector

    return DlibDetector(landmarks_3d=mean_landmarks_3d(face_model))(photo)[0].landmarks


def _seen_pixels(ren, app, face_model):
    from fml_taichi.ops.rasterize import interpolate

    layer = interpolate(app.seen[None, :, None].expand(1, -1, 1).contiguous(), ren.raster, face_model.triangles)
    return (layer[0, ..., 0].numpy() > 0.95) & ren.raster.mask[0].numpy()


@needs_dlib
def test_photo_clip_truth_is_where_dlib_finds_the_face(head, face_model, tmp_path):
    from fml_taichi.data.detect import DlibDetector

    _, app = head
    cfg = ClipConfig(frames=6, width=320, height=240, face_px=110, focal_px=400, yaw_deg=20, roll_deg=15, batch=3,
                     appearance="photo", background="photo")
    truth = write_clip(str(tmp_path / "photo.mp4"), cfg, face_model, app)
    frames = list(render_clip(cfg, face_model, None, app))
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)
    det = DlibDetector(landmarks_3d=mean_landmarks_3d(face_model))
    for t in (0, 5):
        found = det(frames[t])
        assert len(found) == 1  # one face: the head, none in the background (the photo's face is cut out)
        iod = np.linalg.norm(truth.landmarks[t, 36] - truth.landmarks[t, 45])
        inner = np.linalg.norm(found[0].landmarks[17:] - truth.landmarks[t, 17:], axis=1).mean() / iod
        assert inner < 0.08, inner  # dlib's inner points on the true landmarks
        # the true pose puts the fitted identity's landmark vertices on the true landmarks
        lm3 = face_model.geometry(app.shape[None], app.expression[None] + torch.as_tensor(
            truth.expression[t:t + 1], dtype=torch.float32))[0, face_model.landmarks.long()].double().numpy()
        proj = _project(lm3[17:], truth.rotation[t], truth.translation[t], truth.intrinsics)
        assert np.median(np.linalg.norm(proj - truth.landmarks[t, 17:], axis=1)) < 0.02 * iod


def test_photo_clip_options_are_checked(face_model):
    with pytest.raises(ValueError, match="appearance"):
        ClipConfig(appearance="cartoon")
    with pytest.raises(ValueError, match="background"):
        ClipConfig(background="space")
    with pytest.raises(ValueError, match="PhotoAppearance"):
        next(render_clip(ClipConfig(frames=1, appearance="photo"), face_model))


def test_photo_background_cuts_out_the_face():
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[:, 80:120] = 255  # the "face" columns
    uv = torch.tensor([[85.0, 50.0], [115.0, 50.0]])
    bg = photo_background(photo, uv, torch.ones(2), 60, 80, margin=0.2)
    assert bg.shape == (1, 30, 40, 3)
    assert float(bg.max()) < 0.05  # no face pixel left


def test_facing_weight_drops_the_far_side_of_a_turned_face(face_model):
    fitter = LandmarkFitter(face_model)
    front = facing_weight(fitter, np.zeros(3), np.array([0.0, 0.0, 600.0]))
    turned = facing_weight(fitter, np.array([0.0, np.radians(60), 0.0]), np.array([0.0, 0.0, 600.0]))
    assert front.shape == (51,) and np.median(front) > 0.9
    # outer eye corners 36 / 45 (inner indices 19 / 28): one turns away, the other stays in view
    assert min(turned[19], turned[28]) < 0.5 < max(turned[19], turned[28])


def test_identity_fitter_keeps_the_shape_and_fits_the_pose(face_model):
    fitter = LandmarkFitter(face_model)
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(face_model.m_shape, generator=g) * face_model.shape_sigma
    lm3 = face_model.geometry(shape[None], torch.zeros(1, face_model.m_expression))[0, face_model.landmarks.long()]
    rot, trans = np.array([0.1, 0.3, -0.2]), np.array([10.0, -5.0, 650.0])
    lm = _project(lm3.double().numpy(), rot, trans)
    w = np.ones((1, 68))
    w[:, :17] = 0.0  # these points are the jaw's own vertices, not the silhouette the fit slides them to
    fixed = identity_fitter(fitter, shape.double().numpy())(lm[None], K, w)
    assert np.abs(fixed.shape).max() < 1e-3  # the shape does not move off the given one
    assert np.degrees(np.abs(fixed.rotation[0] - rot)).max() < 1.0
    assert abs(fixed.translation[0, 2] - trans[2]) < 0.02 * trans[2]


def test_tracker_fixes_the_identity_and_holds_through_a_bad_frame(face_model):
    lm3 = mean_landmarks_3d(face_model)
    state = {"t": 0, "detects": []}

    def landmarks(t):
        roll = 0.05 + (0.8 if t == 6 else 0.0)  # frame 6: the predictor's points turn 46 degrees at once
        return _project(lm3, [0.0, 0.01 * t, roll], np.array([2.0 * t, 0.0, 700.0]))

    def detect(image):
        state["detects"].append(state["t"])
        return [_Det(_project(lm3, [0.0, 0.01 * state["t"], 0.05], np.array([2.0 * state["t"], 0.0, 700.0])))]

    cfg = TrackerConfig(redetect_every=100, upright=False, identity_frames=3, max_step_deg=10, max_held=2)
    predict = lambda image, boxes: [landmarks(state["t"]) for _ in boxes]  # noqa: E731
    tracker = FaceTracker(detect, predict, LandmarkFitter(face_model), K, cfg)
    out = []
    for t in range(10):
        state["t"] = t
        out.append(tracker(np.zeros((240, 320), np.uint8)))
    assert all(len(f) == 1 and f[0].face_id == 0 for f in out)
    shapes = np.stack([f[0].shape for f in out])
    assert np.abs(shapes[:3] - shapes[3]).max() > 1e-3  # the first frames fit their own shapes
    assert np.abs(shapes[4:] - shapes[3]).max() < 1e-6  # then it is fixed (median of frames 0-2)
    assert 0 in tracker._identities
    # frame 6: the step guard rejected the jump and a detection re-anchored the track in the same frame
    assert state["detects"] == [0, 6]
    assert abs(np.degrees(out[6][0].rotation[2]) - np.degrees(0.05)) < 2.0
    assert abs(out[9][0].translation[0] - 18.0) < 2.0


def test_tracker_options_are_checked():
    with pytest.raises(ValueError, match="jaw_weight"):
        TrackerConfig(jaw_weight=1.5)
    with pytest.raises(ValueError, match="identity_frames"):
        TrackerConfig(identity_frames=-1)
