"""The GGUI viewer: a Taichi window showing the multi-level face model with live controls.

Three pieces, each usable alone:

* :func:`ggui_status` / :func:`require_ggui`: is GGUI usable here? GGUI needs a Vulkan device even to
  render off-screen. We probe it once per process in a *subprocess*, because a missing or broken
  driver can take the whole interpreter down (segfault) instead of raising.
* :class:`GGUIRenderer`: one window (visible or hidden) that draws a :class:`view_scene.Frame`.
* :class:`ViewerApp`: the interactive application (controls, keys, mouse orbit, screenshots).

Why GGUI's lighting is switched off (``ambient_light = 1``, no point lights): the colours we hand to
GGUI already are the paper's shaded colours (Eq. 5, SH irradiance on camera-space normals, computed by
the training kernels in ``view_scene``). GGUI's own Phong lights would shade them a second time, so
what you saw would not be what the photometric loss compares with the input image. With a unit
ambient term and no point lights GGUI's fragment colour is exactly the interpolated vertex colour
(checked to 1/255 in the tests). Per-vertex colours interpolated across triangles are also what our
rasteriser's ``shade_image`` does, so the two renderings agree pixel for pixel up to edge coverage.

GGUI's camera sits at the camera-space origin, looking along +z with up = -y: that is the OpenCV
frame of ``docs/conventions.md``, and with ``fov_y = 2 atan(H / 2 f)`` its projection is our pinhole
with the principal point at the image centre. Compute stays on the CPU (``runtime.init``); only
drawing uses Vulkan (llvmpipe, a software driver, in CI).
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..common import runtime
from ..common.camera import DEFAULT_FOCAL_PX, DEFAULT_IMAGE_SIZE
from ..io.images import write_png
from .modes import SIGMA_FROM_FACES
from .scene import VIEWS, FaceScene, Frame

#: The message (and fix) given wherever GGUI cannot start for lack of a Vulkan driver.
VULKAN_HINT = "GGUI needs a Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1"

_PROBE = """
import taichi as ti
ti.init(arch=ti.cpu, log_level=ti.ERROR)
w = ti.ui.Window("fml-taichi probe", (16, 16), show_window=False)
w.destroy()
print("GGUI_OK")
"""

#: The one live GGUIRenderer of this process, if any (see GGUIRenderer: one window at a time).
_OPEN: dict = {"renderer": None}

#: Near and far clipping planes of GGUI's camera, in mm (the face lies at ~300-2000 mm).
Z_NEAR_MM, Z_FAR_MM = 10.0, 20000.0


@functools.lru_cache(maxsize=1)
def ggui_status() -> tuple[bool, str]:
    """``(True, "")`` when a hidden GGUI window can be created here, else ``(False, reason)``.

    Runs a tiny probe in a subprocess once per process (~1 s). ``reason`` starts with
    :data:`VULKAN_HINT` and adds what the probe reported (its last error line or the signal).
    """
    env = dict(os.environ, TI_SKIP_VERSION_CHECK="ON", OMP_WAIT_POLICY="PASSIVE")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, f"{VULKAN_HINT} (the Vulkan probe hung for 120 s)"
    if proc.returncode == 0 and "GGUI_OK" in proc.stdout:
        return True, ""
    if proc.returncode < 0:
        detail = f"the probe was killed by signal {-proc.returncode}"
    else:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[Taichi]")]
        detail = lines[-1] if lines else f"the probe exited with status {proc.returncode}"
    return False, f"{VULKAN_HINT} ({detail})"


def require_ggui() -> None:
    """Raise ``RuntimeError`` with :data:`VULKAN_HINT` (and the probe's detail) if GGUI is unusable."""
    ok, reason = ggui_status()
    if not ok:
        raise RuntimeError(reason)


def require_display() -> None:
    """Raise ``RuntimeError`` if a visible window cannot be opened (no X11/Wayland display)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("no display to open a window on (DISPLAY is not set): use --headless --out DIR, "
                           "or run under xvfb-run")


def fov_degrees(height: int, focal_px: float) -> float:
    """GGUI's vertical field of view for a pinhole of focal length ``focal_px`` and ``height`` pixels."""
    return math.degrees(2.0 * math.atan(0.5 * height / focal_px))


def default_focal(height: int) -> float:
    """The project's default focal length (``camera.default_intrinsics``) scaled to ``height`` pixels."""
    return DEFAULT_FOCAL_PX * height / DEFAULT_IMAGE_SIZE


def intrinsics_for(width: int, height: int, focal_px: float) -> torch.Tensor:
    """``[fx, fy, cx, cy]`` of what :class:`GGUIRenderer` draws (square pixels, centred principal point)."""
    return torch.tensor([focal_px, focal_px, (width - 1) / 2.0, (height - 1) / 2.0])


@dataclass
class Rendered:
    """One rendered image: image [H, W, 3] float32 in [0, 1] (row 0 at the top) and mask [H, W] bool
    (pixels covered by the mesh; ``None`` when not requested)."""

    image: np.ndarray
    mask: np.ndarray


class GGUIRenderer:
    """A GGUI window (hidden unless ``visible``) that draws camera-space frames of one mesh.

    Args:
        triangles: [F, 3] int32 triangles of the mesh (counter-clockwise outside).
        n_vertices: N, the size of every frame drawn.
        width, height: image size in pixels.
        focal_px: focal length in pixels (default: the project default scaled to ``height``).
        visible: open a real window (needs a display); hidden windows render off-screen.
        background: RGB in [0, 1] where no triangle is drawn.

    Raises ``RuntimeError`` (:data:`VULKAN_HINT`) when GGUI cannot start, and when another renderer
    is still open: with taichi 1.7.4 two GGUI windows alive at the same time crash the interpreter at
    exit (segfault, even if both were destroyed), while windows opened one after the other are fine.
    So call :meth:`close` (or use it as a context manager) before opening the next one.
    """
    def __init__(self, triangles: torch.Tensor, n_vertices: int, width: int, height: int,
                 focal_px: float | None = None, visible: bool = False, background=(1.0, 1.0, 1.0),
                 title: str = "fml-taichi view"):
        for name, v in (("width", width), ("height", height), ("n_vertices", n_vertices)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not isinstance(triangles, torch.Tensor) or triangles.ndim != 2 or triangles.shape[1] != 3:
            got = getattr(triangles, "shape", triangles)
            raise ValueError(f"triangles: expected an (F, 3) int tensor, got {got!r}")
        self.width, self.height, self.n_vertices = width, height, n_vertices
        self.focal_px = float(focal_px) if focal_px is not None else default_focal(height)
        if not self.focal_px > 0:
            raise ValueError(f"focal_px: expected a positive focal length, got {focal_px!r}")
        self.background = tuple(float(c) for c in background)
        self.visible = bool(visible)
        self.window = None
        require_ggui()
        if visible:
            require_display()
        if _OPEN["renderer"] is not None:
            raise RuntimeError("another GGUI window is open in this process: close() it first (two live GGUI "
                               "windows crash the interpreter at exit, measured with taichi 1.7.4)")
        runtime.init()
        import taichi as ti

        self._ti = ti
        self.window = ti.ui.Window(title, (width, height), show_window=visible, vsync=visible)
        _OPEN["renderer"] = self
        self._vertices = ti.Vector.field(3, ti.f32, n_vertices)
        self._normals = ti.Vector.field(3, ti.f32, n_vertices)
        self._colours = ti.Vector.field(3, ti.f32, n_vertices)
        self._indices = ti.field(ti.i32, triangles.shape[0] * 3)
        self._indices.from_numpy(triangles.to(torch.int32).reshape(-1).numpy())
        self.camera = ti.ui.Camera()
        self.camera.position(0.0, 0.0, 0.0)
        self.camera.lookat(0.0, 0.0, 1.0)
        self.camera.up(0.0, -1.0, 0.0)  # y down: the OpenCV frame
        self.camera.fov(fov_degrees(height, self.focal_px))
        self.camera.z_near(Z_NEAR_MM)
        self.camera.z_far(Z_FAR_MM)

    @property
    def intrinsics(self) -> torch.Tensor:
        """``[fx, fy, cx, cy]`` of the pinhole this renderer draws with."""
        return intrinsics_for(self.width, self.height, self.focal_px)

    def draw(self, frame: Frame) -> None:
        """Upload ``frame`` and draw it into the window's canvas (not yet shown or read)."""
        for name in ("v_cam", "normals", "colours"):
            t = getattr(frame, name)
            if tuple(t.shape) != (self.n_vertices, 3):
                raise ValueError(f"frame.{name}: expected shape ({self.n_vertices}, 3), got {tuple(t.shape)}")
        self._vertices.from_numpy(frame.v_cam.detach().to(torch.float32).numpy())
        self._normals.from_numpy(frame.normals.detach().to(torch.float32).numpy())
        self._colours.from_numpy(frame.colours.detach().to(torch.float32).clamp(0, 1).numpy())
        scene = self.window.get_scene()
        scene.set_camera(self.camera)
        scene.ambient_light((1.0, 1.0, 1.0))  # and no point_light: see the module docstring
        # two_sided: the face is an open surface; looking into it from behind must not cull it away
        # (GGUI's winding convention is for its own y-up frame); the depth test resolves occlusion.
        scene.mesh(self._vertices, indices=self._indices, normals=self._normals, per_vertex_color=self._colours,
                   two_sided=True)
        canvas = self.window.get_canvas()
        canvas.set_background_color(self.background)
        canvas.scene(scene)

    def read_image(self) -> np.ndarray:
        """[H, W, 3] float32 image of the last :meth:`draw`, row 0 at the top.

        A drawn frame can be read back only once (image *or* depth: the read presents the frame),
        so :meth:`render` draws again for each buffer it needs.
        """
        buf = self.window.get_image_buffer_as_numpy()  # (W, H, 4), y = 0 at the bottom
        return np.ascontiguousarray(np.transpose(buf[:, :, :3], (1, 0, 2))[::-1]).astype(np.float32)

    def read_mask(self) -> np.ndarray:
        """[H, W] bool coverage of the last :meth:`draw` (from the depth buffer; reads the frame)."""
        # (W, H) depth in [0, 1]; the cleared value is 0 here (GGUI 1.7 uses reversed z: measured
        # ~0.02 for a face at 0.5 m), 1 with a conventional depth range: exclude both ends.
        d = np.transpose(self.window.get_depth_buffer_as_numpy(), (1, 0))[::-1]
        return np.ascontiguousarray((d > 0.0) & (d < 1.0))

    def render(self, frame: Frame, with_mask: bool = True) -> Rendered:
        """Draw ``frame`` and read it back: image and (if ``with_mask``, at the cost of a second draw)
        the coverage mask; without it the mask is ``None``."""
        mask = None
        if with_mask:
            self.draw(frame)
            mask = self.read_mask()
        self.draw(frame)
        return Rendered(image=self.read_image(), mask=mask)

    def close(self) -> None:
        """Destroy the window (idempotent); another renderer may be opened afterwards."""
        if getattr(self, "window", None) is not None:
            self.window.destroy()
            self.window = None
        if _OPEN["renderer"] is self:
            _OPEN["renderer"] = None

    def __enter__(self) -> "GGUIRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ViewerApp:
    """The interactive viewer: GGUI controls over a :class:`FaceScene`, drawn by a :class:`GGUIRenderer`.

    Controls (left panels): base shape / expression / reflectance modes and the learned geometry /
    reflectance corrective modes, all in sigma units; base/final toggle; view (shaded, reflectance,
    shading only, normals, geometry corrective along the normal); SH light (9 coefficients, each
    added equally to R, G, B so a coloured light keeps its tint); orbit yaw/pitch and distance;
    reset; screenshot.
    Keys: ``b`` base/final, ``1``-``5`` views, ``r`` reset, ``p`` screenshot, ``Esc`` quit;
    right mouse button + drag orbits.

    Screenshots are the face image without the control panels (rendered again, read back and
    written as PNG to ``screenshot_dir``).
    """
    KEYS_HELP = "keys: b base/final, 1-5 views, r reset\np screenshot, Esc quit, right-drag orbits"

    def __init__(self, scene: FaceScene, renderer: GGUIRenderer, screenshot_dir: str = ".", n_sliders: int = 6):
        self.scene = scene
        self.renderer = renderer
        self.window = renderer.window
        self.screenshot_dir = screenshot_dir
        self.n_sliders = int(n_sliders)
        self.state = scene.initial_state()
        self._frame_key = None
        self._frame: Frame | None = None
        self._last_cursor = None
        self.screenshots: list[str] = []

    # ---- state changes (also driven by tests) ------------------------------------------------------
    def reset(self) -> None:
        """Back to the start face, its light and pose, final level, shaded view."""
        self.state = self.scene.initial_state()

    def handle_key(self, key: str) -> None:
        """Apply one key press (see the class docstring); unknown keys are ignored."""
        ti = self.renderer._ti
        if key == "b":
            self.state.final = not self.state.final
        elif key in [str(i + 1) for i in range(len(VIEWS))]:
            self.state.view = VIEWS[int(key) - 1]
        elif key == "r":
            self.reset()
        elif key == "p":
            self.screenshot()
        elif key == ti.ui.ESCAPE:
            self.window.running = False

    def current_frame(self) -> Frame:
        """The frame of the current state, recomputed only when the state changed."""
        key = self.state.key()
        if key != self._frame_key:
            self._frame = self.scene.frame(self.state)
            self._frame_key = key
        return self._frame

    def screenshot(self) -> str:
        """Render the current state without the panels and write it as a PNG; returns the path."""

        name = f"fml-view-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.screenshots):03d}.png"
        path = os.path.join(self.screenshot_dir, name)
        write_png(path, self.renderer.render(self.current_frame(), with_mask=False).image)
        self.screenshots.append(path)
        print(f"screenshot: {path}", flush=True)
        return path

    # ---- one frame -------------------------------------------------------------------------------
    def step(self) -> None:
        """One frame of the visible window: handle input, then :meth:`draw_frame` and present it."""
        if not self.renderer.visible:
            # GGUI reads input only from visible windows, and show() on a hidden one crashes (measured).
            raise RuntimeError("ViewerApp.step needs a visible window; drive hidden ones with draw_frame()")
        ti = self.renderer._ti
        for e in self.window.get_events(ti.ui.PRESS):
            self.handle_key(e.key)
        self._orbit_with_mouse()
        self.draw_frame()
        self.window.show()

    def draw_frame(self) -> None:
        """Draw the controls (applying their changes to the state) and the face of the current state.

        Separate from :meth:`step` because GGUI reads keys and the mouse only from visible windows:
        hidden-window tests drive the app through :meth:`handle_key` and this method.
        """
        self.controls(self.window.get_gui())
        self.renderer.draw(self.current_frame())

    def run(self, max_frames: int = 0) -> int:
        """The event loop; returns 0 when the window is closed (or after ``max_frames`` > 0 frames)."""
        print(self.KEYS_HELP, flush=True)
        frames = 0
        while self.window.running and (max_frames <= 0 or frames < max_frames):
            self.step()
            frames += 1
        return 0

    def _orbit_with_mouse(self) -> None:
        ti = self.renderer._ti
        if not self.window.is_pressed(ti.ui.RMB):
            self._last_cursor = None
            return
        x, y = self.window.get_cursor_pos()  # [0, 1], y up
        if self._last_cursor is not None:
            dx, dy = x - self._last_cursor[0], y - self._last_cursor[1]
            # Dragging right turns the face's right side away; dragging up tips the chin forward.
            self.state.yaw = float(self.state.yaw - math.pi * dx)
            self.state.pitch = float(np.clip(self.state.pitch + math.pi * dy, -1.4, 1.4))
        self._last_cursor = (x, y)

    # ---- the panels ------------------------------------------------------------------------------
    def controls(self, gui) -> None:
        """Draw the three control panels and apply their changes to ``self.state``."""
        self._view_panel(gui)
        self._base_panel(gui)
        self._corrective_panel(gui)

    def _view_panel(self, gui) -> None:
        s = self.state
        with gui.sub_window("View", 0.0, 0.0, 0.3, 0.36) as w:
            w.text(self.KEYS_HELP)
            s.final = w.checkbox("final level (base + correctives)", s.final)
            for i, name in enumerate(VIEWS):
                if w.checkbox(f"{i + 1}: {name}", s.view == name) and s.view != name:
                    s.view = name
            s.yaw = math.radians(w.slider_float("yaw (deg)", math.degrees(s.yaw), -90.0, 90.0))
            s.pitch = math.radians(w.slider_float("pitch (deg)", math.degrees(s.pitch), -60.0, 60.0))
            s.distance = w.slider_float("distance (mm)", s.distance, 250.0, 2000.0)
            for b in range(9):
                # One slider per SH coefficient, moving R, G and B together (keeps a light's tint).
                mean = float(s.light[b].mean())
                new = w.slider_float(f"SH {b}", mean, -4.0, 4.0)
                if new != mean:
                    s.light[b] += new - mean
            if w.button("reset (r)"):
                self.reset()
            if w.button("screenshot (p)"):
                self.screenshot()

    def _base_panel(self, gui) -> None:
        s = self.state
        with gui.sub_window("Base model (sigma)", 0.0, 0.36, 0.3, 0.3) as w:
            for label, arr in (("shape", s.shape), ("expression", s.expression), ("reflectance", s.reflectance)):
                for k in range(min(self.n_sliders, arr.shape[0])):
                    arr[k] = w.slider_float(f"{label} {k + 1}", float(arr[k]), -3.0, 3.0)

    def _corrective_panel(self, gui) -> None:
        s = self.state
        with gui.sub_window("Corrective modes (sigma)", 0.0, 0.66, 0.3, 0.34) as w:
            if self.scene.geometry_modes is None and self.scene.reflectance_modes is None:
                w.text("no learned correctives (base model only)")
                return
            for kind, arr in (("geometry", s.geometry_modes), ("reflectance", s.reflectance_modes)):
                modes = self.scene.modes(kind)
                if modes is None:
                    continue
                from_faces = modes.sigma_source == SIGMA_FROM_FACES
                w.text(f"{kind} modes: sigma = " + ("regressed spread" if from_faces else "1 (no faces given)"))
                for k in range(min(self.n_sliders, arr.shape[0])):
                    arr[k] = w.slider_float(f"{kind} {k + 1}", float(arr[k]), -3.0, 3.0)


def run_interactive(scene: FaceScene, width: int = 1280, height: int = 800, screenshot_dir: str = ".",
                    n_sliders: int = 6, max_frames: int = 0) -> int:
    """Open the visible viewer window for ``scene`` and run until it is closed (or for ``max_frames``
    frames, for smoke tests); returns the exit code."""
    # 0.7 x the default focal length: the face (~75% of the image height at the default) then fits
    # beside the control panels, which cover the left 30% of the window.
    renderer = GGUIRenderer(scene.triangles, scene.face_model.n_vertices, width, height,
                            focal_px=0.7 * default_focal(height), visible=True)
    try:
        return ViewerApp(scene, renderer, screenshot_dir=screenshot_dir, n_sliders=n_sliders).run(max_frames)
    finally:
        renderer.close()
