"""FacePipeline with an ``image+start`` encoder (the start's z in, residuals and correctives out), the split
encoder (backbone graph + numpy heads) against torch, and the ONNX graphs' cache."""
import glob

import numpy as np
import pytest
import torch

from reconstruct_fixtures import mean_landmarks, onnx_ready, paste, synthetic_faces, write_tiny_checkpoint

RUNNERS = ["torch"] + (["onnxruntime"] if onnx_ready() else [])
SEED = 10_000_031


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "start.pt", encoder_input="image+start")


@pytest.fixture(scope="module")
def zero_start_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "zero.pt", encoder_input="image+start", head_std=0.0)


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "image.pt")


@pytest.fixture(scope="module")
def photo():
    """A synthetic face rolled by 25 degrees (the aligned crop's camera then differs from the crop's)
    pasted into a larger frame, with its landmarks in the frame."""
    import cv2

    faces = synthetic_faces((SEED,))
    face, lm = faces["image"][0], faces["landmarks"][0].astype(np.float64)
    rot = cv2.getRotationMatrix2D((120.0, 120.0), 25.0, 1.0)
    face = cv2.warpAffine(face, rot, (240, 240), borderMode=cv2.BORDER_REPLICATE)
    lm = lm @ rot[:, :2].T + rot[:, 2]
    frame = paste(face[None], [(70, 40)], size=(330, 400))
    return frame, (lm + np.array([70.0, 40.0])).astype(np.float32)


def _detector(points):
    from fml_taichi.data.detect import PtsFileDetector

    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer

    def detect(image, path=None):
        return [scorer.detection(np.r_[points.min(0), points.max(0)], points, float("inf"), "given")]
    return detect


def _pipe(checkpoint, points, runner, monkeypatch=None, tmp_path=None, **kw):
    from fml_taichi.recon.pipeline import FacePipeline

    if monkeypatch is not None:
        monkeypatch.setenv("FML_TAICHI_CACHE", str(tmp_path))
    return FacePipeline.from_checkpoint(checkpoint, detector=_detector(points), runner=runner, **kw)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("overlap", [True, False])
def test_start_encoder_matches_training_preparation(start_checkpoint, photo, runner, overlap, monkeypatch, tmp_path):
    """The pipeline gives an image+start encoder exactly what EncoderInputPreparer gives it in training:
    the same aligned crop, the start fitted on it in its camera, and moves the result back."""
    from fml_taichi.recon.anchored import EncoderInputPreparer, reconstruct_prepared

    frame, pts = photo
    pipe = _pipe(start_checkpoint, pts, runner, monkeypatch, tmp_path)
    pipe.overlap_encoder = overlap
    r = pipe(frame)[0]
    prep = EncoderInputPreparer.for_encoder(pipe.face_model, pipe.reconstructor.encoder, align=True)
    k_img = r.crop_box.image_intrinsics(r.crop_intrinsics, pipe.size)
    inputs = prep(frame[None], pts[None], k_img[None])
    assert abs(float(inputs.angle[0])) > 0.3  # the roll is removed: the two cameras differ
    ref, out = reconstruct_prepared(pipe.reconstructor.model, inputs)
    for name in ("shape", "expression", "reflectance", "delta_geometry", "delta_reflectance", "rotation",
                 "translation", "light"):
        np.testing.assert_allclose(getattr(r.params, name).numpy(), getattr(ref, name).numpy(), atol=1e-4, rtol=1e-4,
                                   err_msg=name)
    assert float(r.params.delta_geometry.abs().max()) > 1e-3  # the random heads act (the check has teeth)
    np.testing.assert_allclose(r.output.final_geometry.numpy(), out.final_geometry.numpy(), atol=2e-3)  # mm
    np.testing.assert_allclose(r.output.final_reflectance.numpy(), out.final_reflectance.numpy(), atol=1e-4)
    assert {"landmark_fit", "colour_fit", "encoder", "encoder_wait", "heads", "model"} <= set(pipe.last_timings)


@pytest.mark.parametrize("runner", RUNNERS)
def test_untrained_start_encoder_returns_the_start(zero_start_checkpoint, photo, runner, monkeypatch, tmp_path):
    from fml_taichi.recon.align import align_face
    from fml_taichi.recon.anchored import rotate_camera

    frame, pts = photo
    pipe = _pipe(zero_start_checkpoint, pts, runner, monkeypatch, tmp_path)
    r = pipe(frame)[0]
    st = pipe.last_start.params  # fitted in the aligned crop's camera
    k_img = r.crop_box.image_intrinsics(r.crop_intrinsics, pipe.size)
    angle = align_face(pts, k_img, pipe.start.template, pipe.size).angle
    back = rotate_camera(st, torch.tensor([-angle], dtype=st.rotation.dtype))
    for name in ("shape", "expression", "reflectance", "rotation", "translation", "light"):
        np.testing.assert_allclose(getattr(r.params, name).numpy(), getattr(back, name).numpy(), atol=1e-4, rtol=1e-4,
                                   err_msg=name)
    assert float(r.params.delta_geometry.abs().max()) == 0.0 and float(r.params.delta_reflectance.abs().max()) == 0.0
    # Back in the crop camera the start explains the detected landmarks (the roll did not leak).
    from fml_taichi.losses.metrics import landmark_nme

    assert landmark_nme(r.landmarks_2d, pts)[0] < 0.05
    assert abs(abs(np.degrees(r.params.rotation[0, 2].item())) - 25.0) < 8.0  # the photo's roll


def test_start_encoder_needs_the_landmark_start(start_checkpoint, photo):
    frame, pts = photo
    with pytest.raises(ValueError, match="image\\+start"):
        _pipe(start_checkpoint, pts, "torch", init="encoder")


@pytest.mark.skipif(not onnx_ready(), reason="onnxruntime / onnx not installed (pip install onnxruntime onnx)")
@pytest.mark.parametrize("which", ["image", "image+start"])
def test_split_encoder_matches_torch(which, start_checkpoint, image_checkpoint, monkeypatch, tmp_path):
    """Backbone graph (ONNX) + numpy heads == the torch encoder's forward, for both encoder inputs."""
    from fml_taichi.recon.reconstructor import Reconstructor
    from fml_taichi.recon.runners import OnnxRunner, TorchRunner

    monkeypatch.setenv("FML_TAICHI_CACHE", str(tmp_path))
    rec = Reconstructor.from_checkpoint(start_checkpoint if which == "image+start" else image_checkpoint)
    enc = rec.encoder
    crops = torch.from_numpy(synthetic_faces((SEED, SEED + 1))["image"].copy())
    g = torch.Generator().manual_seed(3)
    z_start = torch.randn(2, enc.codec.layout.n_base, generator=g) if enc.takes_start else None
    with torch.no_grad():
        ref = enc.forward_flat(crops.permute(0, 3, 1, 2), z_start).numpy()
    onnx = OnnxRunner(enc, rec.multilevel, graphs=("features",))
    torch_runner = TorchRunner(enc, rec.multilevel)
    f_o, f_t = onnx.features(crops), torch_runner.features(crops)
    np.testing.assert_allclose(f_o, f_t, atol=1e-4, rtol=1e-4)
    assert np.abs(f_t[0] - f_t[1]).max() > 1e-3  # features depend on the image
    zs = None if z_start is None else z_start.numpy()
    np.testing.assert_allclose(onnx.heads.flat(f_o, zs), ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(torch_runner.heads.flat(f_t, zs), ref, atol=1e-5, rtol=1e-5)
    z_g, z_r = onnx.heads.correctives(f_o, zs)
    lay = enc.codec.layout.slices()
    np.testing.assert_allclose(z_g, ref[:, lay["delta_geometry"]], atol=1e-4)
    np.testing.assert_allclose(z_r, ref[:, lay["delta_reflectance"]], atol=1e-4)
    files = glob.glob(str(tmp_path / "onnx" / "*.onnx"))
    assert len(files) == 1  # the features graph, cached
    if not enc.takes_start:  # the image encoder's full graph gets its own cache entry
        onnx.session_for("model")
        assert len(glob.glob(str(tmp_path / "onnx" / "*.onnx"))) == 2
    with pytest.raises(ValueError, match="start"):
        onnx.heads.flat(f_o, None if zs is not None else np.zeros((2, enc.codec.layout.n_base), np.float32))


def test_image_encoder_correctives_on_the_start_match_the_full_graph(image_checkpoint, photo):
    """The landmark path with an image encoder: the split encoder's correctives are the ones the full
    encoder predicts on the aligned crop (what the path took before the split)."""
    from fml_taichi.recon.align import aligned_crop

    frame, pts = photo
    pipe = _pipe(image_checkpoint, pts, "torch")
    r = pipe(frame)[0]
    k_img = r.crop_box.image_intrinsics(r.crop_intrinsics, pipe.size)
    crop, _ = aligned_crop(frame, pts, k_img, pipe.start.template, pipe.size)
    with torch.no_grad():
        enc = pipe.reconstructor.encoder(torch.from_numpy(crop[None]).permute(0, 3, 1, 2))
    np.testing.assert_allclose(r.params.delta_geometry.numpy(), enc.delta_geometry.numpy(), atol=1e-5)
    np.testing.assert_allclose(r.params.delta_reflectance.numpy(), enc.delta_reflectance.numpy(), atol=1e-5)
    assert float(enc.delta_geometry.abs().max()) > 1e-3


def test_numpy_codec_and_camera_roll_match_torch(start_checkpoint):
    """The inference path's numpy twins: start_z (pack_base), unpack, rotate_camera."""
    from fml_taichi.model import FaceParams
    from fml_taichi.recon.anchored import rotate_camera, rotate_camera_np, start_z
    from fml_taichi.recon.reconstructor import Reconstructor
    from fml_taichi.recon.runners import EncoderHeads

    enc = Reconstructor.from_checkpoint(start_checkpoint).encoder
    heads, lay = EncoderHeads(enc), enc.codec.layout
    g = torch.Generator().manual_seed(5)
    p = enc.codec.unpack(torch.randn(3, lay.total, generator=g))
    np.testing.assert_allclose(heads.start_z(p), start_z(enc.codec, p).numpy(), atol=1e-6, rtol=1e-6)
    z = torch.randn(3, lay.total, generator=g)
    ref, got = enc.codec.unpack(z), heads.unpack(z.numpy())
    assert set(got) == set(FaceParams.names())
    for name in FaceParams.names():
        np.testing.assert_allclose(got[name], getattr(ref, name).numpy(), atol=1e-6, rtol=1e-6, err_msg=name)
    angle = torch.tensor([0.4, -1.1, 2.5])
    turned = rotate_camera(ref, angle)
    rot, trans, light = rotate_camera_np(got["rotation"], got["translation"], got["light"], angle.numpy())
    np.testing.assert_allclose(rot, turned.rotation.numpy(), atol=1e-5)
    np.testing.assert_allclose(trans, turned.translation.numpy(), atol=1e-4)
    np.testing.assert_allclose(light, turned.light.numpy(), atol=1e-5)
    assert np.abs(light - got["light"]).max() > 0.01  # the roll changes the light


@pytest.mark.parametrize("which", ["image", "image+start"])
def test_caller_takes_the_encoder_job_the_worker_never_started(which, start_checkpoint, image_checkpoint, photo):
    """A busy machine may not schedule the worker thread in time: the caller then runs the encoder's part
    itself, with the same result as the worker's."""
    frame, pts = photo
    pipe = _pipe(start_checkpoint if which == "image+start" else image_checkpoint, pts, "torch")
    ref = pipe(frame)[0]
    assert pipe.last_encoder_thread in ("worker", "caller")

    class Stalled:  # a pool whose worker never gets to the job
        def submit(self, fn, *a):
            self.fn = fn

    stalled = Stalled()
    pipe._pool = stalled
    r = pipe(frame)[0]
    assert pipe.last_encoder_thread == "caller"
    stalled.fn()  # the worker arriving late finds the job taken
    for name in ("shape", "rotation", "translation", "light", "delta_geometry", "delta_reflectance"):
        np.testing.assert_allclose(getattr(r.params, name).numpy(), getattr(ref.params, name).numpy(), atol=1e-6)


def test_overlap_chooser_keeps_the_faster_way_and_keeps_checking():
    from fml_taichi.recon.pipeline import OverlapChooser

    ch = OverlapChooser(window=5, explore=10, min_samples=2)
    cost = {True: 0.010, False: 0.004}  # a busy machine: the worker thread makes calls slower
    picks = []
    for _ in range(60):
        way = ch.choose()
        picks.append(way)
        ch.record(way, cost[way])
    assert picks[:4] == [True, True, False, False]  # both ways measured first
    assert picks[4:].count(False) >= 50 and True in picks[4:]  # serial kept, overlap re-tried now and then
    cost = {True: 0.002, False: 0.004}  # the machine frees up
    for _ in range(40):
        way = ch.choose()
        ch.record(way, cost[way])
    assert ch.preferred() is True


def test_numpy_sliding_jaw_matches_the_loss_kernel(image_checkpoint, photo):
    """landmarks_in_image's numpy contour choice = losses.terms.landmark_vertices (the Taichi kernel)
    over many poses and detected points, and its projection = the reference projection."""
    from fml_taichi.losses.terms import landmark_vertices
    from fml_taichi.recon.pipeline import landmarks_in_image, sliding_jaw_vertices
    from fml_taichi.reference.image_formation import euler_to_matrix, project

    frame, pts = photo
    pipe = _pipe(image_checkpoint, pts, "torch")
    r = pipe(frame)[0]
    g = torch.Generator().manual_seed(7)
    b = 12
    geo = r.output.final_geometry.expand(b, -1, -1).contiguous()
    p = r.params
    rot = p.rotation.expand(b, -1) + torch.randn(b, 3, generator=g) * torch.tensor([0.2, 0.8, 0.3])
    trans = p.translation.expand(b, -1).contiguous()
    det = torch.from_numpy(r.detected_landmarks_crop)[None].expand(b, -1, -1) + torch.randn(b, 68, 2, generator=g) * 4
    k = torch.from_numpy(r.crop_intrinsics).float()
    params = _params_like(p, b, rotation=rot, translation=trans)
    ref = landmark_vertices(geo, params, pipe.face_model, det.contiguous(), k, sliding=True).numpy()
    got = sliding_jaw_vertices(geo.numpy(), euler_to_matrix(rot).numpy(), trans.numpy(), k.numpy()[None].repeat(b, 0),
                               det.numpy(), pipe.face_model)
    np.testing.assert_array_equal(got, ref)
    assert len({tuple(row[:17]) for row in got}) > 3  # the poses move the jaw points (the check has teeth)
    lm, idx = landmarks_in_image(r.output, r.params, pipe.face_model, r.detected_landmarks_crop[None], r.crop_intrinsics,
                                 r.crop_box, pipe.size)
    v = torch.gather(r.output.final_geometry, 1, torch.from_numpy(idx).unsqueeze(-1).expand(-1, -1, 3))
    v_cam = v @ euler_to_matrix(r.params.rotation).transpose(1, 2) + r.params.translation[:, None]
    uv = project(v_cam, k).numpy()
    np.testing.assert_allclose(lm, r.crop_box.to_image(uv, pipe.size), atol=1e-3)


def _params_like(p, b, **changes):
    from fml_taichi.model import FaceParams

    fields = {n: getattr(p, n).expand(b, *getattr(p, n).shape[1:]).contiguous() for n in FaceParams.names()}
    fields.update(changes)
    return FaceParams(**fields)
