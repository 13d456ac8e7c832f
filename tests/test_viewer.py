"""The GGUI viewer, headless: real pixels from a hidden GGUI window (software Vulkan in CI).

Where GGUI cannot start (no Vulkan driver) these tests skip with the viewer's own message, which
names the packages to install; CI installs them, so there they run.
"""
import numpy as np
import pytest
import torch

from fml_taichi.viewer.modes import SIGMA_FROM_FACES
from fml_taichi.viewer.demo_model import demo_multilevel
from fml_taichi.viewer.scene import DEFAULT_LIGHT, FaceScene
from fml_taichi.viewer.strips import mode_state
from fml_taichi.viewer.ggui import GGUIRenderer, ViewerApp, default_focal, ggui_status
from fml_taichi.io.images import load_image
from fml_taichi.ops.rasterize import rasterize, shade_image
from fml_taichi.model import FaceParams, default_face_model

W, H = 160, 128  # non-square on purpose: checks GGUI's vertical field of view and centring
N_VERTICES = 5000
BACKGROUND = (1.0, 1.0, 1.0)
Q = 2.5 / 255  # 8-bit quantisation of GGUI's framebuffer, plus rounding


@pytest.fixture(scope="module")
def ggui():
    ok, reason = ggui_status()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def face_model():
    return default_face_model(n_vertices=N_VERTICES)


@pytest.fixture(scope="module")
def scene(face_model):
    return FaceScene(face_model, demo_multilevel(face_model))


@pytest.fixture(scope="module")
def renderer(ggui, scene):
    # A wider view than training's crop (0.6 x its focal length), so the whole head is in the image.
    r = GGUIRenderer(scene.triangles, scene.face_model.n_vertices, W, H, focal_px=0.6 * default_focal(H),
                     background=BACKGROUND)
    yield r
    r.close()


def _render(renderer, scene, state, with_mask=False):
    return renderer.render(scene.frame(state), with_mask=with_mask)


def _raster(renderer, scene, state):
    frame = scene.frame(state)
    ras = rasterize(frame.v_cam[None].contiguous(), scene.triangles, renderer.intrinsics, H, W)
    return ras, shade_image(ras, scene.triangles, frame.colours[None])[0].numpy()


def _project(renderer, v_cam):
    fx, fy, cx, cy = renderer.intrinsics.tolist()
    return np.stack([fx * v_cam[:, 0] / v_cam[:, 2] + cx, fy * v_cam[:, 1] / v_cam[:, 2] + cy], -1)


def test_face_covers_the_projected_region_with_our_colours(renderer, scene):
    state = scene.initial_state()
    out = _render(renderer, scene, state, with_mask=True)
    ras, ours = _raster(renderer, scene, state)
    mask = ras.mask[0].numpy()
    # Coverage: GGUI's camera is our pinhole (same silhouette as the project's rasteriser).
    iou = (out.mask & mask).sum() / (out.mask | mask).sum()
    assert iou > 0.99, iou
    assert 0.15 < out.mask.mean() < 0.9  # a face, not a speck or the whole frame
    # The silhouette's bounding box is the projected vertices' (the whole face is in view).
    ys, xs = np.nonzero(out.mask)
    uv = _project(renderer, scene.frame(state).v_cam.numpy())
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < W - 1 and ys.max() < H - 1
    np.testing.assert_allclose([xs.min(), ys.min()], uv.min(0), atol=1.5)
    np.testing.assert_allclose([xs.max(), ys.max()], uv.max(0), atol=1.5)
    # Colours: ambient 1, no GGUI lights -> the pixels are our SH-shaded vertex colours, interpolated.
    both = out.mask & mask
    assert np.abs(out.image - ours)[both].max() <= Q
    np.testing.assert_allclose(out.image[~out.mask], np.broadcast_to(BACKGROUND, out.image[~out.mask].shape), atol=Q)


def _frontal_pixel(renderer, scene, state):
    """(row, col) of the vertex whose camera-space normal faces the camera most directly."""
    frame = scene.frame(state)
    i = int(frame.normals[:, 2].argmin())  # most negative z: toward the camera (OpenCV frame)
    u, v = _project(renderer, frame.v_cam.numpy()[i:i + 1])[0]
    return int(round(v)), int(round(u))


def test_views_show_what_they_say(renderer, scene):
    state = scene.initial_state()
    imgs = {}
    for view in ("shaded", "reflectance", "shading", "normals"):
        state.view = view
        imgs[view] = _render(renderer, scene, state).image
    c = _frontal_pixel(renderer, scene, state)
    refl = scene.face_model.mean_reflectance.mean(0).numpy()
    np.testing.assert_allclose(imgs["reflectance"][c], refl, atol=0.03)  # flat mean albedo
    grey = imgs["shading"][c]
    assert np.ptp(grey) <= Q and 0.8 < grey[0] < 0.95  # white reflectance, white light: grey, ~0.9 facing the light
    # Shaded = reflectance x shading (Eq. 5), pixel by pixel up to quantisation and interpolation.
    np.testing.assert_allclose(imgs["shaded"][c], imgs["reflectance"][c] * imgs["shading"][c], atol=0.02)
    # A normal facing the camera is light blue in the normals view.
    np.testing.assert_allclose(imgs["normals"][c], (0.5, 0.5, 1.0), atol=0.1)


def test_corrective_view_colours_the_offset_along_the_normal(scene):
    # Per-vertex colours (no window needed): +3 sigma along geometry mode 1 pushes the surface out
    # on average (sign convention), so the vertex pushed out most is red and the one pushed in most
    # (if any) blue; with no corrective the view is the grey shading.
    state = scene.initial_state()
    state.view = "corrective"
    grey = scene.frame(state).colours
    torch.testing.assert_close(grey[:, 0], grey[:, 2])
    state.geometry_modes[0] = 3.0
    frame = scene.frame(state)
    geo, _, corr = scene.evaluate(state)
    along = (corr * frame.normals).sum(-1)  # rotation 0: model and camera axes agree
    assert float(along.sum()) > 0
    out, inward = int(along.argmax()), int(along.argmin())
    assert frame.colours[out, 0] > frame.colours[out, 2] + 0.3
    if along[inward] < -1.0:
        assert frame.colours[inward, 2] > frame.colours[inward, 0] + 0.1


def test_moving_a_corrective_mode_changes_the_image_where_the_mode_acts(renderer, scene):
    for kind, view in (("geometry", "shading"), ("reflectance", "reflectance")):
        base = _render(renderer, scene, mode_state(scene, kind, 0, 0.0, view)).image
        plus = _render(renderer, scene, mode_state(scene, kind, 0, 3.0, view)).image
        minus = _render(renderer, scene, mode_state(scene, kind, 0, -3.0, view)).image
        diff = np.abs(plus - base).sum(-1)
        assert diff.max() > 0.1, kind
        # The change sits where the mode's offset is largest (projected), not somewhere random.
        modes = scene.modes(kind)
        frame = scene.frame(scene.initial_state())
        strong = modes.modes[0].norm(dim=1) > 0.5 * modes.modes[0].norm(dim=1).max()
        uv = _project(renderer, frame.v_cam.numpy()[strong.numpy()]).mean(0)
        ys, xs = np.nonzero(diff > 0.5 * diff.max())
        assert np.hypot(xs.mean() - uv[0], ys.mean() - uv[1]) < 15, kind
        if kind == "reflectance":
            # Reflectance enters linearly and the view is unshaded: -3 sigma mirrors +3 sigma.
            np.testing.assert_allclose(plus - base, base - minus, atol=2 * Q)


def test_base_and_final_differ_only_when_correctives_are_nonzero(renderer, scene, face_model):
    state = scene.initial_state()
    state.final = False
    base = _render(renderer, scene, state).image
    state.final = True
    final_zero = _render(renderer, scene, state).image
    np.testing.assert_array_equal(base, final_zero)  # start face has delta = 0: no correction
    state.geometry_modes[1] = 2.0
    state.reflectance_modes[0] = -2.0
    final = _render(renderer, scene, state).image
    state.final = False
    base_again = _render(renderer, scene, state).image
    np.testing.assert_array_equal(base, base_again)  # corrective sliders do not touch the base level
    assert np.abs(final - base).max() > 0.1
    # A model without correctives: the toggle changes nothing.
    plain = FaceScene(face_model)
    assert plain.geometry_modes is None and plain.reflectance_modes is None
    st = plain.initial_state()
    a = _render(renderer, plain, st).image
    st.final = False
    np.testing.assert_array_equal(a, _render(renderer, plain, st).image)


def test_start_face_sets_pose_and_light(renderer, scene, face_model):
    fm = face_model

    def start_at(light_scale):
        p = FaceParams.zeros(1, fm.m_shape, fm.m_expression, fm.m_reflectance, scene.n_geometry, scene.n_reflectance)
        p.translation[0] = torch.tensor([30.0, 0.0, 700.0])
        p.light[0] = DEFAULT_LIGHT * light_scale
        moved = FaceScene(fm, scene.multilevel, start=p)
        return _render(renderer, moved, moved.initial_state(), with_mask=True)

    near = _render(renderer, scene, scene.initial_state(), with_mask=True)
    far, dim = start_at(1.0), start_at(0.5)
    # 700 mm instead of 500 mm: (5/7)^2 of the area; 30 mm to the right is f * 30 / 700 ~ 8 px.
    assert abs(far.mask.sum() / near.mask.sum() - (500 / 700) ** 2) < 0.05
    shift = np.nonzero(far.mask)[1].mean() - np.nonzero(near.mask)[1].mean()
    assert 5 < shift < 12, shift
    # Half the light: half the shaded colour at every covered pixel (Eq. 5 is linear in gamma).
    np.testing.assert_array_equal(far.mask, dim.mask)
    np.testing.assert_allclose(dim.image[dim.mask], 0.5 * far.image[far.mask], atol=Q)


def test_orbit_turns_the_face(renderer, scene):
    state = scene.initial_state()
    front = _render(renderer, scene, state, with_mask=True)
    state.yaw = 0.6
    side = _render(renderer, scene, state, with_mask=True)
    assert (front.mask ^ side.mask).mean() > 0.05
    assert side.mask.mean() > 0.2  # still on screen: the face turns about its own origin


def test_regressed_faces_set_the_sigmas(face_model):
    ml = demo_multilevel(face_model)
    g = torch.Generator().manual_seed(0)
    n = 40
    reg = FaceParams.zeros(n, face_model.m_shape, face_model.m_expression, face_model.m_reflectance, 10, 10)
    reg.delta_geometry = torch.randn(n, 10, generator=g) * torch.linspace(0.1, 2.0, 10)
    reg.delta_reflectance = torch.randn(n, 10, generator=g)
    sc = FaceScene(face_model, ml, regressed=reg)
    m = sc.modes("geometry")
    assert m.sigma_source == SIGMA_FROM_FACES
    proj = (reg.delta_geometry - reg.delta_geometry.mean(0)) @ m.coefficient_directions
    torch.testing.assert_close(m.sigma, proj.std(0), rtol=1e-4, atol=1e-6)


def test_viewer_app_keys_controls_and_screenshot(renderer, scene, tmp_path):
    app = ViewerApp(scene, renderer, screenshot_dir=str(tmp_path))
    app.draw_frame()  # controls + face in the hidden window (GUI code path)
    renderer.read_image()
    app.handle_key("b")
    assert app.state.final is False
    app.handle_key("4")
    assert app.state.view == "normals"
    app.state.geometry_modes[0] = 1.5
    path = app.screenshot()
    shot = load_image(path)
    expect = _render(renderer, scene, app.state).image
    np.testing.assert_allclose(shot, expect, atol=1.0 / 255)
    app.handle_key("r")
    assert app.state.final and app.state.view == "shaded" and not app.state.geometry_modes.any()
    with pytest.raises(RuntimeError, match="visible window"):
        app.step()


def test_bad_state_is_named(scene):
    state = scene.initial_state()
    state.view = "xray"
    with pytest.raises(ValueError, match="state.view"):
        scene.frame(state)
    state = scene.initial_state()
    state.light = np.zeros((9, 2), np.float32)
    with pytest.raises(ValueError, match="state.light"):
        scene.params(state)
    state = scene.initial_state()
    state.shape = np.zeros(scene.face_model.m_shape + 1, np.float32)
    with pytest.raises(ValueError, match="state.shape"):
        scene.params(state)
    with pytest.raises(ValueError, match="kind"):
        scene.modes("texture")


def test_renderer_rejects_bad_frames(renderer, scene):
    frame = scene.frame(scene.initial_state())
    frame.colours = frame.colours[:10]
    with pytest.raises(ValueError, match="frame.colours"):
        renderer.draw(frame)
    with pytest.raises(ValueError, match="width"):
        GGUIRenderer(scene.triangles, 10, 0, 10)
    # One live window per process (two crash taichi 1.7.4 at exit): a clear error instead.
    with pytest.raises(RuntimeError, match="another GGUI window is open"):
        GGUIRenderer(scene.triangles, 10, 32, 32)
