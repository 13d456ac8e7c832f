"""Reflectance corrective coefficients fitted to the image by linear least squares.

The paper's encoder *predicts* the corrective coefficients ``delta_r`` from the image. Measured on the
CPU default, a network trained for minutes predicts them poorly (the final level's photometric error
stays at the base level's), although the image determines them almost linearly: by the image formation
model (Eq. 5) a visible vertex ``i`` of colour ``I(u_i)`` under SH shading ``s_i`` asks for the
reflectance ``r*_i = I(u_i) / s_i``; what the base level leaves, ``rho_i = r*_i - r^b_i``, should be
``(Theta_r delta_r)_i``. So ``delta_r`` is the ridge solution of

    min_delta  sum_i sum_c s_ic^2 ((Theta_r delta)_ic - rho_ic)^2  +  lambda |delta|^2

over the visible, lit vertices (weights ``s^2``: the residual measured in the image, not in
reflectance, so dark vertices count less). ``Theta_r`` itself is learned in training as before (the
photometric term of the final level), with these coefficients as the per-image input; its start is the
principal components of the same residuals over the training images (:mod:`fml_taichi.train.warm_start`).
``model.reflectance_coefficients: predicted`` keeps the paper's encoder head; ``fitted`` uses this module.

Everything is read from the image and the model's own base level: no ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..common.constants import NORMAL_EPS
from ..ops.image_formation import image_formation
from .colour_fit import sh_basis_np
from .compiled import note_first_compile, resolve_impl
from .landmark_fit import euler_to_matrix_np
from ..reference.image_formation import Z_MIN, bilinear_sample, euler_to_matrix, project, safe_normalize, sh_basis

__all__ = ["MIN_SHADING", "MAX_RESIDUAL", "DEFAULT_PRIOR", "reflectance_residuals", "reflectance_residuals_at", "fit_reflectance_coefficients",
           "fitted_reflectance_coefficients", "ReflectanceCoefficientFitter",
           "PreparedReflectanceFit",
           "with_fitted_reflectance", "reflectance_prior_of"]

#: Vertices shaded below this (any channel) are left out: their ``I / s`` is mostly noise.
MIN_SHADING = 0.05
#: Residuals are clipped to this (hair, background and occluders at the silhouette).
MAX_RESIDUAL = 0.5
#: Ridge weight lambda (same units as the s^2-weighted squared residual sum; measured: 0.01 on the CPU
#: default's 4k-vertex model keeps the coefficients within a few units of their training spread).
DEFAULT_PRIOR = 0.01


@torch.no_grad()
def reflectance_residuals(face_model, geometry, reflectance, params, images, intrinsics):
    """Per-vertex reflectance residuals ``rho`` [B, N, 3] of one level and their weights ``s^2`` [B, N, 3]
    (0 for invisible or badly lit vertices). ``geometry``/``reflectance`` [B, N, 3] in model space,
    ``params`` the pose and light, ``images`` [B, H, W, 3] in [0, 1] seen by ``intrinsics`` [4] / [B, 4]."""
    res = image_formation(geometry.detach().float().contiguous(), reflectance.detach().float().contiguous(),
                          face_model.triangles, params.rotation.detach().float().contiguous(),
                          params.translation.detach().float().contiguous(), intrinsics,
                          params.light.detach().float().contiguous(), images.float().contiguous())
    shading = torch.bmm(sh_basis(res.normals), params.light.detach().float())  # [B, N, 3]
    ok = (res.visible > 0) & (shading > MIN_SHADING).all(-1)
    rho = (res.sampled / shading.clamp_min(MIN_SHADING) - reflectance.detach().float())
    rho = rho.clamp(-MAX_RESIDUAL, MAX_RESIDUAL) * ok.unsqueeze(-1)
    return rho, shading.square() * ok.unsqueeze(-1)


_RING_CACHE: dict = {}
_THETA_CACHE: dict = {}


def _theta_rows(theta: torch.Tensor, n_vertices: int, rows: torch.Tensor) -> torch.Tensor:
    """The rows of ``theta`` [3N, C] of the vertices ``rows``, cached while Theta is unchanged (inference)."""
    key = (theta.data_ptr(), theta._version, len(rows))
    if key not in _THETA_CACHE:
        _THETA_CACHE.clear()
        _THETA_CACHE[key] = theta.detach().float().view(n_vertices, 3, -1)[rows].reshape(3 * len(rows), -1).contiguous()
    return _THETA_CACHE[key]


def _incident_triangles(triangles: torch.Tensor, n_vertices: int, rows: torch.Tensor) -> torch.Tensor:
    """[M, D, 3] corner indices of the triangles incident to each vertex of ``rows`` (padded with a
    degenerate triangle ``(0, 0, 0)``, whose normal is 0), cached per mesh and row set."""
    key = (triangles.data_ptr(), int(triangles.shape[0]), n_vertices, hash(rows.numpy().tobytes()))
    if key not in _RING_CACHE:
        tri = triangles.long().cpu()
        where = torch.full((n_vertices,), -1, dtype=torch.long)
        where[rows] = torch.arange(len(rows))
        lists = [[] for _ in range(len(rows))]
        for f, corners in enumerate(tri.tolist()):
            for c in corners:
                if where[c] >= 0:
                    lists[int(where[c])].append(f)
        d = max(len(x) for x in lists)
        pad = torch.zeros(len(rows), d, 3, dtype=torch.long)
        for i, fs in enumerate(lists):
            if fs:
                pad[i, :len(fs)] = tri[fs]
        _RING_CACHE.clear()  # one mesh at a time in practice
        _RING_CACHE[key] = pad
    return _RING_CACHE[key]


@torch.no_grad()
def reflectance_residuals_at(face_model, geometry, reflectance, params, images, intrinsics, rows: torch.Tensor):
    """:func:`reflectance_residuals` at the vertices ``rows`` [M] only ([B, M, 3] each), by the same maths
    in plain torch (``fml_taichi.reference.image_formation``: normals from all triangles, then
    projection, visibility, bilinear sampling and shading of the M vertices): the cheap path for one
    photo, where the fused kernel's per-call cost over every vertex dominates."""
    geo = geometry.detach().float()
    rot = euler_to_matrix(params.rotation.detach().float())
    t = params.translation.detach().float()
    ring = _incident_triangles(face_model.triangles, geo.shape[1], rows)  # [M, D, 3]
    corners = geo[:, ring.reshape(-1)].reshape(geo.shape[0], *ring.shape, 3)  # [B, M, D, 3, 3]
    a, b_, c = corners.unbind(-2)
    sums = torch.linalg.cross(b_ - a, c - a, dim=-1).sum(2)  # area-weighted, as face_normal_sums
    normals = torch.bmm(safe_normalize(sums), rot.transpose(1, 2))
    v_cam = torch.baddbmm(t.unsqueeze(1), geo[:, rows], rot.transpose(1, 2))
    uv = project(v_cam, intrinsics)
    img = images.float()
    h, w = img.shape[1], img.shape[2]
    u, v = uv.unbind(-1)
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (v_cam[..., 2] > Z_MIN)
    visible = ((normals * v_cam).sum(-1) < 0) & inside
    light = params.light.detach().float()
    shading = torch.bmm(sh_basis(normals), light)
    ok = visible & (shading > MIN_SHADING).all(-1)
    sampled = bilinear_sample(img.contiguous(), uv)
    rho = (sampled / shading.clamp_min(MIN_SHADING) - reflectance.detach().float()[:, rows])
    rho = rho.clamp(-MAX_RESIDUAL, MAX_RESIDUAL) * ok.unsqueeze(-1)
    return rho, shading.square() * ok.unsqueeze(-1)


@torch.no_grad()
def fit_reflectance_coefficients(theta: torch.Tensor, rho: torch.Tensor, weight: torch.Tensor,
                                 prior: float = DEFAULT_PRIOR, stride: int = 1) -> torch.Tensor:
    """The ridge solution ``delta`` [B, C] (module docstring) for a basis ``theta`` [3N, C] (x0 y0 z0 x1
    ... rows, :attr:`~fml_taichi.model.LinearCorrective.theta`), residuals and weights [B, N, 3].
    ``stride`` > 1 uses every stride-th vertex only (the normal equations' cost falls with it; 64
    coefficients stay well determined by a thousand vertices)."""
    if prior <= 0:
        raise ValueError(f"prior: expected a positive ridge weight, got {prior!r}")
    b = rho.shape[0]
    basis = theta.detach().float()
    if stride > 1:
        n = rho.shape[1]
        keep = torch.arange(0, n, int(stride))
        basis = basis.view(n, 3, -1)[keep].reshape(len(keep) * 3, -1)
        rho, weight = rho[:, keep], weight[:, keep]
    w, r = weight.reshape(b, -1).float(), rho.reshape(b, -1).float()
    eye = prior * torch.eye(basis.shape[1], dtype=basis.dtype)
    normal, rhs = [], []
    for i in range(b):  # only the rows that carry weight: about half the vertices face the camera
        rows = w[i] > 0
        a = basis[rows]
        wa = a * w[i, rows, None]
        normal.append(wa.T @ a + eye)
        rhs.append(wa.T @ r[i, rows])
    normal, rhs = torch.stack(normal), torch.stack(rhs)
    return torch.linalg.solve(normal, rhs.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def fitted_reflectance_coefficients(multilevel, params, output, images, intrinsics,
                                    prior: float = DEFAULT_PRIOR, stride: int = 1) -> torch.Tensor:
    """``delta_r`` [B, C] for a reconstruction (``params``, ``output`` of ``multilevel``) of ``images``:
    residuals of the base reflectance on the *final* geometry (the geometry corrective is kept), fitted
    in ``multilevel``'s linear reflectance basis; ``stride`` > 1: on every stride-th vertex only
    (:func:`reflectance_residuals_at`)."""
    corr = multilevel.reflectance_corrective
    if not hasattr(corr, "theta"):
        raise ValueError("fitted reflectance coefficients need a linear reflectance corrective (model.kind 'linear')")
    fm = multilevel.face_model
    if stride <= 1:
        rho, w = reflectance_residuals(fm, output.final_geometry, output.base_reflectance, params, images, intrinsics)
        return fit_reflectance_coefficients(corr.theta, rho, w, prior).to(params.delta_reflectance.dtype)
    rows = torch.arange(0, fm.n_vertices, int(stride))
    rho, w = reflectance_residuals_at(fm, output.final_geometry, output.base_reflectance, params, images, intrinsics, rows)
    theta = _theta_rows(corr.theta, fm.n_vertices, rows)
    return fit_reflectance_coefficients(theta, rho, w, prior).to(params.delta_reflectance.dtype)


class ReflectanceCoefficientFitter:
    """:func:`fitted_reflectance_coefficients` with ``stride`` > 1 in numpy float32, for a few photos
    at a time: the same residuals (:func:`reflectance_residuals_at`: ring normals, projection, the
    backface and image tests, exact bilinear samples, shading, clipping) and the same ridge solution
    (:func:`fit_reflectance_coefficients`), with the rings, their corner tables and Theta's rows built
    once. For one photo the torch path's cost is its ~40 operator calls, not its arithmetic; numpy
    calls on these [M, 3] arrays cost a few microseconds each.

    ``fitter(geometry [B, N, 3], base_reflectance [B, N, 3], rotation [B, 3] Euler, translation [B, 3],
    light [B, 9, 3], images [B, H, W, 3], intrinsics [4] / [B, 4]) -> delta [B, C]`` float32 numpy
    (any array-likes; torch tensors are read without a copy). Theta is copied at construction:
    build a new fitter when the corrective changes (:meth:`matches`).

    ``grey`` [B] bool (optional): faces of a greyscale image. Their fit is the same objective
    restricted to grey reflectance: the base's rows are replaced by their channel mean and the
    offsets by ``mean_c (Theta delta)_ic`` (equal in all channels). For fixed grey offsets ``g_i``,
    ``sum_c w_ic (g_i - rho_ic)^2`` is ``W_i (g_i - rho_i)^2`` plus a constant, with ``W_i = sum_c w_ic``
    and ``rho_i`` the ``w``-weighted channel mean, so the grey solve is one row per vertex;
    ``grey(base) + grey(Theta delta)`` is then the final reflectance the fit chose (grey).

    :meth:`fit` is :meth:`prepare` (the observation and each face's normal matrix: the base reflectance
    does not enter, so it may run while the base is computed) then :meth:`PreparedReflectanceFit.solve`
    of the base. ``impl="numba"`` (the default when numba imports) runs the observation, the design
    rows and the solve compiled (:mod:`fml_taichi.recon.corrective_fit_jit`), ``"numpy"`` the array code
    here; both float32 with the normal matrix on BLAS, agreeing to ~1e-5 of the coefficients' size
    (the projection's rounding; tests/test_fits_jit.py)."""

    def __init__(self, face_model, corrective, stride: int, prior: float = DEFAULT_PRIOR, impl: str | None = None):
        #: "numba" (the observation and design rows compiled, :mod:`fml_taichi.recon.corrective_fit_jit`;
        #: the default when numba imports) or "numpy".
        self.impl = resolve_impl(impl)
        if prior <= 0:
            raise ValueError(f"prior: expected a positive ridge weight, got {prior!r}")
        if not hasattr(corrective, "theta"):
            raise ValueError("fitted reflectance coefficients need a linear reflectance corrective (model.kind 'linear')")
        n = int(face_model.n_vertices)
        self.stride = int(max(1, stride))
        self.rows = np.arange(0, n, self.stride)
        ring = _incident_triangles(face_model.triangles, n, torch.from_numpy(self.rows)).numpy()  # [M, D, 3]
        # Ring slot first ([D, M] per corner): the sum over a vertex's triangles adds whole [M, 3] slabs.
        self._corners = tuple(np.ascontiguousarray(ring[..., c].T) for c in range(3))
        with torch.no_grad():
            theta = corrective.theta
        self.theta = theta.detach().float().cpu().numpy().reshape(n, 3, -1)[self.rows].copy()  # [M, 3, C]
        self.theta_grey = self.theta.mean(1)  # [M, C]: the channel mean of each row's offsets
        # All of Theta transposed [C, 3N] for :meth:`offsets` (the module's forward checks its input
        # for finite values on every call: a third of the offsets' cost for one face).
        self._theta_t = np.ascontiguousarray(theta.detach().float().cpu().numpy().T)
        self.n_vertices = n
        self.prior = float(prior)
        self._ridge = self.prior * np.eye(self.theta.shape[2])
        self._key = self.state_key(corrective)

    @staticmethod
    def state_key(corrective) -> tuple:
        """Identifies the corrective's tensors as they are now (storage and in-place version of each;
        a smooth corrective's ``theta`` is derived from them, so it is not asked)."""
        return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in (*corrective.parameters(), *corrective.buffers()))

    def matches(self, corrective, prior: float) -> bool:
        """Whether this fitter was built for ``corrective`` as it is now and for ``prior``."""
        return self._key == self.state_key(corrective) and self.prior == float(prior)

    def residuals(self, geometry, base_reflectance, rotation, translation, light, images, intrinsics, grey=None):
        """``(rho, weight)`` [B, M, 3] float32 at :attr:`rows`, as :func:`reflectance_residuals_at`
        (faces where ``grey`` is set: against the channel mean of their base reflectance)."""
        return self._residuals(geometry, base_reflectance, rotation, translation, light, images, intrinsics, grey)[:2]

    def _residuals(self, geometry, base_reflectance, rotation, translation, light, images, intrinsics, grey=None):
        """``(rho, weight, grey)``; ``grey`` a float: the tolerance of :meth:`grey_samples`, which decides."""
        obs = self._observe(geometry, rotation, translation, light, images, intrinsics, grey)
        return obs.residuals(base_reflectance), obs.weight, obs.grey

    def _observe(self, geometry, rotation, translation, light, images, intrinsics, grey) -> "PreparedReflectanceFit":
        """The observation at :attr:`rows` (no per-face systems yet): what the base reflectance does not enter."""
        geo = _f32(geometry)
        img = _f32(images)
        observe = self._observe_numba if self.impl == "numba" else self._observe_numpy
        quotient, weight, ok, sampled, inside = observe(geo, _f32(rotation), _f32(translation), _f32(intrinsics),
                                                        _f32(light), img)
        if isinstance(grey, float):
            grey = self.grey_samples(sampled, inside, grey)
        return PreparedReflectanceFit(self.rows, quotient, ok, weight, grey, [], self.impl)

    def _observe_numpy(self, geo, rotation, translation, intrinsics, light, img) -> tuple:
        """(sampled / clamped shading, weight, ok [B, M, 1], sampled, inside) by numpy array code."""
        b = len(geo)
        rot = euler_to_matrix_np(rotation).astype(np.float32)  # float32 angles, as the torch path
        # Coordinates as planes [B, 3, N]: the ring gathers and the cross products then work on
        # contiguous [D, M] slabs (fancy indexing on the last axis cost 4x more).
        planes = np.ascontiguousarray(geo.transpose(0, 2, 1))
        c0, c1, c2 = (np.take(planes, c, axis=2) for c in self._corners)  # [B, 3, D, M]
        e1, e2 = c1 - c0, c2 - c0
        sums = np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                         e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], 1).sum(2)  # [B, 3, M] area-weighted, as face_normal_sums
        norm = np.sqrt((sums * sums).sum(1, keepdims=True))
        ok_norm = norm > NORMAL_EPS
        normals = rot @ np.where(ok_norm, sums / np.where(ok_norm, norm, 1), 0).astype(np.float32)  # [B, 3, M] camera
        v_cam = rot @ np.take(planes, self.rows, axis=2) + translation[:, :, None]  # [B, 3, M]
        k = np.broadcast_to(intrinsics.reshape(-1, 4), (b, 4))[..., None]
        z = np.maximum(v_cam[:, 2], Z_MIN)
        u = k[:, 0] * v_cam[:, 0] / z + k[:, 2]
        v = k[:, 1] * v_cam[:, 1] / z + k[:, 3]
        h, w = img.shape[1], img.shape[2]
        inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (v_cam[:, 2] > Z_MIN)
        visible = ((normals * v_cam).sum(1) < 0) & inside
        shading = sh_basis_np(normals.transpose(0, 2, 1)) @ light  # [B, M, 3]
        ok = (visible & (shading > MIN_SHADING).all(-1))[..., None]
        sampled = _bilinear_np(img, u, v)
        return sampled / np.maximum(shading, MIN_SHADING), shading * shading * ok, ok, sampled, inside

    def _observe_numba(self, geo, rotation, translation, intrinsics, light, img) -> tuple:
        """:meth:`_observe_numpy` by one compiled loop (:mod:`fml_taichi.recon.corrective_fit_jit`)."""
        note_first_compile("corrective_fit_jit")
        from . import corrective_fit_jit as jit

        rot = jit.euler_to_matrix(np.ascontiguousarray(rotation.reshape(-1, 3)))

        k = np.ascontiguousarray(np.broadcast_to(intrinsics.reshape(-1, 4), (len(geo), 4)))
        light = np.broadcast_to(light, (len(geo), 9, 3))
        quotient, weight, ok, sampled, inside = jit.observe(
            np.ascontiguousarray(geo), self.rows, *self._corners, rot,
            np.ascontiguousarray(translation), k, np.ascontiguousarray(img), np.ascontiguousarray(light),
            np.float32(Z_MIN), np.float32(NORMAL_EPS), np.float32(MIN_SHADING))
        return quotient, weight, ok[..., None], sampled, inside

    @staticmethod
    def grey_samples(sampled: np.ndarray, inside: np.ndarray, tolerance: float) -> np.ndarray:
        """[B] bool: whether the image colours [B, M, 3] sampled at the rows inside the image [B, M]
        have equal channels to within ``tolerance`` (a greyscale face, judged on the pixels the fit
        reads: no pass over the whole crop)."""
        spread = (sampled.max(-1) - sampled.min(-1)) * inside
        return (spread.max(1) <= tolerance) & inside.any(1)

    def solve(self, rho: np.ndarray, weight: np.ndarray, grey=None) -> np.ndarray:
        """The ridge solution [B, C] float32 for residuals and weights [B, M, 3] (only vertices with
        weight enter the normal equations, as in :func:`fit_reflectance_coefficients`); faces where
        ``grey`` is set: the grey-restricted solution (class docstring)."""
        out = np.empty((len(rho), self.theta.shape[2]), np.float32)
        for i in range(len(rho)):
            out[i] = self._face_system(weight[i], grey is not None and bool(grey[i])).solve(rho[i])
        return out

    def _face_system(self, weight: np.ndarray, grey: bool) -> "_FaceSystem":
        """One face's normal equations from its weights [M, 3] (only vertices with weight enter; the
        weight is 0 in all channels or none): rows ``sqrt(w) Theta``, or for a grey face rows
        ``sqrt(W_i) mean_c Theta_i`` against the ``w``-weighted channel mean (class docstring)."""
        keep = np.flatnonzero(weight[:, 0])
        if grey:
            w = np.take(weight, keep, axis=0)  # [K, 3]
            total = w.sum(1)  # [K], > 0: kept vertices are lit in every channel
            sw = np.sqrt(total)
            a = np.take(self.theta_grey, keep, axis=0) * sw[:, None]  # [K, C]
        elif self.impl == "numba":
            from . import corrective_fit_jit as jit

            w = total = None
            a, sw = jit.design_rows(self.theta, keep, weight)
        else:
            w = total = None
            sw = np.sqrt(np.take(weight, keep, axis=0))  # [K, 3]
            a = np.take(self.theta, keep, axis=0)  # a copy: scaled in place to sqrt(w) Theta rows
            a *= sw[..., None]
            a = a.reshape(-1, self.theta.shape[2])
        normal = (a.T @ a).astype(np.float64) + self._ridge
        return _FaceSystem(keep, sw, a, normal, w, total)

    def prepare(self, geometry, rotation, translation, light, images, intrinsics, grey=None) -> "PreparedReflectanceFit":
        """Everything of :meth:`fit` that the base reflectance does not enter: the observation (sampled
        colour over clamped shading, the ok mask, the weights, the grey decision) and each face's
        normal matrix and scaled design rows. :meth:`PreparedReflectanceFit.solve` of a base
        reflectance then finishes the fit (a caller may overlap this with computing the base)."""
        obs = self._observe(geometry, rotation, translation, light, images, intrinsics, grey)
        grey = obs.grey
        obs.faces.extend(self._face_system(obs.weight[i], grey is not None and bool(grey[i]))
                         for i in range(len(obs.weight)))
        return obs

    def offsets(self, delta: np.ndarray) -> np.ndarray:
        """The corrective's offsets ``Theta delta`` [B, N, 3] float32 of coefficients [B, C] (the
        corrective's forward, from the copy of Theta this fitter holds)."""
        return (np.asarray(delta, np.float32) @ self._theta_t).reshape(len(delta), self.n_vertices, 3)

    def __call__(self, geometry, base_reflectance, rotation, translation, light, images, intrinsics,
                 grey=None) -> np.ndarray:
        return self.fit(geometry, base_reflectance, rotation, translation, light, images, intrinsics, grey)[0]

    def fit(self, geometry, base_reflectance, rotation, translation, light, images, intrinsics, grey=None) -> tuple:
        """``(delta [B, C], grey [B] bool or None)``; ``grey``: None (every face in colour), [B] bool,
        or a float tolerance: faces whose sampled colours are grey to within it (:meth:`grey_samples`)."""
        prepared = self.prepare(geometry, rotation, translation, light, images, intrinsics, grey)
        return prepared.solve(base_reflectance), prepared.grey


@dataclass
class _FaceSystem:
    """One face's ridge normal equations: kept vertices [K], ``sqrt`` weights ([K, 3]; grey: [K] of the
    channel sums), the scaled design rows ``a`` ([3K, C]; grey: [K, C]), the normal matrix
    ``a^T a + prior I`` [C, C] float64; grey faces also their weights [K, 3] and channel sums [K]."""

    keep: np.ndarray
    sw: np.ndarray
    a: np.ndarray
    normal: np.ndarray
    w: np.ndarray | None = None
    total: np.ndarray | None = None

    def solve(self, rho: np.ndarray) -> np.ndarray:
        """The coefficients [C] float64 for this face's residuals [M, 3]."""
        r = np.take(rho, self.keep, axis=0)
        if self.total is not None:  # grey: against the w-weighted channel mean
            rhs = self.a.T @ (self.sw * ((self.w * r).sum(1) / self.total))
        else:
            rhs = self.a.T @ (self.sw * r).reshape(-1)
        return np.linalg.solve(self.normal, rhs.astype(np.float64))

    def solve_compiled(self, quotient: np.ndarray, base: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:meth:`solve` of the residuals of ``quotient`` [M, 3] against ``base`` [N, 3] (all vertices;
        read at ``rows``), by one compiled call (:mod:`fml_taichi.recon.corrective_fit_jit`)."""
        from . import corrective_fit_jit as jit

        if self.total is not None:
            return jit.solve_grey_face(quotient, base, rows, self.keep, self.w, self.total, self.sw, self.a,
                                       self.normal, np.float32(MAX_RESIDUAL))
        return jit.solve_colour_face(quotient, base, rows, self.keep, self.sw, self.a, self.normal,
                                     np.float32(MAX_RESIDUAL))


@dataclass
class PreparedReflectanceFit:
    """:meth:`ReflectanceCoefficientFitter.prepare`'s result: at the fitter's ``rows`` [M], the sampled
    colour over the clamped shading ``quotient`` [B, M, 3], ``ok`` [B, M, 1], ``weight`` [B, M, 3]
    (``shading^2 ok``), ``grey`` ([B] bool or None) and one normal system per face; ``impl`` the
    fitter's ("numba": :meth:`solve` is one compiled call per face)."""

    rows: np.ndarray
    quotient: np.ndarray
    ok: np.ndarray
    weight: np.ndarray
    grey: np.ndarray | None
    faces: list = field(default_factory=list)
    impl: str = "numpy"

    def residuals(self, base_reflectance) -> np.ndarray:
        """``rho`` [B, M, 3] float32 of a base reflectance [B, N, 3] (grey faces: its channel mean)."""
        base = np.take(_f32(base_reflectance), self.rows, axis=1)
        if self.grey is not None and np.any(self.grey):
            base = np.where(np.asarray(self.grey, bool)[:, None, None], base.mean(-1, keepdims=True), base)
        return np.clip(self.quotient - base, -MAX_RESIDUAL, MAX_RESIDUAL) * self.ok

    def solve(self, base_reflectance) -> np.ndarray:
        """``delta`` [B, C] float32: the fit's coefficients for a base reflectance [B, N, 3]."""
        if len(self.faces) != len(self.quotient):
            raise ValueError("PreparedReflectanceFit: no face systems (made by ReflectanceCoefficientFitter.prepare)")
        out = np.empty((len(self.faces), self.faces[0].normal.shape[0] if self.faces else 0), np.float32)
        if self.impl == "numba":
            base = np.ascontiguousarray(_f32(base_reflectance))
            if base.shape[0] != len(self.faces) or base.ndim != 3 or base.shape[2] != 3:
                raise ValueError(f"base_reflectance: expected [{len(self.faces)}, N, 3], got {base.shape}")
            for i, system in enumerate(self.faces):
                out[i] = system.solve_compiled(self.quotient[i], base[i], self.rows)
            return out
        rho = self.residuals(base_reflectance)
        for i, system in enumerate(self.faces):
            out[i] = system.solve(rho[i])
        return out


def _f32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x if x.dtype == torch.float32 else x.float()).numpy()
    return np.asarray(x, np.float32)


def _bilinear_np(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``reference.image_formation.bilinear_sample`` in numpy: image [B, H, W, 3], positions [B, M]."""
    b, h, w, _ = image.shape
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    x0 = np.clip(np.floor(u), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(v), 0, max(h - 2, 0))
    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    flat = image.reshape(b, h * w, 3)
    top_row, bottom_row = y0 * w, y1 * w
    corners = np.concatenate([top_row + x0, top_row + x1, bottom_row + x0, bottom_row + x1], 1)  # [B, 4M]
    taps = np.stack([np.take(flat[j], corners[j], axis=0) for j in range(b)])
    i00, i01, i10, i11 = np.split(taps, 4, axis=1)
    top = i00 + fx * (i01 - i00)
    bottom = i10 + fx * (i11 - i10)
    return top + fy * (bottom - top)


def with_fitted_reflectance(multilevel, params, output, images, intrinsics, prior: float = DEFAULT_PRIOR):
    """``(params, output)`` with ``delta_r`` replaced by the fitted coefficients and the model output
    recomputed by ``multilevel`` (differentiable w.r.t. Theta_r when gradients are on: training)."""
    delta = fitted_reflectance_coefficients(multilevel, params, output, images, intrinsics, prior)
    params = params.replace(delta_reflectance=delta)
    return params, multilevel(params)


def reflectance_prior_of(config) -> float | None:
    """The ridge weight when a training config fits the reflectance coefficients, else None."""
    m = getattr(config, "model", None)
    if m is None or getattr(m, "reflectance_coefficients", "predicted") != "fitted":
        return None
    return float(m.reflectance_fit_prior)
