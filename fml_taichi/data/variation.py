"""Out-of-space variation for synthetic faces: what the base model cannot express (paper Sec. 4.2).

The synthetic ground truth must contain detail the base 3DMM cannot reach, otherwise the correctives
have nothing to learn and the base-vs-final comparison measures nothing. Two kinds, both defined on
the model's mean face (so they work for any source model and any decimation) and returned as
per-vertex offsets that are part of the ground truth:

**Geometry bumps** (``gt_geometry_offset``): smooth localised displacements along the mean face's
outward normal, ``a * exp(-|v - c|^2 / (2 s^2))``, centred on landmark-anchored vertices: nose tip,
nose bridge, nostril wings (a symmetric pair), upper and lower lip, chin, cheeks (a pair). Amplitudes
are a few millimetres (SD ``BUMP_SD_MM``, clipped at 2.5 SD), widths ``s`` 5-22 mm by feature. A
positive amplitude pushes outwards (bigger nose, fuller lips, stronger chin).

**Reflectance patches** (``gt_reflectance_offset``), applied in this order:

* skin tone outside the base span: the whole reflectance is multiplied per channel so the mean skin
  becomes a tone drawn from :data:`SKIN_TONES` (very dark to very pale, olive, ruddy): the base
  model's brightness and chroma axes only reach about +-3 SD around one mean albedo;
* facial hair (outside the skin mask): full beard, stubble (speckled, weaker), moustache or goatee,
  blended towards a hair colour with a soft region edge;
* lipstick: a saturated colour blended over the lips;
* eye shadow: a colour blended over the upper lids (between eye and eyebrow).

Regions are soft masks from landmark polygons in the face parametrisation
(:func:`fml_taichi.model.regions.face_parametrisation`, ~mm units near the nose), with a sigmoid
edge a few millimetres wide. :class:`VariationTables` precomputes everything per model once; drawing
the random parameters (:func:`draw_variation`, one generator per image) and applying them
(:func:`apply_variation`, batched) are separate so a batch renders with a few tensor ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import mesh as mesh_utils
from ..model import regions

BUMP_SD_MM = 1.8
BUMP_CLIP_SD = 2.5

# (name, anchor landmark sets (each a list averaged into one point), (width lo, hi) mm, amplitude scale)
# Pairs (two anchor sets) share one amplitude up to +-20 %: faces are roughly symmetric.
BUMPS = (
    ("nose_tip", ([30],), (7.0, 12.0), 1.2),
    ("nose_bridge", ([27, 28],), (6.0, 11.0), 0.8),
    ("nose_wings", ([31], [35]), (5.0, 8.0), 0.7),
    ("upper_lip", ([50, 51, 52],), (6.0, 10.0), 0.8),
    ("lower_lip", ([56, 57, 58],), (6.0, 10.0), 0.8),
    ("chin", ([8, 8, 57],), (10.0, 18.0), 1.3),
    ("cheeks", ([1, 31, 36, 36], [15, 35, 45, 45]), (14.0, 22.0), 1.0),
)

# Linear-RGB skin tones beyond the base model's span (which is one mean albedo +- a few SD).
SKIN_TONES = torch.tensor([
    [0.20, 0.11, 0.07], [0.30, 0.17, 0.10], [0.42, 0.26, 0.17], [0.55, 0.38, 0.26],
    [0.62, 0.50, 0.33], [0.82, 0.60, 0.52], [0.90, 0.74, 0.66], [0.78, 0.45, 0.40],
])
HAIR = torch.tensor([[0.04, 0.03, 0.02], [0.10, 0.06, 0.04], [0.22, 0.13, 0.07], [0.35, 0.30, 0.25],
                     [0.45, 0.33, 0.18]])
LIPSTICK = torch.tensor([[0.55, 0.04, 0.08], [0.70, 0.15, 0.30], [0.35, 0.05, 0.15], [0.75, 0.30, 0.25],
                         [0.45, 0.10, 0.35]])
EYE_SHADOW = torch.tensor([[0.25, 0.15, 0.45], [0.15, 0.30, 0.55], [0.35, 0.22, 0.12], [0.15, 0.40, 0.25],
                           [0.60, 0.50, 0.55], [0.08, 0.06, 0.08]])
BEARD_STYLES = ("full", "stubble", "moustache", "goatee")

# Landmark polygons (iBUG, 0-based) in the face parametrisation.
LIPS = list(range(48, 60))
MOUSTACHE = [31, 32, 33, 34, 35, 54, 53, 52, 51, 50, 49, 48]
CHIN_PATCH = [48, 59, 58, 57, 56, 55, 54, 10, 9, 8, 7, 6]
FULL_BEARD = list(range(2, 15)) + [35, 34, 33, 32, 31]
EYE_SHADOW_RIGHT = [36, 37, 38, 39, 21, 20, 19, 18, 17]
EYE_SHADOW_LEFT = [42, 43, 44, 45, 26, 25, 24, 23, 22]


def _soft_polygon(param: np.ndarray, lm_param: np.ndarray, idx: list[int], softness: float,
                  grow: float = 0.0) -> np.ndarray:
    """Soft inside-weight in [0, 1] of the landmark polygon ``idx``: sigmoid(signed distance / softness).

    ``grow`` (mm) enlarges the region (e.g. a beard reaches a little past the landmark outline).
    """
    poly = lm_param[idx]
    d = regions.distance_to_polygon(param, poly)
    sd = np.where(regions.inside_polygon(param, poly), d, -d) + grow
    return 1.0 / (1.0 + np.exp(-sd / softness))


def _smooth(values: np.ndarray, offsets: np.ndarray, indices: np.ndarray, iterations: int) -> np.ndarray:
    """Average each vertex with its 1-ring (CSR ``offsets``/``indices``) ``iterations`` times."""
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(len(values)), counts)
    out = values
    for _ in range(iterations):
        acc = np.bincount(rows, weights=out[indices], minlength=len(values))
        out = (out + acc) / (1.0 + counts)
    return out


@dataclass
class VariationTables:
    """Per-model precomputation: bump distances, normals and soft region masks (float32 tensors).

    bump_d2 [K, N]: squared distance (mm^2) of every vertex to each bump anchor; bump_group [K] long:
    the :data:`BUMPS` entry each anchor belongs to; normals [N, 3]: outward unit normals of the mean
    face; masks: name -> [N] soft weights ('lips', 'full', 'moustache', 'goatee', 'eye_shadow').
    """

    bump_d2: torch.Tensor
    bump_group: torch.Tensor
    normals: torch.Tensor
    masks: dict

    @classmethod
    def from_model(cls, face_model) -> "VariationTables":
        v = face_model.mean_geometry.detach().double().cpu().numpy()
        lms = face_model.landmarks.long().cpu().numpy()
        tris = face_model.triangles.long().cpu().numpy()
        anchors, group = [], []
        for g, (_, sets, _, _) in enumerate(BUMPS):
            for s in sets:
                target = v[lms[s]].mean(axis=0)
                anchors.append(v[np.argmin(((v - target) ** 2).sum(1))])  # snap onto the surface
                group.append(g)
        anchors = np.asarray(anchors)
        d2 = ((v[None, :, :] - anchors[:, None, :]) ** 2).sum(-1)
        normals = mesh_utils.vertex_normals(v, tris)
        param = regions.face_parametrisation(v, v[lms[30]])
        lp = param[lms]
        lips = _soft_polygon(param, lp, LIPS, 1.0, grow=0.5)
        not_lips = 1.0 - _soft_polygon(param, lp, LIPS, 1.0, grow=2.0)
        moustache = _soft_polygon(param, lp, MOUSTACHE, 2.5, grow=3.0) * not_lips
        goatee = np.maximum(moustache, _soft_polygon(param, lp, CHIN_PATCH, 2.5, grow=4.0) * not_lips)
        full = _soft_polygon(param, lp, FULL_BEARD, 4.0, grow=4.0) * not_lips
        # Facial hair grows outside the model's skin mask (the clean-skin region of E_glo, Eq. 14):
        # cut the hair regions by a slightly smoothed complement of it.
        off = face_model.neighbour_offsets.long().cpu().numpy()
        nbr = face_model.neighbour_indices.long().cpu().numpy()
        hairy = _smooth(1.0 - face_model.skin_mask.cpu().numpy().astype(np.float64), off, nbr, 2)
        full, moustache, goatee = full * hairy, moustache * hairy, goatee * hairy
        eyes = np.maximum(_soft_polygon(param, lp, EYE_SHADOW_RIGHT, 1.5),
                          _soft_polygon(param, lp, EYE_SHADOW_LEFT, 1.5))
        t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        masks = {"lips": t(lips), "full": t(full), "moustache": t(moustache), "goatee": t(goatee),
                 "eye_shadow": t(eyes)}
        return cls(bump_d2=t(d2), bump_group=torch.as_tensor(group), normals=t(normals), masks=masks)


@dataclass
class VariationParams:
    """One image's draw. Geometry: amplitude [K] mm (0 = bump off) and width [K] mm per anchor.
    Reflectance: tone [3] (or None), beard (style, colour [3], strength) or None, lipstick (colour,
    strength) or None, eye_shadow (colour, strength) or None, speckle seed for stubble texture."""

    amplitude: torch.Tensor
    width: torch.Tensor
    tone: torch.Tensor | None
    beard: tuple | None
    lipstick: tuple | None
    eye_shadow: tuple | None
    speckle_seed: int


def _pick(gen: torch.Generator, table: torch.Tensor) -> torch.Tensor:
    return table[int(torch.randint(len(table), (1,), generator=gen))]


def draw_variation(gen: torch.Generator, tables: VariationTables, strength: float = 1.0,
                   p_bump: float = 0.7, p_tone: float = 0.4, p_beard: float = 0.35,
                   p_lipstick: float = 0.25, p_eye_shadow: float = 0.2) -> VariationParams:
    """Draw one image's out-of-space variation from ``gen`` (fixed number and order of draws).

    ``strength`` scales every amplitude and blend weight (0 disables all variation: the face is then
    exactly in the base model's span). The ``p_*`` are per-image probabilities of each feature.
    """
    if strength < 0:
        raise ValueError(f"strength: expected a non-negative number, got {strength}")
    n_groups = len(BUMPS)
    on = torch.rand(n_groups, generator=gen) < p_bump
    clip = BUMP_CLIP_SD * BUMP_SD_MM
    amp_g = (torch.randn(n_groups, generator=gen) * BUMP_SD_MM).clamp(-clip, clip)
    amp_g = amp_g * torch.tensor([b[3] for b in BUMPS]) * on * strength
    lo = torch.tensor([b[2][0] for b in BUMPS])
    hi = torch.tensor([b[2][1] for b in BUMPS])
    width_g = lo + (hi - lo) * torch.rand(n_groups, generator=gen)
    k = len(tables.bump_group)
    asym = 1.0 + 0.2 * (2.0 * torch.rand(k, generator=gen) - 1.0)  # pairs differ by up to 20 %
    amplitude = amp_g[tables.bump_group] * asym
    width = width_g[tables.bump_group]
    u = torch.rand(4, generator=gen)
    tone = _pick(gen, SKIN_TONES) if bool(u[0] < p_tone) else None
    beard = lipstick = eye_shadow = None
    if bool(u[1] < p_beard):
        style = BEARD_STYLES[int(torch.randint(len(BEARD_STYLES), (1,), generator=gen))]
        s = float(0.5 + 0.45 * torch.rand(1, generator=gen)) * (0.6 if style == "stubble" else 1.0)
        beard = (style, _pick(gen, HAIR), min(1.0, s * strength))
    if bool(u[2] < p_lipstick):
        lipstick = (_pick(gen, LIPSTICK), min(1.0, float(0.4 + 0.5 * torch.rand(1, generator=gen)) * strength))
    if bool(u[3] < p_eye_shadow):
        eye_shadow = (_pick(gen, EYE_SHADOW), min(1.0, float(0.3 + 0.5 * torch.rand(1, generator=gen)) * strength))
    speckle_seed = int(torch.randint(2 ** 31 - 1, (1,), generator=gen))
    if strength == 0:
        tone = beard = lipstick = eye_shadow = None
    return VariationParams(amplitude, width, tone, beard, lipstick, eye_shadow, speckle_seed)


def geometry_offsets(tables: VariationTables, draws: list[VariationParams]) -> torch.Tensor:
    """Per-vertex displacement [B, N, 3] (mm) of a batch of draws, along the mean face's normals."""
    amp = torch.stack([d.amplitude for d in draws])  # [B, K]
    width = torch.stack([d.width for d in draws])
    falloff = torch.exp(-tables.bump_d2.unsqueeze(0) / (2.0 * width.unsqueeze(-1) ** 2))  # [B, K, N]
    scalar = torch.bmm(amp.unsqueeze(1), falloff).squeeze(1)  # [B, N]
    return scalar.unsqueeze(-1) * tables.normals.unsqueeze(0)


def _blend(r: torch.Tensor, weight: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    return r + weight.unsqueeze(-1) * (colour - r)


def reflectance_with_patches(tables: VariationTables, reflectance: torch.Tensor, draw: VariationParams,
                             mean_albedo: torch.Tensor) -> torch.Tensor:
    """One image's reflectance [N, 3] with tone, facial hair, lipstick and eye shadow applied.

    The result is clamped to [0, 1] when anything was applied; a draw with nothing applied returns the
    input unchanged (so ``strength = 0`` keeps a face exactly in the base span, even where extreme base
    coefficients leave [0, 1] slightly).
    """
    if draw.tone is None and draw.beard is None and draw.lipstick is None and draw.eye_shadow is None:
        return reflectance
    r = reflectance
    if draw.tone is not None:
        r = r * (draw.tone / mean_albedo.clamp_min(1e-3))
    if draw.beard is not None:
        style, colour, strength = draw.beard
        w = tables.masks["full" if style == "stubble" else style] * strength
        if style in ("stubble", "full"):
            # Hair is not a flat paint: per-vertex speckle (dense for a beard, sparse for stubble).
            g = torch.Generator().manual_seed(draw.speckle_seed)
            speck = torch.rand(w.shape, generator=g)
            w = w * (0.55 + 0.45 * speck) if style == "full" else w * (speck > 0.45).float() * (0.5 + 0.5 * speck)
        r = _blend(r, w, colour)
    if draw.lipstick is not None:
        colour, strength = draw.lipstick
        r = _blend(r, tables.masks["lips"] * strength, colour)
    if draw.eye_shadow is not None:
        colour, strength = draw.eye_shadow
        r = _blend(r, tables.masks["eye_shadow"] * strength, colour)
    return r.clamp(0.0, 1.0)


def reflectance_offsets(tables: VariationTables, base_reflectance: torch.Tensor, draws: list[VariationParams],
                        mean_albedo: torch.Tensor) -> torch.Tensor:
    """Per-vertex reflectance offset [B, N, 3] = patched - base, for a batch of draws."""
    out = torch.stack([reflectance_with_patches(tables, base_reflectance[i], d, mean_albedo)
                       for i, d in enumerate(draws)])
    return out - base_reflectance


# ---- Region fields: several millimetres of geometry outside the base span ---------------------------
# The bumps above leave only ~0.35 mm RMS (face region) outside the 40 + 10 base modes after a least-
# squares projection. Region fields add a larger, learnable part, drawn from their own random stream so
# the draws above (and the synthetic video clip built on them) do not change:
#   "rbf": Gaussian bumps along the normal with jittered centres near nose, chin, cheeks, brows, lips;
#   "exaggerate": the face's own identity displacement scaled by a drawn factor inside one soft region
#   window (a mode scaled differently in one region than elsewhere leaves the base span).
FIELD_FAMILIES = ("none", "rbf", "exaggerate")
# (name, anchor landmarks averaged into one point)
FIELD_REGIONS = (
    ("nose", [27, 28, 29, 30, 33]), ("chin", [7, 8, 9, 57]), ("cheek_right", [1, 2, 31, 36, 48]),
    ("cheek_left", [15, 14, 35, 45, 54]), ("brow_right", [17, 18, 19, 20, 21]),
    ("brow_left", [22, 23, 24, 25, 26]), ("lips", [48, 51, 54, 57]),
)
RBF_SD_MM = 4.0
RBF_PER_REGION = 3
RBF_JITTER_MM = 8.0
RBF_WIDTH_MM = (6.0, 14.0)
EXAGGERATE_RANGE = 2.0  # factor - 1 uniform in +-this
EXAGGERATE_WIDTH_MM = (20.0, 35.0)


@dataclass
class FieldTables:
    """Per-model tables of the region fields: vertices [N, 3] and normals [N, 3] of the mean face,
    region anchors [R, 3] (snapped onto the surface)."""

    vertices: torch.Tensor
    normals: torch.Tensor
    anchors: torch.Tensor

    @classmethod
    def from_model(cls, face_model) -> "FieldTables":
        v = face_model.mean_geometry.detach().double().cpu().numpy()
        lms = face_model.landmarks.long().cpu().numpy()
        tris = face_model.triangles.long().cpu().numpy()
        anchors = []
        for _, idx in FIELD_REGIONS:
            target = v[lms[idx]].mean(axis=0)
            anchors.append(v[np.argmin(((v - target) ** 2).sum(1))])
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        return cls(vertices=t(v), normals=t(mesh_utils.vertex_normals(v, tris)), anchors=t(anchors))


def field_geometry_offsets(tables: FieldTables, gen: torch.Generator, family: str, strength: float,
                           identity_offset: torch.Tensor | None = None) -> torch.Tensor:
    """One image's region-field displacement [N, 3] (mm), drawn from ``gen`` (fixed draw order).

    ``identity_offset`` [N, 3]: the face's shape-basis displacement (needed by "exaggerate").
    """
    if family not in FIELD_FAMILIES:
        raise ValueError(f"fields: expected one of {FIELD_FAMILIES}, got {family!r}")
    v = tables.vertices
    if family == "none" or strength == 0:
        return torch.zeros_like(v)
    r = len(tables.anchors)
    if family == "rbf":
        k = r * RBF_PER_REGION
        centres = tables.anchors.repeat_interleave(RBF_PER_REGION, 0) + \
            RBF_JITTER_MM * (2 * torch.rand(k, 3, generator=gen) - 1)
        lo, hi = RBF_WIDTH_MM
        width = lo + (hi - lo) * torch.rand(k, generator=gen)
        amp = (torch.randn(k, generator=gen) * RBF_SD_MM).clamp(-2.0 * RBF_SD_MM, 2.0 * RBF_SD_MM)
        d2 = ((v[None] - centres[:, None]) ** 2).sum(-1)  # [K, N]
        scalar = (amp[:, None] * torch.exp(-d2 / (2 * width[:, None] ** 2))).sum(0)
        return strength * scalar[:, None] * tables.normals
    if identity_offset is None:
        raise ValueError("fields 'exaggerate': needs the face's identity_offset")
    which = int(torch.randint(r, (1,), generator=gen))
    lo, hi = EXAGGERATE_WIDTH_MM
    width = float(lo + (hi - lo) * torch.rand(1, generator=gen))
    factor = float(EXAGGERATE_RANGE * (2 * torch.rand(1, generator=gen) - 1))
    window = torch.exp(-((v - tables.anchors[which]) ** 2).sum(-1) / (2 * width ** 2))
    return strength * factor * window[:, None] * identity_offset


def out_of_space_rms(offsets: torch.Tensor, basis: torch.Tensor, region: torch.Tensor | None = None) -> tuple:
    """(RMS, max) per-vertex norm (units of ``offsets``) of ``offsets`` [B, N, 3] after a least-squares
    projection onto the span of ``basis`` [N, 3, M], over ``region`` [N] bool (default all)."""
    q, _ = torch.linalg.qr(basis.reshape(-1, basis.shape[-1]).double())
    flat = offsets.double().reshape(offsets.shape[0], -1)
    res = (flat - (flat @ q) @ q.T).reshape(offsets.shape)
    norm = res.norm(dim=-1)
    if region is not None:
        norm = norm[:, region]
    return float(norm.pow(2).mean().sqrt()), float(norm.max())


# ---- Regional reflectance: skin colour, flush, brows, lips and freckles beyond the base ------------------
# The patches above are occasional (a beard, lipstick, eye shadow on some faces). Real faces vary
# everywhere in ways a global albedo PCA does not span: forehead, nose, cheeks and jaw differ in tone
# (melanin and blood by region), cheeks flush, brows differ in darkness and colour, the lips' own
# colour varies, and freckles speckle the nose and cheeks. "regional" draws all of these per face from
# its own random stream; magnitudes in docs/training.md.
REFLECTANCE_FIELD_FAMILIES = ("none", "regional")
# (name, anchor landmarks averaged into one point, window width mm)
TONE_REGIONS = (
    ("forehead", [19, 24, 27], 28.0), ("nose", [28, 30, 33], 14.0), ("cheek_right", [1, 31, 36, 48], 20.0),
    ("cheek_left", [15, 35, 45, 54], 20.0), ("jaw", [5, 8, 11, 57], 24.0), ("eyes", [36, 39, 42, 45], 18.0),
)
TONE_BRIGHTNESS_SD = 0.10  # log-brightness SD per region
TONE_CHROMA_SD = 0.06  # log per-channel SD per region
FLUSH_COLOUR = torch.tensor([0.78, 0.30, 0.30])
FLUSH_RANGE = (0.10, 0.40)
BROW_RANGE = (0.35, 0.85)
LIP_RED_RANGE = (0.85, 1.20)
LIP_GB_RANGE = (0.65, 1.05)
FRECKLE_COLOUR = torch.tensor([0.36, 0.20, 0.12])
FRECKLE_DENSITY = 0.18
FRECKLE_RANGE = (0.25, 0.6)
BROW_RIGHT = [17, 18, 19, 20, 21]
BROW_LEFT = [22, 23, 24, 25, 26]


@dataclass
class ReflectanceFieldTables:
    """Per-model soft windows [N] of the regional reflectance (float32): ``tone`` [R, N] (one per
    :data:`TONE_REGIONS`), ``cheeks``, ``brows``, ``lips``, ``freckles`` (nose and cheeks), and the CSR
    1-ring (``offsets``, ``indices``) that smooths the freckle speckle into spots."""

    tone: torch.Tensor
    cheeks: torch.Tensor
    brows: torch.Tensor
    lips: torch.Tensor
    freckles: torch.Tensor
    offsets: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_model(cls, face_model) -> "ReflectanceFieldTables":
        v = face_model.mean_geometry.detach().double().cpu().numpy()
        lms = face_model.landmarks.long().cpu().numpy()
        windows = []
        for _, idx, width in TONE_REGIONS:
            c = v[lms[idx]].mean(axis=0)
            windows.append(np.exp(-((v - c) ** 2).sum(1) / (2 * width ** 2)))
        tone = np.stack(windows)
        param = regions.face_parametrisation(v, v[lms[30]])
        lp = param[lms]
        brows = np.maximum(_soft_polygon(param, lp, BROW_RIGHT, 0.8, grow=2.0),
                           _soft_polygon(param, lp, BROW_LEFT, 0.8, grow=2.0))
        lips = _soft_polygon(param, lp, LIPS, 1.0, grow=0.5)
        cheeks = np.maximum(tone[2], tone[3]) * (1.0 - lips)
        freckles = np.clip(np.maximum(tone[1], cheeks) * 1.3, 0.0, 1.0) * (1.0 - brows) * (1.0 - lips)
        t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return cls(tone=t(tone), cheeks=t(cheeks), brows=t(brows), lips=t(lips), freckles=t(freckles),
                   offsets=face_model.neighbour_offsets.long().cpu().numpy(),
                   indices=face_model.neighbour_indices.long().cpu().numpy())


def _uniform_in(gen: torch.Generator, lo_hi: tuple) -> float:
    lo, hi = lo_hi
    return float(lo + (hi - lo) * torch.rand(1, generator=gen))


def field_reflectance(tables: ReflectanceFieldTables, gen: torch.Generator, family: str, strength: float,
                      reflectance: torch.Tensor) -> torch.Tensor:
    """One face's reflectance [N, 3] with the regional variation of ``family`` applied (fixed draw
    order from ``gen``; "none" or ``strength`` 0 returns the input unchanged)."""
    if family not in REFLECTANCE_FIELD_FAMILIES:
        raise ValueError(f"reflectance_fields: expected one of {REFLECTANCE_FIELD_FAMILIES}, got {family!r}")
    if family == "none" or strength == 0:
        return reflectance
    r_count = len(TONE_REGIONS)
    log_gain = (torch.randn(r_count, 1, generator=gen) * TONE_BRIGHTNESS_SD
                + torch.randn(r_count, 3, generator=gen) * TONE_CHROMA_SD) * strength
    r = reflectance * torch.exp(tables.tone.T @ log_gain)  # [N, 3]: regions blend smoothly
    flush = _uniform_in(gen, FLUSH_RANGE) * strength
    r = _blend(r, tables.cheeks * flush, FLUSH_COLOUR)
    brow_colour = _pick(gen, HAIR)
    r = _blend(r, tables.brows * min(1.0, _uniform_in(gen, BROW_RANGE) * strength), brow_colour)
    lip_gain = torch.tensor([_uniform_in(gen, LIP_RED_RANGE), _uniform_in(gen, LIP_GB_RANGE),
                             _uniform_in(gen, LIP_GB_RANGE)])
    r = r * (1.0 + tables.lips[:, None] * (lip_gain - 1.0) * strength)
    freckled = bool(torch.rand(1, generator=gen) < 0.35)
    amount = _uniform_in(gen, FRECKLE_RANGE) * strength
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=gen))
    if freckled:
        g = torch.Generator().manual_seed(seed)
        spots = (torch.rand(len(r), generator=g) < FRECKLE_DENSITY).double().numpy()
        spots = torch.as_tensor(_smooth(spots, tables.offsets, tables.indices, 1), dtype=r.dtype)
        r = _blend(r, (spots * 2.0).clamp(0, 1) * tables.freckles * amount, FRECKLE_COLOUR)
    return r.clamp(0.0, 1.0)
