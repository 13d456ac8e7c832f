"""What the viewer shows, without any window: slider state -> face parameters -> per-vertex colours.

The viewer draws with GGUI, but every pixel colour it shows is computed here with the paper's image
formation (Sec. 5): model-space geometry and reflectance from the multi-level model (Eq. 1-4), the
rigid pose ``v_cam = R v + t``, area-weighted camera-space normals and SH shading
``c = r * sum_b gamma_b H_b(n)`` (Eq. 5) through the same Taichi kernels that training uses. GGUI only
rasterises and interpolates these colours (ambient light 1, no point lights; see ``viewer``).

Everything is in camera space (OpenCV frame, millimetres); the GGUI camera sits at the origin looking
down +z, so projecting with it is exactly the pinhole of ``docs/conventions.md``.

Orbiting turns the *face* (the Euler angles of the pose) rather than moving GGUI's camera. Since the
SH light lives in camera space, that is the same as orbiting a camera that carries its light rig with
it, and it keeps the shading equal to what the training renderer would produce for that pose.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..common import camera as _camera
from ..model.mesh import vertex_normals as mesh_normals_np
from ..model.params import FaceParams
from ..ops.normals import vertex_normals
from ..ops.render import transform
from ..ops.shading import sh_shading
from ..ops.transform import euler_to_matrix
from ..reference.image_formation import SH_C0, SH_C1
from .modes import CorrectiveModes, corrective_matrix, principal_modes

#: What the colours show: the shaded image (Eq. 5), reflectance only, shading only (irradiance,
#: i.e. Eq. 5 with white reflectance), camera-space normals, or the geometry corrective along the
#: normal over the shading (see :func:`view_colours`).
VIEWS = ("shaded", "reflectance", "shading", "normals", "corrective")

#: Offset (mm along the outward normal) at which the "corrective" view's red/blue saturates.
CORRECTIVE_RANGE_MM = 5.0

#: Default SH light [9, 3]: a uniform white irradiance of 0.6 plus a key light from the camera and
#: slightly above: irradiance 0.9 for a normal facing the camera, 0.6 facing sideways, 0.45 facing
#: down, at most 0.94 for any normal, so the "shading" view never clips and shows the geometry.
#: Band-1 coefficients multiply 0.4886 * (y, z, x) of the camera-space normal; a face normal points
#: toward the camera (z < 0) and up is y < 0, so those two coefficients are negative.
DEFAULT_LIGHT = torch.tensor(
    [[0.6 / SH_C0] * 3, [-0.15 / SH_C1] * 3, [-0.3 / SH_C1] * 3] + [[0.0] * 3] * 6, dtype=torch.float32
)


@dataclass
class ViewState:
    """Everything the controls change. Model amounts are in standard deviations (sigma units).

    shape, expression, reflectance: base-model amounts, one per basis mode (added to the start face).
    geometry_modes, reflectance_modes: amounts along the corrective principal modes (added to the
        start face's corrective coefficients).
    final: show the final level (base + correctives) rather than the base level.
    view: one of ``VIEWS``. light: [9, 3] SH coefficients (camera space).
    yaw, pitch: orbit angles in radians added to the pose's y and x Euler angles.
    distance: camera-to-model-origin distance in mm (the pose translation's z).
    """

    shape: np.ndarray
    expression: np.ndarray
    reflectance: np.ndarray
    geometry_modes: np.ndarray
    reflectance_modes: np.ndarray
    light: np.ndarray
    distance: float
    final: bool = True
    view: str = "shaded"
    yaw: float = 0.0
    pitch: float = 0.0

    def copy(self) -> "ViewState":
        """A deep copy (the arrays are mutable and the controls edit them in place)."""
        return copy.deepcopy(self)

    def key(self) -> tuple:
        """A hashable snapshot: the viewer recomputes colours only when this changes."""
        arrays = (self.shape, self.expression, self.reflectance, self.geometry_modes, self.reflectance_modes,
                  self.light)
        return tuple(a.tobytes() for a in arrays) + (self.distance, self.final, self.view, self.yaw, self.pitch)


@dataclass
class Frame:
    """Per-vertex data for one image, camera space: v_cam [N, 3] mm, normals [N, 3] unit, colours [N, 3] in [0, 1]."""

    v_cam: torch.Tensor
    normals: torch.Tensor
    colours: torch.Tensor


class FaceScene:
    """A multi-level face model and its corrective modes, turned into camera-space frames.

    Args:
        face_model: the base model (``fml_taichi.model.FaceModel``); ignored when ``multilevel`` is
            given (its own copy is used, so the two cannot disagree).
        multilevel: the ``MultiLevelModel`` holding the learned correctives, or ``None`` for a base
            model alone (then final == base and there are no corrective modes). Cast to float32 and
            put in eval mode in place. A non-linear ("mlp") corrective is analysed through its
            secant linearisation at 0 (``corrective_modes.corrective_matrix``); sliders still
            evaluate the real non-linear map.
        start: optional ``FaceParams`` (batch 1) the controls start from (a reconstruction); default:
            the mean face, frontal, at ``camera.DEFAULT_DISTANCE_MM``, lit by ``DEFAULT_LIGHT``.
        regressed: optional ``FaceParams`` of a set of regressed faces (batch >= 2): the corrective
            modes' sigmas are the spread of their corrective coefficients (``corrective_modes``).
    """

    def __init__(self, face_model, multilevel=None, start: FaceParams | None = None,
                 regressed: FaceParams | None = None):
        if multilevel is not None:
            # The viewer evaluates in float32 (the kernels' training dtype); .float() casts Theta and
            # the multilevel's own copy of the base model in place.
            multilevel = multilevel.float().eval()
            face_model = multilevel.face_model
        self.face_model = face_model.to(dtype=torch.float32)
        self.multilevel = multilevel
        self.triangles = self.face_model.triangles.contiguous()
        self.n_geometry, self.n_reflectance = _corrective_sizes(multilevel)
        self.start = self._check_start(start)
        self.geometry_modes = self._modes("geometry", regressed)
        self.reflectance_modes = self._modes("reflectance", regressed)

    # ---- set-up -----------------------------------------------------------------------------------
    def _zeros(self) -> FaceParams:
        fm = self.face_model
        p = FaceParams.zeros(1, fm.m_shape, fm.m_expression, fm.m_reflectance, self.n_geometry, self.n_reflectance)
        p.translation[0, 2] = _camera.DEFAULT_DISTANCE_MM
        p.light[0] = DEFAULT_LIGHT
        return p

    def _check_start(self, start: FaceParams | None) -> FaceParams:
        if start is None:
            return self._zeros()
        if not isinstance(start, FaceParams):
            raise ValueError(f"start: expected FaceParams, got {type(start).__name__}")
        start = start.detach().to(dtype=torch.float32).validate()
        ref = self._zeros()
        for name in FaceParams.names():
            got, want = getattr(start, name), getattr(ref, name)
            if tuple(got.shape[1:]) != tuple(want.shape[1:]):
                raise ValueError(f"start.{name}: shape {tuple(got.shape)} does not fit the model "
                                 f"(expected (B, {', '.join(map(str, want.shape[1:]))}))")
        return start.index(0)

    def _modes(self, kind: str, regressed: FaceParams | None) -> CorrectiveModes | None:
        c = self.n_geometry if kind == "geometry" else self.n_reflectance
        if self.multilevel is None or c == 0:
            return None
        theta = corrective_matrix(lambda d: self._corrective(kind, d), c, self.face_model.n_vertices)
        deltas = None
        if regressed is not None and regressed.batch_size >= 2:
            deltas = getattr(regressed, f"delta_{kind}").detach().to(torch.float32)
        return principal_modes(theta, deltas, sign_reference=self._sign_reference(kind))

    def _sign_reference(self, kind: str) -> torch.Tensor:
        """+sigma means "out of the head on average" (geometry: outward normals of the mean face) or
        "brighter on average" (reflectance: all ones)."""
        fm = self.face_model
        if kind == "reflectance":
            return torch.ones(fm.n_vertices, 3)
        n = mesh_normals_np(fm.mean_geometry.double().numpy(), fm.triangles.long().numpy())
        return torch.from_numpy(n).float()

    def _corrective(self, kind: str, delta: torch.Tensor) -> torch.Tensor:
        """Offsets [B, N, 3] of the ``kind`` corrective ``F(delta | Theta)`` for coefficients [B, C].

        Calls the multilevel's corrective module directly (``MultiLevelModel.geometry_corrective`` /
        ``reflectance_corrective``): probing through the full forward would also evaluate the base
        model C times.
        """
        with torch.no_grad():
            return getattr(self.multilevel, f"{kind}_corrective")(delta.to(torch.float32))

    def modes(self, kind: str) -> CorrectiveModes | None:
        """The geometry or reflectance :class:`CorrectiveModes` (``None`` without correctives)."""
        if kind not in ("geometry", "reflectance"):
            raise ValueError(f"kind: expected 'geometry' or 'reflectance', got {kind!r}")
        return self.geometry_modes if kind == "geometry" else self.reflectance_modes

    def initial_state(self) -> ViewState:
        """All amounts 0 (the start face), its light and distance, final level, shaded view."""
        fm = self.face_model
        kg = self.geometry_modes.count if self.geometry_modes is not None else 0
        kr = self.reflectance_modes.count if self.reflectance_modes is not None else 0
        return ViewState(shape=np.zeros(fm.m_shape, np.float32), expression=np.zeros(fm.m_expression, np.float32),
                         reflectance=np.zeros(fm.m_reflectance, np.float32), geometry_modes=np.zeros(kg, np.float32),
                         reflectance_modes=np.zeros(kr, np.float32), light=self.start.light[0].numpy().copy(),
                         distance=float(self.start.translation[0, 2]))

    # ---- evaluation --------------------------------------------------------------------------------
    def params(self, state: ViewState) -> FaceParams:
        """The batch-1 :class:`FaceParams` the state describes (start face + slider amounts)."""
        _check_state(state)
        fm, s = self.face_model, self.start
        sig = lambda t: torch.as_tensor(np.asarray(t, np.float32))  # noqa: E731
        rot = s.rotation.clone()
        rot[0, 0] += state.pitch
        rot[0, 1] += state.yaw
        trans = s.translation.clone()
        trans[0, 2] = float(state.distance)
        return FaceParams(
            shape=s.shape + _fit("shape", sig(state.shape), fm.m_shape) * fm.shape_sigma,
            expression=s.expression + _fit("expression", sig(state.expression), fm.m_expression) * fm.expression_sigma,
            reflectance=s.reflectance
            + _fit("reflectance", sig(state.reflectance), fm.m_reflectance) * fm.reflectance_sigma,
            delta_geometry=s.delta_geometry + self._mode_coefficients("geometry", state.geometry_modes),
            delta_reflectance=s.delta_reflectance + self._mode_coefficients("reflectance", state.reflectance_modes),
            rotation=rot, translation=trans, light=sig(state.light).reshape(1, 9, 3),
        )

    def _mode_coefficients(self, kind: str, amounts) -> torch.Tensor:
        modes = self.modes(kind)
        n = self.n_geometry if kind == "geometry" else self.n_reflectance
        amounts = np.asarray(amounts, np.float32)
        if modes is None:
            if amounts.size and np.any(amounts):
                raise ValueError(f"state.{kind}_modes: this model has no {kind} correctives")
            return torch.zeros(1, n)
        if amounts.shape[0] > modes.count:
            raise ValueError(f"state.{kind}_modes: {amounts.shape[0]} amounts for {modes.count} modes")
        return modes.combine(torch.from_numpy(amounts)).to(torch.float32).reshape(1, n)

    def evaluate(self, state: ViewState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model-space geometry [N, 3] (mm), reflectance [N, 3] and the geometry corrective [N, 3]
        (mm) of the level the state selects (the corrective is zero at the base level)."""
        p = self.params(state)
        with torch.no_grad():
            if self.multilevel is None:
                geo, refl = self.face_model.base(p.shape, p.expression, p.reflectance)
                corr = torch.zeros_like(geo)
            else:
                out = self.multilevel(p)
                geo = out.final_geometry if state.final else out.base_geometry
                refl = out.final_reflectance if state.final else out.base_reflectance
                corr = out.geometry_corrective if state.final else torch.zeros_like(geo)
        return tuple(t.reshape(-1, 3).contiguous() for t in (geo, refl, corr))

    def frame(self, state: ViewState) -> Frame:
        """Camera-space vertices, normals and the colours of ``state.view`` (clipped to [0, 1]).

        Uses the renderer's pose transform and the training ops (normals, SH shading), so the shaded
        view is Eq. 5 exactly as the photometric loss sees it; GGUI only rasterises.
        """
        p = self.params(state)
        geo, refl, corr = self.evaluate(state)
        with torch.no_grad():
            v_cam = transform(geo[None], p.rotation, p.translation)
            normals = vertex_normals(v_cam, self.triangles)
            # The corrective's component along the outward normal, in mm (rotation only: an offset).
            corr_cam = corr[None] @ euler_to_matrix(p.rotation).transpose(1, 2)
            along = (corr_cam * normals).sum(-1)
            colours = view_colours(state.view, normals, refl[None], p.light, sh_shading, along)
        return Frame(v_cam=v_cam[0].contiguous(), normals=normals[0].contiguous(),
                     colours=colours[0].clamp(0.0, 1.0).contiguous())


def view_colours(view: str, normals: torch.Tensor, reflectance: torch.Tensor, light: torch.Tensor,
                 shade, offset_along_normal: torch.Tensor | None = None) -> torch.Tensor:
    """Per-vertex colours [B, N, 3] for one of ``VIEWS`` (not yet clipped).

    ``shade(normals, reflectance, light)`` is the SH shading function (Eq. 5). "shading" is the
    irradiance alone (white reflectance); "normals" maps the camera-space normal to RGB in the usual
    normal-map way, after turning it into a y-up, z-toward-the-viewer frame so that a normal facing the
    camera is light blue (0.5, 0.5, 1) whatever the OpenCV axis signs. "corrective" tints the shading
    view by ``offset_along_normal`` [B, N] (mm; the geometry corrective along the outward normal):
    white at 0, red outwards, blue inwards, saturating at ``CORRECTIVE_RANGE_MM``; the shading stays
    visible underneath, so where a mode acts and what it does to the shape read together.
    """
    if view == "shaded":
        return shade(normals, reflectance, light)
    if view == "reflectance":
        return reflectance
    if view == "shading":
        return shade(normals, torch.ones_like(reflectance), light)
    if view == "normals":
        flip = torch.tensor([1.0, -1.0, -1.0], dtype=normals.dtype)
        return 0.5 * (normals * flip + 1.0)
    if view == "corrective":
        grey = shade(normals, torch.ones_like(reflectance), light)
        if offset_along_normal is None:
            offset_along_normal = torch.zeros(normals.shape[:2], dtype=normals.dtype)
        return grey * diverging(offset_along_normal / CORRECTIVE_RANGE_MM)
    raise ValueError(f"view: expected one of {VIEWS}, got {view!r}")


def diverging(t: torch.Tensor) -> torch.Tensor:
    """White-centred red/blue colours [..., 3] for values ``t`` (clamped to [-1, 1]): +1 red, -1 blue."""
    t = t.clamp(-1.0, 1.0)[..., None]
    red = torch.tensor([1.0, 0.15, 0.1], dtype=t.dtype)
    blue = torch.tensor([0.1, 0.3, 1.0], dtype=t.dtype)
    white = torch.ones(3, dtype=t.dtype)
    return torch.where(t >= 0, white + t * (red - white), white - t * (blue - white))


def _fit(name: str, amounts: torch.Tensor, m: int) -> torch.Tensor:
    """Amounts for the first k <= m modes, zero-padded to m, as a [1, m] row."""
    if amounts.ndim != 1 or amounts.shape[0] > m:
        raise ValueError(f"state.{name}: expected at most {m} amounts, got shape {tuple(amounts.shape)}")
    if not bool(torch.isfinite(amounts).all()):
        raise ValueError(f"state.{name}: contains NaN or inf values")
    out = torch.zeros(1, m)
    out[0, : amounts.shape[0]] = amounts
    return out


def _check_state(state: ViewState) -> None:
    if not isinstance(state, ViewState):
        raise ValueError(f"state: expected ViewState, got {type(state).__name__}")
    if state.view not in VIEWS:
        raise ValueError(f"state.view: expected one of {VIEWS}, got {state.view!r}")
    light = np.asarray(state.light)
    if light.shape != (9, 3) or not np.isfinite(light).all():
        raise ValueError(f"state.light: expected 9 x 3 finite SH coefficients, got shape {light.shape}")
    if not (math.isfinite(state.distance) and state.distance > 0):
        raise ValueError(f"state.distance: expected a positive distance in mm, got {state.distance!r}")
    if not (math.isfinite(state.yaw) and math.isfinite(state.pitch)):
        raise ValueError("state.yaw/pitch: expected finite angles in radians")


def _corrective_sizes(multilevel) -> tuple[int, int]:
    """(C_g, C_r) of a MultiLevelModel, (0, 0) for none."""
    if multilevel is None:
        return 0, 0
    return int(multilevel.n_correctives_geometry), int(multilevel.n_correctives_reflectance)
