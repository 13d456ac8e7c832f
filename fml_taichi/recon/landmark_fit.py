"""Pose, shape and expression from 68 detected 2D landmarks: a fast batched fit in the style of eos.

Under a perspective camera ``[fx, fy, cx, cy]``, for a whole batch at once:

1. **rigid start**: an affine camera fitted to the inner landmarks (17-67), whose rows give the
   rotation (any roll) and whose scale gives the depth, then ``pose_steps`` Gauss-Newton steps of
   the pose on those points;
2. **jaw contour**: each jaw landmark (0-16) is assigned, among its contour candidates (ordered from
   the face's inside outwards, up to its own frontal vertex), the vertex a 2D detector marks: its own
   vertex while that faces the camera, otherwise the silhouette, i.e. the outermost candidate that
   still faces the camera with every candidate inside it (the rule of the synthetic detector,
   :mod:`fml_taichi.data.landmark_noise`, without its depth test);
3. **pose, shape and expression**, by one of two solvers (``LandmarkFitConfig.solver``):

   * ``"joint"`` (default): Gauss-Newton steps on all of them together, minimising the reprojection
     error in units of the detector noise plus the model prior, the jaw re-slid after each step;
   * ``"alternating"`` (eos's scheme): pose steps alternated with a regularised *linear* least squares
     for the coefficients at the fixed pose (multiplying the projection by the point's depth makes
     it linear, ``(u - cx) z = fx x``; dividing the rows by the current depth keeps pixel units).

   The prior is the model's standard deviations, the data weight the detector's pixel noise,
   ``sigma_nme`` inter-ocular distances. Measured on 60 synthetic faces at yaw 10-75 and roll 10-40
   degrees with detector-like noise, the joint solver converges in 2-3 steps where the alternation
   needs 4 (median rotation error 1.13 vs 1.48 degrees, NME 0.0332 vs 0.0336) and takes about
   half the time.

All maths is float64 numpy on small arrays (68 points, ~50 coefficients); per-call numpy overhead is
what costs, so each step is written as a few broadcasts (``benchmarks/bench_inference.py`` times the
fit inside the pipeline).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compiled import IMPLS, note_first_compile, resolve_impl

__all__ = [
    "LandmarkFit",
    "LandmarkFitConfig",
    "LandmarkFitter",
    "affine_pose",
    "euler_to_matrix_np",
    "matrix_to_euler",
    "rodrigues",
]

N_JAW = 17
INNER = np.arange(17, 68)
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class LandmarkFitConfig:
    """iterations: pose / contour / shape alternations. pose_steps: Gauss-Newton steps of the first
    pose stage (from the affine start); later_pose_steps: of the later ones (already close).
    converged: stop alternating once no coefficient moved more than this (in prior sigmas).
    sigma_nme: detector noise, in inter-ocular distances (sets the data weight against the prior).
    min_sigma_px: floor of that noise in pixels. expression_scale: extra factor on the expression prior SD.
    jaw: ``"contour"`` (default): each jaw landmark slides along its contour to the silhouette, as a
        2D detector trained on 300-W marks it (dlib); ``"fixed"``: each stays at its own vertex, for
        detectors that mark fixed points of a 3D face mesh whatever the pose (MediaPipe's face oval).
    impl: None (default: :func:`~fml_taichi.recon.compiled.default_impl`, the numba-compiled joint
        solver of :mod:`~fml_taichi.recon.landmark_fit_jit` when numba imports), ``"numba"`` or
        ``"numpy"`` (this module's code, the reference, and the faster for batches; the alternating
        solver always runs here).
    """

    iterations: int = 3
    pose_steps: int = 1
    later_pose_steps: int = 1
    converged: float = 0.02
    sigma_nme: float = 0.025
    min_sigma_px: float = 0.5
    expression_scale: float = 1.0
    solver: str = "joint"
    jaw: str = "contour"
    impl: str | None = None

    def __post_init__(self):
        if self.impl is not None and self.impl not in IMPLS:
            raise ValueError(f"impl must be None or one of {IMPLS}, got {self.impl!r}")
        if self.jaw not in ("contour", "fixed"):
            raise ValueError(f"jaw must be 'contour' or 'fixed', got {self.jaw!r}")
        if self.solver not in ("joint", "alternating"):
            raise ValueError(f"solver must be 'joint' or 'alternating', got {self.solver!r}")
        if self.iterations < 1 or self.pose_steps < 1:
            raise ValueError(f"iterations and pose_steps must be >= 1, got {self.iterations}, {self.pose_steps}")
        if not self.sigma_nme > 0 or not self.min_sigma_px > 0 or not self.expression_scale > 0:
            raise ValueError("sigma_nme, min_sigma_px and expression_scale must be positive")


@dataclass
class LandmarkFit:
    """The fit of a batch (``plausibility`` [B]: RMS residual over the *frontal* inter-ocular distance
    the fitted pose gives the face, a yaw-independent measure of how face-like the points are). rotation [B, 3] Euler (rx, ry, rz) radians, ``R = Rz Ry Rx``; matrix
    [B, 3, 3]; translation [B, 3] mm; shape [B, m_s]; expression [B, m_e]; vertices [B, 68] the
    landmark vertices (jaw slid); landmarks_2d [B, 68, 2] their projections; nme [B] against the
    input points (inter-ocular); rms_px [B]."""

    rotation: np.ndarray
    matrix: np.ndarray
    translation: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    vertices: np.ndarray
    landmarks_2d: np.ndarray
    nme: np.ndarray
    rms_px: np.ndarray
    plausibility: np.ndarray


# ---- rotations --------------------------------------------------------------------------------------


def euler_to_matrix_np(rotation: np.ndarray) -> np.ndarray:
    """``R = Rz(rz) Ry(ry) Rx(rx)`` for [B, 3] Euler angles (docs/conventions.md), [B, 3, 3]."""
    c, s = np.cos(rotation), np.sin(rotation)
    cx, cy, cz = c[:, 0], c[:, 1], c[:, 2]
    sx, sy, sz = s[:, 0], s[:, 1], s[:, 2]
    rows = [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
            sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
            -sy, cy * sx, cy * cx]
    return np.stack(rows, -1).reshape(-1, 3, 3)


def matrix_to_euler(r: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix_np` (ry in [-90, 90] degrees), [B, 3]."""
    ry = -np.arcsin(np.clip(r[:, 2, 0], -1.0, 1.0))
    rx = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    rz = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    return np.stack([rx, ry, rz], -1)


_SKEW = np.zeros((3, 9))  # k @ _SKEW is the flattened cross-product matrix [k]_x
for _i, _j, _c, _sign in ((0, 1, 2, -1), (0, 2, 1, 1), (1, 0, 2, 1), (1, 2, 0, -1), (2, 0, 1, -1), (2, 1, 0, 1)):
    _SKEW[_c, 3 * _i + _j] = _sign


_EYE3, _EYE6 = np.eye(3), np.eye(6)


def rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation matrices [B, 3, 3] of rotation vectors [B, 3]: ``cos(t) I + sin(t) [k]_x + (1 - cos(t)) k k^T``."""
    theta = np.sqrt((w * w).sum(-1))[:, None, None]
    k = w / np.maximum(theta[:, 0], 1e-12)
    c = np.cos(theta)
    return c * _EYE3 + np.sin(theta) * (k @ _SKEW).reshape(-1, 3, 3) + (1 - c) * (k[:, :, None] * k[:, None])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis, broadcasting (np.cross costs ~30 us a call; basic slices
    instead of index lists save the four gathers, with the same products in the same order)."""
    a0, a1, a2 = a[..., 0:1], a[..., 1:2], a[..., 2:3]
    b0, b1, b2 = b[..., 0:1], b[..., 1:2], b[..., 2:3]
    return np.concatenate([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt((v * v).sum(-1, keepdims=True)), 1e-300)


def _orthonormal_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A rotation [B, 3, 3] whose first two rows are the nearest orthonormal pair to rows a, b [B, 3]
    (symmetric: the bisector of a and b is kept, both rows turn by the same angle), third = their cross."""
    c, d = _unit(_unit(a) + _unit(b)), _unit(_unit(a) - _unit(b))
    r1, r2 = (c + d) * np.sqrt(0.5), (c - d) * np.sqrt(0.5)
    return np.stack([r1, r2, _cross(r1, r2)], 1)


def affine_pose(x2: np.ndarray, x3: np.ndarray, k: np.ndarray, pinv: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pose ``(R [B, 3, 3], t [B, 3])`` from an affine camera fitted to corresponding points.

    x2 [B, P, 2] pixels, x3 [P, 3] model mm, k [B, 4]; ``pinv`` the pseudo-inverse of ``[x3, 1]``
    (computed when not given). The affine rows are ``(f / z) r_1,2`` of a weak-perspective view:
    their SVD gives the nearest rotation, their scale the depth.
    """
    b = x2.shape[0]
    if pinv is None:
        pinv = np.linalg.pinv(np.concatenate([x3, np.ones((len(x3), 1))], 1))  # [4, P]
    sol = pinv @ x2  # [B, 4, 2]
    a = sol[:, :3].transpose(0, 2, 1)  # [B, 2, 3]
    off = sol[:, 3]
    a_n = a / k[:, :2, None]  # rows r_i / z
    scale = np.linalg.norm(a_n, axis=2).mean(1)  # 1 / z
    rows = a_n / scale[:, None, None]
    rot = _orthonormal_rows(rows[:, 0], rows[:, 1])
    z = 1.0 / scale
    centroid = x3.mean(0)
    # The affine offset maps the model origin; its depth is z minus the centroid's depth offset.
    tz = z - (rot[:, 2] @ centroid)
    tx = (off[:, 0] - k[:, 2]) / k[:, 0] * z
    ty = (off[:, 1] - k[:, 3]) / k[:, 1] * z
    t = np.stack([tx, ty, np.broadcast_to(tz, (b,))], -1)
    return rot, t


# ---- the fitter -------------------------------------------------------------------------------------


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, np.float64)


def _jaw_candidates(face_model) -> tuple[np.ndarray, np.ndarray]:
    """[17, K] candidate vertices (inside -> own vertex, padded with the own vertex) and validity [17, K]."""
    lms = _np(face_model.landmarks).astype(np.int64)
    rows = []
    for j in range(N_JAW):
        cand = _np(face_model.contour(j)).astype(np.int64)
        own = np.nonzero(cand == lms[j])[0]
        rows.append(cand[: own[0] + 1] if len(own) else np.append(cand, lms[j]))
    k = max(len(r) for r in rows)
    table = np.stack([np.concatenate([r, np.full(k - len(r), r[-1])]) for r in rows])
    valid = np.stack([np.arange(k) < len(r) for r in rows])
    return table, valid


def _vertex_normals(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    fn = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    n = np.zeros_like(v)
    for c in range(3):
        np.add.at(n, tri[:, c], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def _gather(pts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return pts[np.arange(len(idx))[:, None], idx]


class LandmarkFitter:
    """Batched landmark fit for one face model (module docstring).

    ``fitter(landmarks [B, 68, 2], intrinsics [4] or [B, 4], weights [B, 68] optional) -> LandmarkFit``.
    Weights scale each point's influence (e.g. detector confidences); 0 drops a point.
    """

    def __init__(self, face_model, config: LandmarkFitConfig | None = None):
        self.config = config or LandmarkFitConfig()
        mean = _np(face_model.mean_geometry)
        basis = np.concatenate([_np(face_model.shape_basis), _np(face_model.expression_basis)], 2)  # [N, 3, M]
        self.m_shape = face_model.m_shape
        sigma = np.concatenate([_np(face_model.shape_sigma),
                                _np(face_model.expression_sigma) * self.config.expression_scale])
        self.prior = 1.0 / sigma ** 2  # [M]
        self.fixed = _np(face_model.landmarks).astype(np.int64)
        self.jaw_table, self.jaw_valid = _jaw_candidates(face_model)
        self.own_k = self.jaw_valid.sum(1) - 1  # [17] position of each jaw landmark's own vertex
        # Only the vertices the fit can ever touch: the 68 landmarks and every jaw candidate.
        used = np.unique(np.concatenate([self.fixed, self.jaw_table.ravel()]))
        remap = {v: i for i, v in enumerate(used)}
        self.fixed_local = np.array([remap[v] for v in self.fixed])
        self.jaw_local = np.vectorize(remap.get)(self.jaw_table)
        self.used = used
        self.mean = mean[used]  # [U, 3]
        self.basis = basis[used]  # [U, 3, M]
        self._basis_flat = np.ascontiguousarray(self.basis.reshape(-1, self.basis.shape[2]).T)  # [M, 3U]
        self._prior_source = None
        self.normals = _vertex_normals(mean, _np(face_model.triangles).astype(np.int64))[used]
        self._jaw_normals = self.normals[self.jaw_local][None]  # [1, 17, K, 3], gathered once
        self.mean_inner = mean[self.fixed[INNER]]
        self.frontal_iod_mm = float(np.linalg.norm(mean[self.fixed[OUTER_EYE_CORNERS[0]]]
                                                   - mean[self.fixed[OUTER_EYE_CORNERS[1]]]))
        self.inner_pinv = np.linalg.pinv(np.concatenate([self.mean_inner, np.ones((len(INNER), 1))], 1))
        self._jit_arrays = None  # the compiled solver's contiguous copies, made on first use

    def _weighted_affine_pose(self, x2, w, k):
        """:func:`affine_pose` with per-point weights (one small solve per face)."""
        design = np.concatenate([self.mean_inner, np.ones((len(INNER), 1))], 1)
        rows = [affine_pose(x2[i:i + 1, INNER], self.mean_inner, k[i:i + 1],
                            np.linalg.pinv(design * w[i, INNER, None]) * w[i, INNER][None]) for i in range(len(x2))]
        return np.concatenate([r for r, _ in rows]), np.concatenate([t for _, t in rows])

    def _priors(self):
        """(prior matrix [M, M], joint prior vector [6 + M], joint prior matrix) of ``self.prior``,
        rebuilt when ``prior`` is replaced (e.g. a copy with a fixed identity, ``recon.tracking``)."""
        if self._prior_source is not self.prior:
            vec = np.concatenate([np.zeros(6), self.prior])
            self._prior_mats = (np.diag(self.prior), vec, np.diag(vec + np.r_[np.full(6, 1e-9), np.zeros(len(self.prior))]))
            self._prior_source = self.prior
        return self._prior_mats

    # -- pieces ------------------------------------------------------------------------------------
    def points(self, coef: np.ndarray) -> np.ndarray:
        """Model-space positions [B, U, 3] of the used vertices for coefficients [B, M]."""
        return self.mean[None] + (coef @ self._basis_flat).reshape(len(coef), -1, 3)

    def jaw_vertices(self, rot: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Local indices [B, 68] of the landmark vertices with the jaw on the silhouette (module docstring)."""
        b = len(rot)
        if self.config.jaw == "fixed":
            return np.repeat(self.fixed_local[None], b, 0)
        tab = self.jaw_local  # [17, K]
        rt = rot.transpose(0, 2, 1)[:, None]
        cam = pts[:, tab] @ rt + t[:, None, None]  # [B, 17, K, 3]
        n_cam = self._jaw_normals @ rt
        facing = ((cam * n_cam).sum(-1) < 0) & self.jaw_valid[None]
        leading = np.cumprod(facing, axis=2).sum(2)  # candidates facing the camera, from the inside
        pick = np.where(leading > self.own_k, self.own_k, np.maximum(leading - 1, 0))
        idx = np.repeat(self.fixed_local[None], b, 0)
        idx[:, :N_JAW] = tab[np.arange(N_JAW)[None], pick]
        return idx

    @staticmethod
    def project(rot, t, x3, k):
        cam = x3 @ rot.transpose(0, 2, 1) + t[:, None]
        z = np.maximum(cam[..., 2], 1e-6)
        uv = np.stack([k[:, 0:1] * cam[..., 0] / z + k[:, 2:3], k[:, 1:2] * cam[..., 1] / z + k[:, 3:4]], -1)
        return uv, cam

    def pose_step(self, rot, t, x3, x2, w, k):
        """One Gauss-Newton step on (rotation, translation); left-multiplied rotation update.

        With ``q = R X`` and ``cam = q + t``, a left rotation update ``exp(omega)`` moves ``cam`` by
        ``omega x q``, so a projection row ``g = d(u or v) / d cam`` gives ``d / d omega = q x g``
        (and ``g`` itself for the translation): the Jacobian is two small broadcasts, no loops."""
        b, p = x3.shape[:2]
        q = x3 @ rot.transpose(0, 2, 1)
        cam = q + t[:, None]
        iz = 1.0 / np.maximum(cam[..., 2:3], 1e-6)  # [B, P, 1]
        fiz = k[:, None, :2] * iz  # [B, P, 2]: (fx / z, fy / z)
        g = np.zeros((b, p, 2, 3))
        g[..., 0, 0] = fiz[..., 0]
        g[..., 1, 1] = fiz[..., 1]
        g[..., 2] = -fiz * cam[..., :2] * iz
        jac = np.concatenate([_cross(q[:, :, None], g), g], -1) * w[..., None, None]  # [B, P, 2, 6]
        jac = jac.reshape(b, 2 * p, 6)
        res = ((x2 - (fiz * cam[..., :2] + k[:, None, 2:])) * w[..., None]).reshape(b, 2 * p, 1)
        jt = jac.transpose(0, 2, 1)
        h = jt @ jac
        h += (1e-6 * np.trace(h, axis1=1, axis2=2))[:, None, None] * _EYE6
        step = np.linalg.solve(h, jt @ res)[..., 0]
        return rodrigues(step[:, :3]) @ rot, t + step[:, 3:]

    def solve_coefficients(self, rot, t, idx, pts, x2, w, k, sigma_px):
        """Regularised linear least squares for shape + expression at a fixed pose (module docstring).

        For each point and image axis, ``a = f r_axis - (x2 - c) r_3`` gives ``a . X + (f t_axis -
        (x2 - c) t_z) = 0`` for the exact projection of ``X = mean + basis coef``: one row of the
        linear system, scaled by ``w / (z sigma)`` so that its residual is in units of the noise."""
        b, p = idx.shape
        base = self.basis[idx]  # [B, P, 3, M]
        cur = _gather(pts, idx)
        z = np.maximum(cur @ rot[:, 2, :, None] + t[:, 2:3, None], 1e-6)  # [B, P, 1]
        scale = (w[..., None] / (z * sigma_px[:, None, None]))[..., None]  # [B, P, 1, 1]
        d = x2 - k[:, None, 2:]  # [B, P, 2] offsets from the principal point
        a = (k[:, None, :2, None] * rot[:, None, :2] - d[..., None] * rot[:, None, None, 2]) * scale  # [B, P, 2, 3]
        rows = (a @ base).reshape(b, 2 * p, -1)  # [B, 2P, M]
        const = (k[:, None, :2] * t[:, None, :2] - d * t[:, None, 2:3]) * scale[..., 0]
        rhs = -((a * self.mean[idx][:, :, None]).sum(-1) + const).reshape(b, 2 * p, 1)
        rt = rows.transpose(0, 2, 1)
        return np.linalg.solve(rt @ rows + self._priors()[0], rt @ rhs)[..., 0]

    def joint_step(self, rot, t, coef, idx, pts, x2, w, k, sigma_px):
        """One Gauss-Newton step on pose and coefficients together (rotation, translation, shape and
        expression: 6 + M unknowns) of ``sum (w / sigma)^2 |proj - x2|^2 + sum prior coef^2``.

        The coefficient columns are ``g R B_p`` (``g = d(u, v) / d cam`` as in :meth:`pose_step`,
        ``B_p`` the point's basis rows), so one Jacobian and one small solve replace a pose step and
        a coefficient solve."""
        b, p = idx.shape
        x3 = _gather(pts, idx)
        q = x3 @ rot.transpose(0, 2, 1)
        cam = q + t[:, None]
        iz = 1.0 / np.maximum(cam[..., 2:3], 1e-6)
        fiz = k[:, None, :2] * iz
        g = np.zeros((b, p, 2, 3))
        g[..., 0, 0] = fiz[..., 0]
        g[..., 1, 1] = fiz[..., 1]
        g[..., 2] = -fiz * cam[..., :2] * iz
        j_coef = (g @ rot[:, None]) @ self.basis[idx]  # [B, P, 2, M]
        scale = (w / sigma_px[:, None])[..., None, None]
        jac = (np.concatenate([_cross(q[:, :, None], g), g, j_coef], -1) * scale).reshape(b, 2 * p, -1)
        res = ((x2 - (fiz * cam[..., :2] + k[:, None, 2:])) * scale[..., 0]).reshape(b, 2 * p, 1)
        jt = jac.transpose(0, 2, 1)
        _, prior_vec, prior = self._priors()
        h = jt @ jac + prior
        grad = (jt @ res)[..., 0] - prior_vec * np.concatenate([np.zeros((b, 6)), coef], 1)
        step = np.linalg.solve(h, grad[..., None])[..., 0]
        return rodrigues(step[:, :3]) @ rot, t + step[:, 3:6], coef + step[:, 6:]

    def _compiled(self):
        """The compiled twin's module when ``impl`` selects it, else None."""
        if resolve_impl(self.config.impl) == "numpy":
            return None
        from . import landmark_fit_jit

        note_first_compile("landmark_fit_jit")
        return landmark_fit_jit

    def _fit_compiled(self, x2, k, w, weights, rot, t, sigma_px):
        """The joint solver's steps (from the rigid start) in :mod:`~fml_taichi.recon.landmark_fit_jit`:
        ``(rot, t, coef, idx, uv)``."""
        jit = self._compiled()
        if self._jit_arrays is None:  # the model's tables, which no copy replaces (the mean and prior it may)
            self._jit_arrays = (np.ascontiguousarray(self.basis), self._basis_flat,
                                self.fixed_local.astype(np.int64), np.ascontiguousarray(self.jaw_local, np.int64),
                                np.ascontiguousarray(self.jaw_valid), self.own_k.astype(np.int64),
                                np.ascontiguousarray(self._jaw_normals[0]))
        basis, basis_flat, fixed, jaw, valid, own, normals = self._jit_arrays
        return jit.fit_joint_batch(np.ascontiguousarray(x2), np.ascontiguousarray(k), np.ascontiguousarray(w, np.float64),
                                   np.ascontiguousarray(rot), np.ascontiguousarray(t), np.ascontiguousarray(sigma_px),
                                   np.ascontiguousarray(self.mean), basis, basis_flat, fixed, jaw, valid, own, normals,
                                   np.ascontiguousarray(self.prior, np.float64), int(self.config.pose_steps),
                                   int(self.config.iterations), self.config.jaw == "fixed")

    # -- the fit -----------------------------------------------------------------------------------
    def __call__(self, landmarks, intrinsics, weights=None) -> LandmarkFit:
        x2 = _np(landmarks)
        if x2.ndim == 2:
            x2 = x2[None]
        if x2.ndim != 3 or x2.shape[1:] != (68, 2) or not np.isfinite(x2).all():
            raise ValueError(f"landmarks: expected finite (B, 68, 2) points, got shape {x2.shape}")
        b = len(x2)
        k = np.broadcast_to(_np(intrinsics).reshape(-1, 4), (b, 4)).astype(np.float64)
        w = np.ones((b, 68)) if weights is None else np.broadcast_to(_np(weights).reshape(-1, 68), (b, 68)).copy()
        iod = np.linalg.norm(x2[:, OUTER_EYE_CORNERS[0]] - x2[:, OUTER_EYE_CORNERS[1]], axis=-1)
        # The inter-ocular distance shrinks with yaw; the face's scale (affine fit) does not.
        if weights is None and self._compiled() is not None:
            rot, t = self._compiled().affine_pose_batch(np.ascontiguousarray(x2[:, INNER]), np.ascontiguousarray(k),
                                                        self.inner_pinv, self.mean_inner)
        elif weights is None:
            rot, t = affine_pose(x2[:, INNER], self.mean_inner, k, self.inner_pinv)
        else:
            rot, t = self._weighted_affine_pose(x2, w, k)
        face_px = k[:, 0] / t[:, 2] * np.linalg.norm(self.mean_inner[OUTER_EYE_CORNERS[0] - 17]
                                                     - self.mean_inner[OUTER_EYE_CORNERS[1] - 17])
        sigma_px = np.maximum(self.config.sigma_nme * face_px, self.config.min_sigma_px)
        coef = np.zeros((b, len(self.prior)))
        pts = self.points(coef)
        w_inner = w.copy()
        w_inner[:, :N_JAW] = 0.0
        if self.config.solver == "joint" and self._compiled() is not None:
            rot, t, coef, idx, uv = self._fit_compiled(x2, k, w, weights, rot, t, sigma_px)
            pts = None
        elif self.config.solver == "joint":
            x3 = pts[:, self.fixed_local]
            for _ in range(self.config.pose_steps):  # the rigid pose on the inner points first
                rot, t = self.pose_step(rot, t, x3, x2, w_inner, k)
            idx = self.jaw_vertices(rot, t, pts)
            for it in range(self.config.iterations):
                rot, t, coef = self.joint_step(rot, t, coef, idx, pts, x2, w, k, sigma_px)
                pts = self.points(coef)
                idx = self.jaw_vertices(rot, t, pts)
        else:
            idx = self.jaw_vertices(rot, t, pts)
            for it in range(self.config.iterations):
                x3 = _gather(pts, idx)
                for _ in range(self.config.pose_steps if it == 0 else self.config.later_pose_steps):
                    rot, t = self.pose_step(rot, t, x3, x2, w_inner if it == 0 else w, k)
                idx = self.jaw_vertices(rot, t, pts)
                new = self.solve_coefficients(rot, t, idx, pts, x2, w, k, sigma_px)
                moved = float(np.abs(new - coef).max())
                coef = new
                pts = self.points(coef)
                if it >= 1 and moved < self.config.converged:
                    break  # shape settled (so has the pose it was solved at): the last steps change nothing
            x3 = _gather(pts, idx)
            rot, t = self.pose_step(rot, t, x3, x2, w, k)
            idx = self.jaw_vertices(rot, t, pts)
        if pts is not None:
            uv, _ = self.project(rot, t, _gather(pts, idx), k)
        err = np.linalg.norm(uv - x2, axis=-1)
        frontal_iod = k[:, 0] / np.maximum(t[:, 2], 1e-6) * self.frontal_iod_mm
        return LandmarkFit(rotation=matrix_to_euler(rot), matrix=rot, translation=t,
                           plausibility=np.sqrt((err ** 2).mean(1)) / np.maximum(frontal_iod, 1e-9),
                           shape=coef[:, :self.m_shape], expression=coef[:, self.m_shape:],
                           vertices=self.used[idx], landmarks_2d=uv,
                           nme=err.mean(1) / np.maximum(iod, 1e-9), rms_px=np.sqrt((err ** 2).mean(1)))
