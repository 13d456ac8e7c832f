"""A synthetic moving-face video with known pose, expression and landmarks in every frame.

For measuring video reconstruction against truth (``benchmarks/bench_video.py``): one identity from
:class:`~fml_taichi.data.synthetic.SyntheticRenderer` (shape, reflectance, SH light from
``draw_params``; out-of-space variation from :mod:`fml_taichi.data.variation`, whose brows, lips and
beards make the face detectable by dlib's HOG detector), moved along smooth trajectories:

* rotation: yaw ``yaw_deg sin(2 pi t / 150)``, roll ``roll_deg sin(2 pi t / 110 + 1)``, pitch
  ``pitch_deg sin(2 pi t / 90 + 2)`` (t in frames, periods chosen so the angles decorrelate);
* translation: the head centre sweeps ``shift_frac`` of the frame in x and y and its distance
  varies by ``depth_frac``;
* appearance (``ClipConfig.appearance``): ``"model"``, dark brows and eyes and darker lips painted
  over the reflectance (:func:`paint_features`): the base model's mean albedo shows none of them,
  and dlib's HOG detector found the plain face in ~1 of 60 frames; or ``"photo"``, a head textured
  from a real photo (:class:`PhotoAppearance`, built above the data layer by
  :func:`fml_taichi.eval.photo_head.photo_head`, since it needs the landmark fit): the photo's
  pixels wherever it saw the head, the model's reflectance elsewhere. dlib is trained on real
  faces; on the model face its points sit ~0.1 inter-ocular distances off;
* background (``ClipConfig.background``): procedural (:mod:`.backgrounds`), or ``"photo"``: the
  appearance's photo with the face's columns cut out (:func:`photo_background`);
* expression: keyframes drawn every ``expression_period`` frames (coefficient SD
  ``expression_sd`` sigmas), blended with a smoothstep between them.

Frames are rendered with :func:`fml_taichi.ops.render.render` over one static background in the
frame's own pinhole camera (``ClipConfig.intrinsics``), then blurred and noised like the training
images. Truth per frame (:class:`ClipTruth`): Euler rotation, translation, expression, the 68
detector-style landmarks (jaw on the silhouette, :func:`~fml_taichi.data.landmark_noise.detector_vertices`)
and their visibility, the face mask's pixel count and bounding box, and *synthetic detector*
landmarks: truth plus :func:`~fml_taichi.data.landmark_noise.detector_noise` (the documented noise
model of the training data, ``landmark_sigma_px``), for measuring the tracking / fit / smoothing
chain separately from dlib.

Frames are produced in batches (:func:`render_clip` is a generator), so a long clip never sits in
memory; :func:`write_clip` writes the MP4 and returns the truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import default_face_model, regions
from ..ops.composite import blur_and_noise
from ..ops.render import draw, render
from . import backgrounds, landmark_noise, variation
from .synthetic import SyntheticConfig, SyntheticRenderer, stream

__all__ = ["APPEARANCES", "ClipConfig", "ClipTruth", "PhotoAppearance", "clip_trajectory", "photo_background",
           "render_clip", "render_photo_head", "write_clip"]

#: ``model``: the synthetic identity (model albedo, variation, painted features); ``photo``: a head
#: textured from a real photo (:class:`PhotoAppearance`).
APPEARANCES = ("model", "photo")


@dataclass
class PhotoAppearance:
    """A head textured from a photo (built by :func:`fml_taichi.eval.photo_head.photo_head`).

    photo: uint8 RGB [Hp, Wp, 3]. uv [N, 2]: each vertex's pixel in the photo (x, y). seen [N] in
    [0, 1]: how much of a vertex's colour comes from the photo (0: facing away from / hidden in it).
    shape [m_s], expression [m_e]: the fitted identity and the photo's expression. fallback [N, 3]:
    reflectance where the photo does not see the head. fit_nme: the photo fit's landmark residual;
    photo_rotation [3], photo_intrinsics [4]: the photo's fitted pose and assumed camera.
    """

    photo: np.ndarray
    uv: torch.Tensor
    seen: torch.Tensor
    shape: torch.Tensor
    expression: torch.Tensor
    fallback: torch.Tensor
    fit_nme: float = float("nan")
    photo_rotation: np.ndarray | None = None
    photo_intrinsics: np.ndarray | None = None

    def photo_tensor(self) -> torch.Tensor:
        """The photo as float [1, 3, Hp, Wp] in [0, 1] (for ``grid_sample``)."""
        return torch.from_numpy(np.ascontiguousarray(self.photo)).permute(2, 0, 1)[None].float() / 255.0

    def uv_layer(self) -> torch.Tensor:
        """[N, 3]: the texture coordinates in grid_sample's [-1, 1] range, and ``seen``."""
        h, w = self.photo.shape[:2]
        u = self.uv[:, 0] / (w - 1) * 2 - 1
        v = self.uv[:, 1] / (h - 1) * 2 - 1
        return torch.stack([u, v, self.seen], 1).float()


#: ``procedural``: :func:`fml_taichi.data.backgrounds.random_background`; ``photo``: the appearance's
#: photo without the face's columns (:func:`photo_background`).
BACKGROUNDS = ("procedural", "photo")


@dataclass(frozen=True)
class ClipConfig:
    """Size, length and motion ranges of a clip (angles in degrees).

    face_px: width of the mean face's landmark box (jaw 0-16) at the mean distance, pixels.
    focal_px: the camera's focal length (pixels; principal point at the frame centre).
    """
    frames: int = 300
    width: int = 640
    height: int = 480
    fps: float = 30.0
    seed: int = 3
    roll_deg: float = 30.0
    yaw_deg: float = 45.0
    pitch_deg: float = 10.0
    shift_frac: float = 0.15
    depth_frac: float = 0.15
    face_px: float = 200.0
    focal_px: float = 800.0
    expression_sd: float = 1.0
    expression_period: int = 60
    landmark_sigma_px: float = 1.5
    noise_sd: float = 0.01
    blur_px: float = 0.6
    batch: int = 20
    appearance: str = "model"
    background: str = "procedural"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self):
        if self.frames < 1 or self.width < 16 or self.height < 16 or self.batch < 1:
            raise ValueError(f"frames, width, height, batch: expected >= 1, 16, 16, 1; got {self.frames}, "
                             f"{self.width}, {self.height}, {self.batch}")
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance: expected one of {APPEARANCES}, got {self.appearance!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background: expected one of {BACKGROUNDS}, got {self.background!r}")
        if not (self.fps > 0 and self.face_px > 0 and self.focal_px > 0 and self.expression_period >= 1):
            raise ValueError("fps, face_px, focal_px and expression_period must be positive")

    @property
    def intrinsics(self) -> torch.Tensor:
        return torch.tensor([self.focal_px, self.focal_px, (self.width - 1) / 2, (self.height - 1) / 2])


@dataclass
class ClipTruth:
    """Per-frame truth, T frames. rotation [T, 3] radians (rx, ry, rz; R = Rz Ry Rx), translation
    [T, 3] mm, expression [T, m_e], landmarks [T, 68, 2] px (noise-free), visible [T, 68] bool,
    noisy_landmarks [T, 68, 2] (truth + the synthetic detector's noise), mask_pixels [T],
    mask_box [T, 4] (x0, y0, x1, y1; inclusive-exclusive), intrinsics [4], fps."""

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    noisy_landmarks: np.ndarray
    mask_pixels: np.ndarray
    mask_box: np.ndarray
    intrinsics: np.ndarray
    fps: float

    def save(self, path) -> None:
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in vars(self).items()})

    @classmethod
    def load(cls, path) -> "ClipTruth":
        z = np.load(path)
        return cls(**{k: (float(z[k]) if k == "fps" else z[k]) for k in z.files})


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def clip_trajectory(cfg: ClipConfig, face_model, centre_mm: torch.Tensor, width_mm: float) -> dict:
    """Truth pose and expression of every frame (module docstring): rotation [T, 3], translation [T, 3],
    expression [T, m_e] (float32 tensors)."""
    t = np.arange(cfg.frames, dtype=np.float64)
    d = math.pi / 180
    rot = np.stack([cfg.pitch_deg * d * np.sin(2 * math.pi * t / 90 + 2),
                    cfg.yaw_deg * d * np.sin(2 * math.pi * t / 150),
                    cfg.roll_deg * d * np.sin(2 * math.pi * t / 110 + 1)], -1)
    f = cfg.focal_px
    depth0 = f * width_mm / cfg.face_px
    depth = depth0 * (1 + cfg.depth_frac * np.sin(2 * math.pi * t / 200 + 0.5))
    u = cfg.shift_frac * cfg.width * np.sin(2 * math.pi * t / 130 + 0.3)
    v = cfg.shift_frac * cfg.height * np.sin(2 * math.pi * t / 170 + 1.3)
    target = np.stack([u * depth / f, v * depth / f, depth], -1)  # where the landmark-box centre goes
    rmat = landmark_noise_free_matrix(rot)
    trans = target - rmat @ centre_mm.double().numpy()
    g = torch.Generator().manual_seed(int(cfg.seed) * 8 + 7)
    n_keys = cfg.frames // cfg.expression_period + 2
    sigma = face_model.expression_sigma.double()
    keys = (torch.randn((n_keys, face_model.m_expression), generator=g, dtype=torch.float64)
            * cfg.expression_sd).clamp(-3, 3) * sigma
    keys[0] = 0.0
    k = t / cfg.expression_period
    i = np.floor(k).astype(int)
    w = torch.as_tensor(_smoothstep(k - i))[:, None]
    expr = keys[i] * (1 - w) + keys[i + 1] * w
    return {"rotation": torch.as_tensor(rot, dtype=torch.float32),
            "translation": torch.as_tensor(trans, dtype=torch.float32),
            "expression": expr.float()}


def landmark_noise_free_matrix(rotation: np.ndarray) -> np.ndarray:
    """``R = Rz Ry Rx`` for [T, 3] Euler angles (float64 numpy)."""
    from ..reference.image_formation import euler_to_matrix

    return euler_to_matrix(torch.as_tensor(rotation, dtype=torch.float64)).numpy()


#: Linear-RGB colours painted over the clip face's reflectance: what a HOG face detector keys on
#: (dark brows and eyes, darker lips) and the base model's mean albedo barely shows.
FEATURE_COLOURS = {"brows": (0.06, 0.04, 0.03), "eyes": (0.03, 0.03, 0.04), "lips": (0.35, 0.10, 0.10)}
_BROWS = ([17, 18, 19, 20, 21], [22, 23, 24, 25, 26])
_EYES = ([36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47])


def feature_weights(face_model) -> dict:
    """Soft per-vertex weights [N] (0-1) of the brows (bands ~3 mm wide along landmarks 17-21 / 22-26,
    lifted 2 mm), the eyes (polygons 36-41 / 42-47, grown 1 mm) and the lips (48-59), measured in the
    face parametrisation (:func:`fml_taichi.model.regions.face_parametrisation`, ~mm)."""
    v = face_model.mean_geometry.detach().double().cpu().numpy()
    lms = face_model.landmarks.long().cpu().numpy()
    param = regions.face_parametrisation(v, v[lms[30]])
    lp = param[lms]
    sig = lambda d, soft: 1.0 / (1.0 + np.exp(-d / soft))  # noqa: E731
    brows = np.zeros(len(v))
    for idx in _BROWS:
        line = lp[idx] - np.array([0.0, 2.0])
        seg_a, seg_b = line[:-1][None], line[1:][None]
        ab, ap = seg_b - seg_a, param[:, None] - seg_a
        t = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
        d = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(1)
        brows = np.maximum(brows, sig(3.0 - d, 0.8))
    eyes = np.zeros(len(v))
    for idx in _EYES:
        poly = lp[idx]
        d = regions.distance_to_polygon(param, poly)
        sd = np.where(regions.inside_polygon(param, poly), d, -d) + 1.0
        eyes = np.maximum(eyes, sig(sd, 0.6))
    poly = lp[list(range(48, 60))]
    d = regions.distance_to_polygon(param, poly)
    lips = sig(np.where(regions.inside_polygon(param, poly), d, -d) + 0.5, 0.8)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {"brows": t(brows), "eyes": t(eyes), "lips": t(lips)}


def paint_features(reflectance: torch.Tensor, weights: dict) -> torch.Tensor:
    """Blend :data:`FEATURE_COLOURS` over reflectance [B, N, 3] with :func:`feature_weights`."""
    out = reflectance
    for name, w in weights.items():
        c = torch.tensor(FEATURE_COLOURS[name], dtype=out.dtype)
        out = out * (1 - w[:, None]) + c * w[:, None]
    return out


def _mask_box(mask: torch.Tensor) -> tuple[int, list[float]]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return 0, [0.0, 0.0, 0.0, 0.0]
    return int(len(xs)), [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


#: The clip identity's out-of-space variation, pinned (not :mod:`.variation`'s defaults, which serve
#: training): full strength, and the per-feature probabilities the clip was measured with.
CLIP_VARIATION = {"strength": 1.0, "p_bump": 0.7, "p_tone": 0.4, "p_beard": 0.35, "p_lipstick": 0.25,
                  "p_eye_shadow": 0.2}
#: Light of the photo head's fallback reflectance: ambient + a frontal light from slightly above,
#: irradiance ~1 on a frontal normal (the photo's own colours carry its light).
PHOTO_FILL_LIGHT = {"ambient": 0.7, "intensity": 0.45, "direction": (0.0, -0.25, -1.0)}


def photo_background(photo: np.ndarray, uv: torch.Tensor, seen: torch.Tensor, height: int, width: int,
                     margin: float = 0.35) -> torch.Tensor:
    """A background [1, height // 2, width // 2, 3] float from ``photo`` (uint8 RGB) with the face cut out:
    the columns left and right of the well-seen face (``seen`` > 0.5; its width grown by ``margin``
    on each side) put side by side and resized. So the frame behind the moving head is a real photo
    with no second face in it."""
    import cv2

    xs = uv[seen > 0.5, 0].numpy()
    wp = photo.shape[1]
    x0, x1 = float(xs.min()), float(xs.max())
    pad = margin * (x1 - x0)
    lo, hi = int(max(0, x0 - pad)), int(min(wp, math.ceil(x1 + pad)))
    parts = [p for p in (photo[:, :lo], photo[:, hi:]) if p.shape[1] > 0]
    if not parts:
        raise ValueError("photo_background: the face fills the photo's width; no background left")
    strip = np.ascontiguousarray(np.concatenate(parts, 1))
    small = cv2.resize(strip, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).float()[None] / 255.0


class _ModelFace:
    """The synthetic identity: model albedo + variation + painted features, the clip's SH light."""

    def __init__(self, cfg: ClipConfig, fm):
        self.fm = fm
        ren = SyntheticRenderer(fm, cfg.synthetic)
        self.tables = ren.tables
        self.ident = ren.draw_params(cfg.seed)
        self.draw_var = variation.draw_variation(stream(cfg.seed, "variation"), ren.tables.variation,
                                                 **CLIP_VARIATION)
        self.geo_off = variation.geometry_offsets(ren.tables.variation, [self.draw_var])
        self.features = feature_weights(fm)

    def frames(self, expr, rot, trans, k, cfg, bg):
        fm, b = self.fm, len(expr)
        base_g, base_r = fm.base(self.ident.shape.expand(b, -1), expr, self.ident.reflectance.expand(b, -1))
        refl_off = variation.reflectance_offsets(self.tables.variation, base_r[:1], [self.draw_var],
                                                 self.tables.mean_albedo)
        reflectance = paint_features(base_r + refl_off, self.features).contiguous()
        rendering = render((base_g + self.geo_off).contiguous(), fm.triangles, k, cfg.height, cfg.width,
                           rotation=rot, translation=trans, reflectance=reflectance,
                           light=self.ident.light.expand(b, -1, -1).contiguous(), background=None)
        image = draw(rendering.raster, fm.triangles, rendering.mesh.colours, bg.expand(b, -1, -1, -1).contiguous())
        return rendering, image


class _PhotoFace:
    """A head textured from a photo (:class:`PhotoAppearance`): the photo per pixel where it sees the
    head, the fallback reflectance under :data:`PHOTO_FILL_LIGHT` elsewhere, blended by ``seen``."""

    def __init__(self, appearance: PhotoAppearance, fm):
        from .synthetic import sh_light

        self.fm, self.app = fm, appearance
        lt = PHOTO_FILL_LIGHT
        d = torch.tensor(lt["direction"], dtype=torch.float64)
        self.light = sh_light(torch.full((3,), lt["ambient"]), torch.full((3,), lt["intensity"]), d / d.norm())
        self.tex = appearance.photo_tensor()
        self.uv_layer = appearance.uv_layer()

    def frames(self, expr, rot, trans, k, cfg, bg):
        fm, app, b = self.fm, self.app, len(expr)
        geometry = fm.geometry(app.shape[None].expand(b, -1), app.expression[None] + expr)
        rendering = render(geometry.contiguous(), fm.triangles, k, cfg.height, cfg.width, rotation=rot,
                           translation=trans, reflectance=app.fallback[None].expand(b, -1, -1).contiguous(),
                           light=self.light[None].expand(b, -1, -1).contiguous(), background=None,
                           layers={"photo": self.uv_layer[None].expand(b, -1, -1).contiguous()})
        image = draw(rendering.raster, fm.triangles, rendering.mesh.colours, bg.expand(b, -1, -1, -1).contiguous())
        layer = rendering.layers["photo"]  # [B, H, W, 3]: grid coordinates and seen
        grid = layer[..., :2].contiguous()
        seen = (layer[..., 2:3] * rendering.raster.mask[..., None]).clamp(0, 1)
        photo = torch.nn.functional.grid_sample(self.tex.expand(b, -1, -1, -1), grid, mode="bilinear",
                                                padding_mode="border", align_corners=True).permute(0, 2, 3, 1)
        return rendering, image + seen * (photo - image)


def render_photo_head(appearance: PhotoAppearance, face_model, rotation: torch.Tensor, translation: torch.Tensor,
                      intrinsics: torch.Tensor, height: int, width: int, background: torch.Tensor,
                      expression: torch.Tensor | None = None):
    """Render the photo-textured head (:class:`PhotoAppearance`) at poses ``rotation`` / ``translation``
    [B, 3] over ``background`` ([1, h, w, 3], any resolution): ``(Rendering, image [B, H, W, 3])``,
    no blur or noise. ``expression`` [B, m_e]: offsets from the photo's expression (default none)."""
    b = len(rotation)
    cfg = ClipConfig(frames=1, width=width, height=height)
    expr = torch.zeros(b, face_model.m_expression) if expression is None else expression
    return _PhotoFace(appearance, face_model).frames(expr, rotation, translation, intrinsics, cfg, background)


def render_clip(cfg: ClipConfig | None = None, face_model=None, truth_out: dict | None = None,
                appearance: PhotoAppearance | None = None):
    """Yield the clip's frames, uint8 RGB [H, W, 3], in order (module docstring).

    ``truth_out``: a dict that receives the :class:`ClipTruth` under ``"truth"`` once the last frame
    has been yielded. ``face_model`` default: ``default_face_model(4000)``. ``appearance``: the
    :class:`PhotoAppearance` that ``cfg.appearance == "photo"`` (or ``cfg.background == "photo"``) needs.
    """
    cfg = cfg or ClipConfig()
    fm = face_model if face_model is not None else default_face_model(4000)
    if (cfg.appearance == "photo" or cfg.background == "photo") and appearance is None:
        raise ValueError("appearance: a photo clip needs a PhotoAppearance (fml_taichi.eval.photo_head.photo_head)")
    face = _PhotoFace(appearance, fm) if cfg.appearance == "photo" else _ModelFace(cfg, fm)
    tables = SyntheticRenderer(fm, cfg.synthetic).tables if cfg.appearance == "photo" else face.tables
    traj = clip_trajectory(cfg, fm, tables.centre, tables.width_mm)
    k = cfg.intrinsics
    g_bg = stream(cfg.seed, "background")
    if cfg.background == "photo":
        bg = photo_background(appearance.photo, appearance.uv, appearance.seen, cfg.height, cfg.width)
    else:
        bg = backgrounds.random_background(g_bg, cfg.height // 2, cfg.width // 2).clamp(0, 1)
    g_lm = stream(cfg.seed, "landmarks")
    g_sensor = stream(cfg.seed, "sensor")
    acc = {n: [] for n in ("landmarks", "visible", "noisy", "mask_pixels", "mask_box")}
    for s in range(0, cfg.frames, cfg.batch):
        sl = slice(s, min(cfg.frames, s + cfg.batch))
        b = sl.stop - sl.start
        rendering, image = face.frames(traj["expression"][sl], traj["rotation"][sl], traj["translation"][sl], k, cfg,
                                       bg)
        view = landmark_noise.detector_vertices(rendering.mesh.v_cam, rendering.mesh.normals, rendering.raster.depth,
                                                k, fm)
        sd = torch.rand(b, generator=g_sensor) * cfg.noise_sd
        keys = torch.randint(2 ** 31 - 1, (b,), generator=g_sensor)
        image = blur_and_noise(image.contiguous(), cfg.blur_px, keys, sd)
        for i in range(b):
            noisy, _ = landmark_noise.detector_noise(g_lm, view.uv[i], view.visible[i], view.slid[i],
                                                     cfg.landmark_sigma_px)
            acc["noisy"].append(noisy.numpy())
            n, box = _mask_box(rendering.raster.mask[i])
            acc["mask_pixels"].append(n)
            acc["mask_box"].append(box)
        acc["landmarks"].append(view.uv.numpy())
        acc["visible"].append(view.visible.numpy())
        frames = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        yield from frames
    if truth_out is not None:
        truth_out["truth"] = ClipTruth(
            rotation=traj["rotation"].double().numpy(), translation=traj["translation"].double().numpy(),
            expression=traj["expression"].double().numpy(), landmarks=np.concatenate(acc["landmarks"]),
            visible=np.concatenate(acc["visible"]), noisy_landmarks=np.stack(acc["noisy"]),
            mask_pixels=np.array(acc["mask_pixels"]), mask_box=np.array(acc["mask_box"], np.float64),
            intrinsics=k.double().numpy(), fps=float(cfg.fps))


def write_clip(path: str, cfg: ClipConfig | None = None, face_model=None,
               appearance: PhotoAppearance | None = None) -> ClipTruth:
    """Render the clip into an MP4 at ``path`` (atomically) and return its :class:`ClipTruth`
    (``appearance``: as for :func:`render_clip`)."""
    from .video import VideoWriter

    cfg = cfg or ClipConfig()
    out: dict = {}
    with VideoWriter(path, cfg.fps, (cfg.width, cfg.height)) as writer:
        for frame in render_clip(cfg, face_model, out, appearance):
            writer.write(frame)
    return out["truth"]
