"""Synthetic faces with complete ground truth, rendered on the fly.

From one integer seed: a face drawn from the base model (shape, expression, reflectance), plus
variation the base model cannot express (:mod:`fml_taichi.data.variation`: geometry bumps at nose,
lips, chin and cheeks; facial hair, make-up, skin tones outside the span), SH lighting, a head pose,
a procedural background (:mod:`fml_taichi.data.backgrounds`), rendered at 240 x 240 with the z-buffer
rasteriser, and 68 landmarks from a simulated detector (:mod:`fml_taichi.data.landmark_noise`).

**Determinism.** Every image depends on its seed only: each random component draws from its own
generator seeded ``seed * 8 + stream`` (streams: parameters, variation, background, landmarks,
sensor), so the same seed gives the same image whatever the batch it renders in, and changing one
component's code does not reshuffle the others.

**Seed split.** Training seeds start at :data:`TRAIN_SEED_START` (0); held-out evaluation seeds start at
:data:`EVAL_SEED_START` (10,000,000). Training runs use fewer than 10 M images, so the sets are
disjoint; :class:`SyntheticFaces` with ``split="train"`` refuses to reach into the evaluation range.

**Item layout** (``SyntheticFaces[i]``, a dict of torch tensors, unbatched):

==========================  =============  ====================================================
``image``                   [H, W, 3] f32  channels-last RGB in [0, 1], as the kernels take it
``landmarks``               [68, 2] f32    detector-like noisy (x, y) pixels, iBUG order, 0-based
``landmark_conf``           [68] f32       confidences in [0, 1]
``gt_landmarks``            [68, 2] f32    noise-free projections of ``gt_landmark_vertices``
``gt_landmark_vertices``    [68] int64     vertex the detector marked (jaw: on the outline)
``gt_params``               dict           FaceParams fields, **unbatched** (shape [m_s], ...,
                                           light [9, 3]); delta_geometry / delta_reflectance are
                                           empty ([0]): the out-of-space part is per vertex below
``gt_vertices``             [N, 3] f32     model-space mm, base + ``gt_geometry_offset``
``gt_reflectance``          [N, 3] f32     base + ``gt_reflectance_offset`` (linear RGB)
``gt_geometry_offset``      [N, 3] f32     out-of-space geometry (mm)
``gt_reflectance_offset``   [N, 3] f32     out-of-space reflectance
``face_mask``               [H, W] bool    pixels covered by the face mesh
``intrinsics``              [4] f32        ``[fx, fy, cx, cy]``
``seed``                    [] int64
==========================  =============  ====================================================

:func:`collate_synthetic` stacks items into a batch and turns ``gt_params`` into a batched
:class:`~fml_taichi.model.FaceParams`. For training on the fly use :meth:`SyntheticRenderer.render`
(or :func:`render_batch`): it renders a whole batch with one rasteriser launch; ``SyntheticFaces``
also implements ``__getitems__``, so a ``DataLoader`` with ``batch_size`` fetches whole batches that way.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, fields

import torch
from torch.utils.data import Dataset

from ..common.camera import default_intrinsics
from ..model import default_face_model
from ..model.params import FaceParams
from ..ops.composite import blur_and_noise
from ..ops.render import draw, render
from ..reference.image_formation import SH_C0, euler_to_matrix, sh_basis
from . import backgrounds, landmark_noise, variation

TRAIN_SEED_START = 0
EVAL_SEED_START = 10_000_000
# Independent random streams per image (see module docstring).
# Backgrounds are drawn at 1/BACKGROUND_DOWNSAMPLE of the image size and upsampled in compositing.
BACKGROUND_DOWNSAMPLE = 2
_STREAMS = {"params": 0, "variation": 1, "background": 2, "landmarks": 3, "sensor": 4, "fields": 5,
            "reflectance_fields": 6}
# Clamped-cosine SH convolution factors per band (Ramamoorthi & Hanrahan): irradiance of a
# directional light of unit intensity is sum_l A_l Y_lm(d) Y_lm(n).
#: Rec. 709 luminance weights (greyscale images, ``grey_probability``).
_LUMINANCE = torch.tensor([0.2126, 0.7152, 0.0722])
_BAND_FACTOR = torch.tensor([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)


@dataclass(frozen=True)
class SyntheticConfig:
    """Ranges of the random draws. Angles in degrees (uniform in +-range), lengths in mm or pixels.

    image_size: output size (square). face_fraction: width of the mean face's landmark box (jaw 0 to
    16) as a fraction of the image, drawn uniformly in the range (a detector crop's framing).
    centre_jitter_px: the face centre's offset from the image centre (uniform, per axis).
    shape_sd / expression_sd / reflectance_sd: coefficient SDs in units of the model's sigmas, clipped
    at 3 sigma. ambient, directional: irradiance ranges (1 = white light of unit irradiance).
    light_spread: how far the light direction strays from frontal (0 = from the camera).
    variation: scale of all out-of-space variation (0 = faces exactly in the base model's span).
    landmark_sigma_px: detector noise SD at full confidence. noise_sd: max sensor noise SD.
    blur_px: Gaussian blur SD (anti-aliasing of the z-buffered edges, camera softness).
    hair_probability: chance of a hair blob behind the head.
    fields: region-field family added to the geometry (:data:`variation.FIELD_FAMILIES`: "rbf" (opt-in;
    ~1.2 mm RMS beyond the base span), "exaggerate" (region-wise exaggerated modes), "none" = bumps only,
    the default, as the documented default run was trained), scaled
    by ``variation``.
    reflectance_fields: regional reflectance beyond the base (:data:`variation.REFLECTANCE_FIELD_FAMILIES`:
    "regional" = per-region skin tone, cheek flush, brow colour, lip colour, freckles; "none", the
    default, as the documented default run was trained), scaled by ``variation``.
    grey_probability: chance that an image is a greyscale photo (its luminance in all three channels:
    old photos, surveillance and IR cameras; the ground truth keeps the face's colours).
    """
    image_size: int = 240
    yaw_deg: float = 30.0
    pitch_deg: float = 15.0
    roll_deg: float = 10.0
    face_fraction: tuple[float, float] = (0.55, 0.7)
    centre_jitter_px: float = 8.0
    shape_sd: float = 1.0
    expression_sd: float = 0.8
    reflectance_sd: float = 1.0
    ambient: tuple[float, float] = (0.35, 0.7)
    directional: tuple[float, float] = (0.2, 0.6)
    light_spread: float = 0.6
    light_tint: float = 0.08
    variation: float = 1.0
    landmark_sigma_px: float = 1.5
    noise_sd: float = 0.015
    blur_px: float = 0.6
    hair_probability: float = 0.7
    fields: str = "none"
    reflectance_fields: str = "none"
    grey_probability: float = 0.0

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size: expected an int >= 16, got {self.image_size!r}")
        if self.fields not in variation.FIELD_FAMILIES:
            raise ValueError(f"fields: expected one of {variation.FIELD_FAMILIES}, got {self.fields!r}")
        if self.reflectance_fields not in variation.REFLECTANCE_FIELD_FAMILIES:
            raise ValueError(f"reflectance_fields: expected one of {variation.REFLECTANCE_FIELD_FAMILIES}, "
                             f"got {self.reflectance_fields!r}")
        for f in fields(self):
            if f.name in ("fields", "reflectance_fields"):
                continue
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            if any(not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0 for x in vals):
                raise ValueError(f"{f.name}: expected finite non-negative number(s), got {v!r}")
            if isinstance(v, tuple) and (len(v) != 2 or v[0] > v[1]):
                raise ValueError(f"{f.name}: expected a (low, high) range, got {v!r}")
        if not 0 < self.face_fraction[0] <= self.face_fraction[1] <= 1.5:
            raise ValueError(f"face_fraction: expected 0 < low <= high <= 1.5, got {self.face_fraction}")
        if self.blur_px > 1:
            raise ValueError(f"blur_px: expected at most 1 px (a 3 x 3 blur), got {self.blur_px}")
        if self.grey_probability > 1:
            raise ValueError(f"grey_probability: expected a probability in [0, 1], got {self.grey_probability}")
        if self.hair_probability > 1:
            raise ValueError(f"hair_probability: expected a probability in [0, 1], got {self.hair_probability}")


def stream(seed: int, name: str) -> torch.Generator:
    """The generator of one random component of image ``seed`` (see module docstring)."""
    return torch.Generator().manual_seed(int(seed) * 8 + _STREAMS[name])


def _uniform(gen, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(shape or (1,), generator=gen)


def sh_light(ambient: torch.Tensor, intensity: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """SH coefficients [9, 3] of an ambient term plus one directional light (shading convention of
    ``kernels/shading.py``: a uniform irradiance ``a`` is ``gamma_0 = a / SH_C0``).

    ambient [3] and intensity [3] per colour channel; direction [3] unit vector from the surface
    towards the light, camera frame.
    """
    y = sh_basis(direction.reshape(1, 1, 3).double())[0, 0]  # [9]
    light = (_BAND_FACTOR.double() * y).unsqueeze(-1) * intensity.double().unsqueeze(0)
    light[0] += ambient.double() / SH_C0
    return light.float()


def _hemisphere_normals(n: int = 256) -> torch.Tensor:
    """Fibonacci directions on the hemisphere facing the camera (z < 0), [n, 3]."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = -i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = torch.sqrt(1 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


_HEMISPHERE = _hemisphere_normals()


def min_irradiance(light: torch.Tensor) -> torch.Tensor:
    """Smallest irradiance [3] of ``light`` [9, 3] over the camera-facing hemisphere."""
    return (sh_basis(_HEMISPHERE.unsqueeze(0))[0] @ light.double()).min(0).values


def draw_light(gen: torch.Generator, cfg: SyntheticConfig, floor: float = 0.15) -> torch.Tensor:
    """Mostly frontal ambient + directional SH light [9, 3] with irradiance >= ``floor`` wherever a
    visible normal can point (the band-limited clamped cosine has small negative lobes: any deficit
    is made up with ambient)."""
    ambient = _uniform(gen, *cfg.ambient) * (1 + cfg.light_tint * (2 * torch.rand(3, generator=gen) - 1))
    intensity = _uniform(gen, *cfg.directional) * (1 + cfg.light_tint * (2 * torch.rand(3, generator=gen) - 1))
    lateral = torch.randn(2, generator=gen) * cfg.light_spread
    direction = torch.tensor([float(lateral[0]), float(lateral[1]) - 0.3 * cfg.light_spread, -1.0])
    direction = direction / direction.norm()  # from the face towards a light near the camera, above it
    light = sh_light(ambient, intensity, direction)
    deficit = (floor - min_irradiance(light)).clamp_min(0)
    light[0] += (deficit / SH_C0).float()
    return light


@dataclass
class _Tables:
    """Per-model constants for rendering (computed once per renderer)."""

    variation: variation.VariationTables
    centre: torch.Tensor  # [3] model-space centre of the mean face's landmark box
    width_mm: float  # x extent of the mean face's landmarks
    mean_albedo: torch.Tensor  # [3]
    fields: variation.FieldTables
    reflectance_fields: variation.ReflectanceFieldTables


class SyntheticRenderer:
    """Renders batches of synthetic faces with ground truth for one face model and config.

    ``face_model``: a :class:`~fml_taichi.model.FaceModel` (default: ``default_face_model(n_vertices)``).
    ``n_vertices`` is only used to build the default model. The model must be float32 on the CPU
    (or the device Taichi runs on).
    """
    def __init__(self, face_model=None, config: SyntheticConfig | None = None, n_vertices: int | None = None):
        if face_model is None:
            face_model = default_face_model(n_vertices)
        if face_model.dtype != torch.float32:
            raise ValueError(f"face_model: expected a float32 model, got {face_model.dtype}")
        self.face_model = face_model
        self.config = config or SyntheticConfig()
        self.intrinsics = default_intrinsics(self.config.image_size)
        lm = face_model.mean_geometry[face_model.landmarks.long()]
        self.tables = _Tables(
            variation=variation.VariationTables.from_model(face_model),
            centre=(lm.min(0).values + lm.max(0).values) / 2,
            width_mm=float(lm[:, 0].max() - lm[:, 0].min()),
            mean_albedo=face_model.mean_reflectance.mean(0),
            fields=variation.FieldTables.from_model(face_model),
            reflectance_fields=variation.ReflectanceFieldTables.from_model(face_model),
        )

    # ---- per-image draws --------------------------------------------------------------------------
    def draw_params(self, seed: int) -> FaceParams:
        """The base-model parameters and pose/light of image ``seed`` (batch 1; delta_* empty)."""
        cfg, fm = self.config, self.face_model
        g = stream(seed, "params")
        coef = lambda m, sd, sigma: (torch.randn((1, m), generator=g) * sd).clamp(-3, 3) * sigma  # noqa: E731
        shape = coef(fm.m_shape, cfg.shape_sd, fm.shape_sigma)
        expression = coef(fm.m_expression, cfg.expression_sd, fm.expression_sigma)
        reflectance = coef(fm.m_reflectance, cfg.reflectance_sd, fm.reflectance_sigma)
        deg = torch.tensor([cfg.pitch_deg, cfg.yaw_deg, cfg.roll_deg])
        rotation = (torch.rand(3, generator=g) * 2 - 1) * deg * (math.pi / 180)
        # Frame like a detector crop: the landmark box centre on the (jittered) image centre, its
        # frontal width a drawn fraction of the image.
        frac = float(_uniform(g, *cfg.face_fraction))
        f = float(self.intrinsics[0])
        depth = f * self.tables.width_mm / (frac * cfg.image_size)
        jitter = (torch.rand(2, generator=g) * 2 - 1) * cfg.centre_jitter_px
        target = torch.tensor([float(jitter[0]) * depth / f, float(jitter[1]) * depth / f, depth])
        rot = euler_to_matrix(rotation.unsqueeze(0))[0]
        translation = target - rot @ self.tables.centre
        light = draw_light(g, cfg)
        empty = torch.zeros(1, 0)
        return FaceParams(shape, expression, reflectance, empty, empty.clone(), rotation.unsqueeze(0),
                          translation.unsqueeze(0), light.unsqueeze(0))

    # ---- batch rendering --------------------------------------------------------------------------
    def render(self, seeds, timings: dict | None = None) -> dict:
        """Render the images of ``seeds`` (a list of ints) as one batch: a dict of batched tensors
        (the item layout of the module docstring with a leading batch dimension; ``gt_params`` a
        batched :class:`FaceParams`). ``timings``: optional dict that receives seconds per stage
        (for ``benchmarks/bench_synthetic.py``)."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds: expected at least one seed")
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds: must be non-negative, got {min(seeds)}")
        cfg, fm = self.config, self.face_model
        size = cfg.image_size
        with _timed(timings, "draw"):
            params = _cat_params([self.draw_params(s) for s in seeds])
            draws = [variation.draw_variation(stream(s, "variation"), self.tables.variation, cfg.variation)
                     for s in seeds]
        with _timed(timings, "model+variation"):
            base_g, base_r = fm.base(params.shape, params.expression, params.reflectance)
            geo_off = variation.geometry_offsets(self.tables.variation, draws) + self._field_offsets(seeds, params)
            refl_off = variation.reflectance_offsets(self.tables.variation, base_r, draws, self.tables.mean_albedo)
            refl_off = self._reflectance_fields(seeds, base_r + refl_off) - base_r
            vertices = (base_g + geo_off).contiguous()
            reflectance = base_r + refl_off
        with _timed(timings, "render"):
            rendering = render(vertices, fm.triangles, self.intrinsics, size, size, rotation=params.rotation,
                               translation=params.translation, reflectance=reflectance, light=params.light,
                               background=None)
            v_cam, normals, raster = rendering.mesh.v_cam, rendering.mesh.normals, rendering.raster
        with _timed(timings, "landmarks"):
            view = landmark_noise.detector_vertices(v_cam, normals, raster.depth, self.intrinsics, fm)
            noisy = [landmark_noise.detector_noise(stream(s, "landmarks"), view.uv[i], view.visible[i], view.slid[i],
                                                   cfg.landmark_sigma_px) for i, s in enumerate(seeds)]
        with _timed(timings, "background"):
            bg = torch.stack([self._background(s, view.uv[i]) for i, s in enumerate(seeds)])
        with _timed(timings, "composite"):
            image = draw(raster, fm.triangles, rendering.mesh.colours, bg)
        with _timed(timings, "sensor"):
            image = self._sensor(seeds, image)
        b = len(seeds)
        return {
            "image": image.contiguous(),
            "landmarks": torch.stack([n[0] for n in noisy]),
            "landmark_conf": torch.stack([n[1] for n in noisy]),
            "gt_landmarks": view.uv.float(),
            "gt_landmark_vertices": view.vertex,
            "gt_params": params,
            "gt_vertices": vertices,
            "gt_reflectance": reflectance,
            "gt_geometry_offset": geo_off,
            "gt_reflectance_offset": refl_off,
            "face_mask": raster.mask,
            "intrinsics": self.intrinsics.unsqueeze(0).repeat(b, 1),
            "seed": torch.tensor(seeds, dtype=torch.int64),
        }

    def _field_offsets(self, seeds: list[int], params: FaceParams) -> torch.Tensor:
        """Region-field displacements [B, N, 3] (config ``fields``), one "fields" stream per image."""
        fm = self.face_model
        identity = torch.einsum("njm,bm->bnj", fm.shape_basis, params.shape)
        return torch.stack([variation.field_geometry_offsets(self.tables.fields, stream(s, "fields"),
                                                             self.config.fields, self.config.variation, identity[i])
                            for i, s in enumerate(seeds)])

    def _reflectance_fields(self, seeds: list[int], reflectance: torch.Tensor) -> torch.Tensor:
        """Reflectance [B, N, 3] with the regional variation (config ``reflectance_fields``) applied,
        one "reflectance_fields" stream per image."""
        family = self.config.reflectance_fields
        if family == "none":
            return reflectance
        return torch.stack([variation.field_reflectance(self.tables.reflectance_fields,
                                                        stream(s, "reflectance_fields"), family,
                                                        self.config.variation, reflectance[i])
                            for i, s in enumerate(seeds)])

    def _background(self, seed: int, landmarks_uv: torch.Tensor) -> torch.Tensor:
        """The image's background at half resolution (the compositing kernel upsamples it): it is
        smooth or defocused anyway, and drawing it at full size was a top-3 cost per image."""
        g = stream(seed, "background")
        size = max(8, self.config.image_size // BACKGROUND_DOWNSAMPLE)
        scale = size / self.config.image_size
        bg = backgrounds.random_background(g, size, size)
        if bool(torch.rand(1, generator=g) < self.config.hair_probability):
            lo, hi = landmarks_uv.min(0).values, landmarks_uv.max(0).values
            centre = ((lo + hi) / 2 + 0.5) * scale - 0.5
            bg = backgrounds.add_hair(g, bg, centre, float((hi - lo).max()) / 2 * scale)
        return bg.clamp(0.0, 1.0)

    def _sensor(self, seeds: list[int], images: torch.Tensor) -> torch.Tensor:
        """Camera softness (a small Gaussian blur) and per-image noise; [B, H, W, 3] in [0, 1].

        Per image: the noise SD (uniform in [0, noise_sd]) and the noise pattern's key come from the
        image's "sensor" stream; the pattern itself is hashed per pixel in the kernel.
        """
        sd, keys, grey = [], [], []
        for s in seeds:
            g = stream(s, "sensor")
            sd.append(float(torch.rand(1, generator=g)) * self.config.noise_sd)
            keys.append(int(torch.randint(2 ** 31 - 1, (1,), generator=g)))
            grey.append(bool(torch.rand(1, generator=g) < self.config.grey_probability))  # drawn last: the
            # earlier draws, and so every colour image, stay as they were
        out = blur_and_noise(images, self.config.blur_px, torch.tensor(keys), torch.tensor(sd))
        if any(grey):
            mono = (out @ _LUMINANCE.to(out)).unsqueeze(-1).expand_as(out)
            out = torch.where(torch.tensor(grey).view(-1, 1, 1, 1), mono, out).contiguous()
        return out

    def render_items(self, seeds) -> list[dict]:
        """Like :meth:`render` but split into unbatched items (``gt_params`` a dict of tensors)."""
        batch = self.render(seeds)
        items = []
        for i in range(len(batch["seed"])):
            item = {k: v[i] for k, v in batch.items() if k != "gt_params"}
            item["gt_params"] = {k: v[i] for k, v in batch["gt_params"].as_dict().items()}
            items.append(item)
        return items


@contextlib.contextmanager
def _timed(timings: dict | None, name: str):
    """Add the block's wall time (s) to ``timings[name]`` when a dict is given."""
    if timings is None:
        yield
        return
    t0 = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _cat_params(items: list[FaceParams]) -> FaceParams:
    return FaceParams(**{n: torch.cat([getattr(p, n) for p in items]) for n in FaceParams.names()})


def collate_synthetic(items: list[dict]) -> dict:
    """Stack unbatched items into a batch; ``gt_params`` becomes a batched :class:`FaceParams`."""
    if not items:
        raise ValueError("items: expected at least one item")
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "gt_params"}
    out["gt_params"] = FaceParams(**{n: torch.stack([it["gt_params"][n] for it in items]) for n in FaceParams.names()})
    return out


class SyntheticFaces(Dataset):
    """A map-style dataset of ``length`` synthetic faces, item ``i`` rendered from seed ``seed_start + i``.

    ``split``: "train" (seeds from :data:`TRAIN_SEED_START`, must stay below :data:`EVAL_SEED_START`),
    "eval" (seeds from :data:`EVAL_SEED_START`), or None (any ``seed_start``, no check).
    ``seed_start`` defaults to the split's start. Items are rendered on demand (nothing is cached);
    ``__getitems__`` renders a list of indices as one batch (used by ``DataLoader`` automatically).
    Use ``DataLoader(ds, batch_size=B, collate_fn=collate_synthetic)`` with the default
    ``num_workers=0``: a batch is already rendered by multi-threaded Taichi kernels, and Taichi
    runtimes inside forked worker processes are not something this code relies on.
    """
    def __init__(self, length: int, split: str | None = "train", seed_start: int | None = None,
                 face_model=None, config: SyntheticConfig | None = None, n_vertices: int | None = None,
                 renderer: SyntheticRenderer | None = None):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        if split not in ("train", "eval", None):
            raise ValueError(f"split: expected 'train', 'eval' or None, got {split!r}")
        if seed_start is None:
            seed_start = EVAL_SEED_START if split == "eval" else TRAIN_SEED_START
        if seed_start < 0:
            raise ValueError(f"seed_start: must be non-negative, got {seed_start}")
        if split == "train" and seed_start + length > EVAL_SEED_START:
            raise ValueError(f"split 'train': seeds {seed_start}..{seed_start + length - 1} reach the held-out "
                             f"evaluation range (seeds >= {EVAL_SEED_START})")
        if split == "eval" and seed_start < EVAL_SEED_START:
            raise ValueError(f"split 'eval': seed_start {seed_start} lies in the training range (< {EVAL_SEED_START})")
        self.length, self.seed_start, self.split = length, int(seed_start), split
        self.renderer = renderer or SyntheticRenderer(face_model, config, n_vertices)

    def __len__(self) -> int:
        return self.length

    def _seed(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} synthetic faces")
        return self.seed_start + i

    def __getitem__(self, i: int) -> dict:
        return self.renderer.render_items([self._seed(i)])[0]

    def __getitems__(self, indices) -> list[dict]:
        return self.renderer.render_items([self._seed(i) for i in indices])


_DEFAULT_RENDERERS: dict = {}


def render_batch(seeds, face_model=None, config: SyntheticConfig | None = None,
                 n_vertices: int | None = None) -> dict:
    """Render ``seeds`` as one batch (see :meth:`SyntheticRenderer.render`).

    Without ``face_model`` a renderer of the default model (per ``n_vertices`` and config) is cached
    across calls, so training loops can call this every step cheaply.
    """
    if face_model is not None:
        return SyntheticRenderer(face_model, config).render(seeds)
    key = (n_vertices, config or SyntheticConfig())
    if key not in _DEFAULT_RENDERERS:
        _DEFAULT_RENDERERS[key] = SyntheticRenderer(None, config, n_vertices)
    return _DEFAULT_RENDERERS[key].render(seeds)
