"""SH light and base reflectance from the image colours of a posed face, by alternating linear least squares.

Given a face's geometry and pose (the landmark fit) and the image, each visible sample vertex ``i``
has an observed colour ``I_i`` and the image formation of Eq. 5, ``I_ic = r_ic (H(n_i) gamma_c)``:
bilinear in reflectance ``r`` and light ``gamma`` [9, 3]. With one fixed, the other is a linear least
squares problem, so the fit alternates (a few rounds from the prior's reflectance):

* **light**: 27 unknowns; a prior pulls the three colour channels' SH vectors towards their mean
  (``light_chroma_weight``: the light stays near grey, so a colour cast is explained by the skin,
  not by a cyan lamp) and keeps the higher bands small (``light_band_weight``);
* **reflectance**: the global skin-colour modes of :mod:`fml_taichi.recon.skin_tone` (dark-light,
  warm-cool, grey; measured prior) plus the model's own reflectance coefficients (prior: its
  sigmas). The result is written back as model coefficients (``FaceParams.reflectance``), the
  global colour included (the model's constant modes carry it exactly).

A greyscale image has equal channels; the grey light and the grey mode then explain it exactly, so
the fit returns grey reflectance and grey light. Visibility is the backface test at a margin
(grazing vertices sample the background), inside the image, on the skin mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .compiled import note_first_compile, resolve_impl
from .landmark_fit import _cross
from .skin_tone import constant_colour_coefficients, skin_modes

__all__ = ["ColourFit", "ColourFitConfig", "ColourFitter", "sh_basis_np"]

SH_C = (0.28209479177387814, 0.4886025119029199, 1.0925484305920792, 0.31539156525252005, 0.5462742152960396)


@dataclass(frozen=True)
class ColourFitConfig:
    """iterations: light / reflectance rounds. n_samples: vertices used (a fixed spread subset of the
    skin). sigma_colour: image colour noise (sets the data weight against the priors).
    light_chroma_weight, light_band_weight: light priors (module docstring), in units of the data
    term of one sample. light_level, light_level_sd: prior of the mean irradiance over the visible
    samples (0.62: the synthetic data's typical exposure). local_prior_weight: factor on the model
    coefficients' prior (a few hundred samples would otherwise let 45 local modes fit eyes, brows
    and hair, and extrapolate dark patches to the unsampled vertices). robust_delta: Huber scale of
    the colour residual; after the first round samples beyond it are down-weighted (eyes, brows,
    hair strands, specular spots are outliers of a skin albedo). min_facing: visible only when ``-n . v / |v|`` exceeds this.
    n_local_modes: how many of the model's reflectance modes (lowest first) the fit solves for (None: all);
    under the strong local prior the higher ones barely move, and each costs solve time.
    impl: "numba" (the same maths compiled, :mod:`fml_taichi.recon.colour_fit_jit`; the default when
    numba imports), "numpy" (the array code of this module), or None (that default)."""

    iterations: int = 2
    n_samples: int = 200
    sigma_colour: float = 0.05
    light_chroma_weight: float = 100.0
    light_band_weight: float = 0.5
    light_level: float = 0.62
    light_level_sd: float = 0.4
    min_facing: float = 0.25
    local_prior_weight: float = 30.0
    robust_delta: float = 0.06
    n_local_modes: int | None = None
    impl: str | None = None


@dataclass
class ColourFit:
    """light [B, 9, 3]; reflectance [B, m_r] model coefficients (global colour included); skin [B, 3]
    the global-mode coefficients; albedo [B, 3] the mean fitted albedo over the samples; n_visible [B];
    rms [B] colour residual over the visible samples."""

    light: np.ndarray
    reflectance: np.ndarray
    skin: np.ndarray
    albedo: np.ndarray
    n_visible: np.ndarray
    rms: np.ndarray


def sh_basis_np(n: np.ndarray) -> np.ndarray:
    """The 9 SH functions (docs/conventions.md order) of unit normals [..., 3] -> [..., 9]."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    c0, c1, c2, c3, c4 = SH_C
    return np.stack([np.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z,
                     c3 * (3 * z * z - 1), c2 * x * z, c4 * (x * x - y * y)], -1)


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """image [B, H, W, 3] at pixel positions uv [B, S, 2] (border clamp) -> [B, S, 3] float32.

    OpenCV's remap (coordinates resolved to 1/32 pixel): one call per face instead of ~20 numpy ops."""
    img = image if image.dtype == np.float32 else image.astype(np.float32)
    out = np.empty((len(img), uv.shape[1], 3), np.float32)
    for i in range(len(img)):
        m = uv[i].astype(np.float32)
        out[i] = cv2.remap(img[i], m[None, :, 0], m[None, :, 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
    return out


def _incident_triangles(tri: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """[S, D] triangle indices around each of ``vertices`` (padded with -1)."""
    rows = [np.nonzero((tri == v).any(1))[0] for v in vertices]
    d = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.full(d - len(r), -1)]) for r in rows])


class ColourFitter:
    """Light and reflectance for one face model (module docstring).

    ``fitter(images [B, H, W, 3], geometry [B, N, 3] (or only the :attr:`vertices` it reads,
    [B, len(vertices), 3]), rotation matrices [B, 3, 3], translation [B, 3], intrinsics [4] / [B, 4])``.
    """

    def __init__(self, face_model, config: ColourFitConfig | None = None, impl: str | None = None):
        self.config = cfg = config or ColourFitConfig()
        #: "numba" or "numpy": which code :meth:`__call__` runs (``impl`` here wins over the config's).
        self.impl = resolve_impl(impl if impl is not None else cfg.impl)
        skin = face_model.skin_mask.cpu().numpy()
        cand = np.nonzero(skin)[0] if skin.sum() >= 50 else np.arange(face_model.n_vertices)
        step = max(1, len(cand) // cfg.n_samples)
        self.samples = cand[::step][: cfg.n_samples]
        tri = face_model.triangles.cpu().numpy().astype(np.int64)
        inc = _incident_triangles(tri, self.samples)
        ring = np.concatenate([tri, np.zeros((1, 3), np.int64)])[inc]  # [S, D, 3]; pad = degenerate
        # 3 x [D, S]: ring slot first, so the sum over a vertex's triangles adds whole [S, 3] slabs
        # (a reduction over a middle axis of [B, S, D, 3] cost 15x more).
        self._corners = tuple(np.ascontiguousarray(ring[..., c].T) for c in range(3))
        #: The vertices the fit reads (samples and their rings): a geometry of just these, in this
        #: order, may replace the full one (a caller then evaluates a quarter of the model).
        self.vertices = np.unique(np.concatenate([self.samples, *(c.ravel() for c in self._corners)]))
        self.n_vertices = int(face_model.n_vertices)
        self._local = (np.searchsorted(self.vertices, self.samples),
                       tuple(np.searchsorted(self.vertices, c) for c in self._corners))
        n_all = face_model.reflectance_basis.shape[-1]
        self.n_local = n_all if cfg.n_local_modes is None else max(0, min(int(cfg.n_local_modes), n_all))
        self._mean = face_model.mean_reflectance.detach().double().cpu().numpy()[self.samples]  # [S, 3]
        self._basis = face_model.reflectance_basis.detach().double().cpu().numpy()[self.samples][..., :self.n_local]
        self._prior = 1.0 / face_model.reflectance_sigma.detach().double().cpu().numpy()[:self.n_local] ** 2
        modes = skin_modes()
        self.constant_coef, _ = constant_colour_coefficients(face_model)  # [m_all, 3]
        self.n_modes = n_all
        self.skin_mean = modes.mean
        self.skin_modes = modes.modes  # [3 modes, 3 rgb]
        # The skin prior's mean relative to the model's mean albedo, as a constant offset.
        self.skin_offset = modes.mean - self._mean.mean(0)
        self._base = self._mean + self.skin_offset  # [S, 3] albedo at zero coefficients
        m = self._basis.shape[2]
        self._design = np.concatenate([np.broadcast_to(self.skin_modes.T[None], (len(self.samples), 3, 3)),
                                       self._basis], 2).reshape(-1, 3 + m)  # [3S, 3 + m]
        self._refl_prior = np.diag(np.concatenate([np.ones(3), self._prior * cfg.local_prior_weight])
                                   * cfg.sigma_colour ** 2)
        # Light priors: channels towards their mean (grey), higher bands small (solve_light adds the
        # exposure level: without it the albedo-light scale would be left to the albedo prior alone).
        chroma = np.kron(np.eye(3) - 1.0 / 3.0, np.eye(9))
        bands = np.kron(np.eye(3), np.diag([0.0] + [1.0] * 8))
        self._light_prior = cfg.light_chroma_weight * chroma + cfg.light_band_weight * bands
        # Row / column indices of the three 9 x 9 diagonal blocks of the 27 x 27 light system.
        offset, (rows, cols) = np.arange(3)[:, None, None] * 9, np.indices((9, 9))
        self._block_rows, self._block_cols = (offset + rows).ravel(), (offset + cols).ravel()
        # resolve_scale's constants: the albedo at zero coefficients and the skin modes' inverse.
        self._skin_inv = np.linalg.inv(self.skin_modes)
        self._base_c = self._base.mean(0) @ self._skin_inv
        self._scales = np.exp(np.linspace(-1.2, 1.2, 49))[None]
        # The compiled path's tables: contiguous, and the basis as [3S, m] rows.
        self._basis_rows = np.ascontiguousarray(self._basis.reshape(-1, self._basis.shape[2]))
        self._design = np.ascontiguousarray(self._design)
        self._scales_flat = np.ascontiguousarray(self._scales[0])
        self._constant_coef = np.ascontiguousarray(self.constant_coef, np.float64)

    # -- pieces ------------------------------------------------------------------------------------
    def _indices(self, geometry: np.ndarray) -> tuple:
        """(sample indices, ring corner indices) into ``geometry``: the full mesh [B, N, 3] or
        :attr:`vertices` only [B, len(vertices), 3]."""
        n = geometry.shape[1]
        if n == self.n_vertices:
            return self.samples, self._corners
        if n == len(self.vertices):
            return self._local
        raise ValueError(f"geometry: expected {self.n_vertices} vertices (the mesh) or {len(self.vertices)} "
                         f"(ColourFitter.vertices), got {n}")

    def normals(self, geometry: np.ndarray) -> np.ndarray:
        """Model-space unit normals [B, S, 3] of the sample vertices from the geometry [B, N, 3]
        (or [B, len(vertices), 3])."""
        c0, c1, c2 = (np.take(geometry, c, axis=1) for c in self._indices(geometry)[1])  # [B, D, S, 3] each
        fn = _cross(c1 - c0, c2 - c0).sum(1)
        return fn / np.maximum(np.sqrt((fn * fn).sum(-1, keepdims=True)), 1e-20)

    def observe(self, images, geometry, rot, t, k):
        """(colours [B, S, 3], SH basis [B, S, 9], weights [B, S] in {0, 1}) of the sample vertices."""
        _, h, w, _ = images.shape
        rt = rot.transpose(0, 2, 1)
        cam = geometry[:, self._indices(geometry)[0]] @ rt + t[:, None]
        n_cam = self.normals(geometry) @ rt
        z = np.maximum(cam[..., 2], 1e-6)
        uv = np.stack([k[:, 0:1] * cam[..., 0] / z + k[:, 2:3], k[:, 1:2] * cam[..., 1] / z + k[:, 3:4]], -1)
        facing = -(n_cam * cam).sum(-1) / np.sqrt((cam * cam).sum(-1))
        inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
        weight = ((facing > self.config.min_facing) & inside).astype(np.float64)
        return _bilinear(images, uv).astype(np.float64), sh_basis_np(n_cam), weight

    def solve_light(self, colours, sh, weight, albedo):
        """Light [B, 9, 3] for fixed albedo [B, S, 3] (module docstring)."""
        b = len(colours)
        aw = albedo * weight[..., None]  # [B, S, 3]
        hbar = (sh * weight[..., None]).sum(1) / np.maximum(weight.sum(1), 1.0)[:, None]  # [B, 9]
        w_level = (self.config.sigma_colour / self.config.light_level_sd) ** 2
        # Per channel c: sh^T diag(aw_c^2) sh (+ the exposure prior of the mean irradiance over the
        # visible samples near a typical level, a linear prior), as the three diagonal blocks.
        weighted = sh[:, None] * (aw * aw).transpose(0, 2, 1)[..., None]  # [B, 3, S, 9]
        blocks = weighted.transpose(0, 1, 3, 2) @ sh[:, None] + w_level * (hbar[:, None, :, None] * hbar[:, None, None])
        h = np.zeros((b, 27, 27))
        h[:, self._block_rows, self._block_cols] = blocks.reshape(b, -1)
        g = (((aw * colours * weight[..., None]).transpose(0, 2, 1) @ sh)
             + w_level * self.config.light_level * hbar[:, None]).reshape(b, 27)
        x = np.linalg.solve(h + self._light_prior, g[..., None])[..., 0]
        return x.reshape(b, 3, 9).transpose(0, 2, 1)

    def solve_reflectance(self, colours, shading, weight):
        """(skin-mode coefficients [B, 3], model coefficients [B, m]) for fixed shading [B, S, 3].

        Rows per (sample, channel) are ``shading * [skin modes, model basis]``: a constant design
        ``U`` [3S, 3 + m] scaled per row, so the normal matrix is ``U^T diag(w^2) U``."""
        b = len(colours)
        sw = (shading * weight[..., None]).reshape(b, -1)  # [B, 3S]
        rhs = ((colours - shading * self._base) * weight[..., None]).reshape(b, -1)
        x = np.empty((b, self._design.shape[1]))
        for i in range(b):  # per face: X^T X of a 2-D matrix is one symmetric rank-k update in BLAS
            rows = self._design * sw[i, :, None]
            x[i] = np.linalg.solve(rows.T @ rows + self._refl_prior, rows.T @ rhs[i])
        return x[:, :3], x[:, 3:]

    def huber_weights(self, residual: np.ndarray) -> np.ndarray:
        """IRLS weights [B, S] of the Huber loss on the colour residual's norm (weights of squared rows: sqrt)."""
        r = np.sqrt((residual ** 2).sum(-1))
        return np.sqrt(np.minimum(1.0, self.config.robust_delta / np.maximum(r, 1e-12)))

    def resolve_scale(self, skin, coef, light, sh, weight):
        """Albedo x s with light / s leaves every rendered colour unchanged; alternating steps move
        along that ridge only as fast as the weak priors pull. Pick ``s`` on a grid by the albedo prior
        and the exposure prior (the light's chroma and band priors describe its shape, not its level).

        Scaled skin coefficients are ``s a - c`` (a, c from the constant albedo), so both costs are
        closed-form in ``s`` and the grid is evaluated at once."""
        cfg = self.config
        c = self._base_c  # the constant albedo at zero coefficients, in skin-mode coordinates
        a = c + skin  # [B, 3]
        scales = self._scales  # [1, G]
        aa, ac, cc = (a * a).sum(1)[:, None], (a @ c)[:, None], float(c @ c)
        local = ((coef ** 2) * self._prior).sum(1)[:, None]  # the local modes scale along, at their unit prior
        refl = cfg.sigma_colour ** 2 * (scales ** 2 * (aa + local) - 2 * scales * ac + cc)
        hbar = (sh * weight[..., None]).sum(1) / np.maximum(weight.sum(1), 1.0)[:, None]
        level = (hbar[:, :, None] * light).sum(1)  # [B, 3] mean irradiance per channel
        w_level = (cfg.sigma_colour / cfg.light_level_sd) ** 2
        light_cost = w_level * ((level[:, None, :] / scales[..., None] - cfg.light_level) ** 2).sum(-1)
        best = scales[0, np.argmin(refl + light_cost, 1)]  # [B]
        sk = best[:, None] * a - c
        return sk, coef * best[:, None], light / best[:, None, None]

    def albedo(self, skin, coef):
        """Sample albedo [B, S, 3] for skin-mode and model coefficients."""
        return self._mean + self.skin_offset + (skin @ self.skin_modes)[:, None] + np.einsum("scm,bm->bsc",
                                                                                           self._basis, coef)

    # -- the fit -----------------------------------------------------------------------------------
    def __call__(self, images, geometry, rotation, translation, intrinsics) -> ColourFit:
        img = np.asarray(images)  # sampled at a few hundred points: no float64 copy of the whole crop
        if img.dtype not in (np.float32, np.float64):
            img = img.astype(np.float32)
        geo = np.asarray(geometry, np.float64)
        if img.ndim != 4 or img.shape[-1] != 3 or geo.ndim != 3 or len(geo) != len(img):
            raise ValueError(f"images [B, H, W, 3] and geometry [B, N, 3] expected, got {img.shape}, {geo.shape}")
        b = len(img)
        k = np.broadcast_to(np.asarray(intrinsics, np.float64).reshape(-1, 4), (b, 4))
        rot, t = np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
        if self.impl == "numba":
            return self._fit_numba(img, geo, rot, t, k)
        colours, sh, weight = self.observe(img, geo, rot, t, k)
        skin = np.zeros((b, 3))
        coef = np.zeros((b, self._basis.shape[2]))
        albedo = self.albedo(skin, coef)
        visible = weight
        for _ in range(self.config.iterations):
            light = self.solve_light(colours, sh, weight, albedo)
            shading = sh @ light  # [B, S, 3]
            skin, coef = self.solve_reflectance(colours, shading, weight)
            albedo = self.albedo(skin, coef)
            weight = visible * self.huber_weights(albedo * (sh @ light) - colours)
        light = self.solve_light(colours, sh, weight, albedo)
        skin, coef, light = self.resolve_scale(skin, coef, light, sh, weight)
        return self._result(colours, sh, visible, self.albedo(skin, coef), skin, coef, light)

    def _fit_numba(self, img, geo, rot, t, k) -> ColourFit:
        """:meth:`__call__` by the compiled functions (same maths; OpenCV's remap samples in between)."""
        note_first_compile("colour_fit_jit")
        from . import colour_fit_jit as jit

        cfg = self.config
        samples, (c0, c1, c2) = self._indices(geo)
        h, w = img.shape[1:3]
        uv, sh, visible = jit.observe(np.ascontiguousarray(geo), samples, c0, c1, c2, np.ascontiguousarray(rot),
                                      np.ascontiguousarray(t), np.ascontiguousarray(k), h, w, float(cfg.min_facing))
        colours = _bilinear(img, uv).astype(np.float64)
        light, skin, coef, albedo = jit.fit(
            colours, sh, visible, self._base, self.skin_modes, self._basis_rows, self._design,
            self._refl_prior, self._light_prior, self._prior, self._base_c, self._scales_flat, int(cfg.iterations),
            float(cfg.sigma_colour), float(cfg.light_level), float(cfg.light_level_sd), float(cfg.robust_delta),
            jit.DSYRK)
        total, n_vis, rms, mean_albedo = jit.summarise(colours, sh, visible, albedo, light, skin, coef,
                                                       self.skin_offset, self.skin_modes, self._constant_coef)
        return ColourFit(light=light, reflectance=total, skin=skin, albedo=mean_albedo, n_visible=n_vis, rms=rms)

    def _result(self, colours, sh, visible, albedo, skin, coef, light) -> ColourFit:
        """The :class:`ColourFit` of the final albedo [B, S, 3], coefficients and light."""
        pred = albedo * (sh @ light)
        n_vis = visible.sum(1)
        rms = np.sqrt((((pred - colours) ** 2).sum(-1) * visible).sum(1) / np.maximum(n_vis, 1))
        offset = self.skin_offset[None] + skin @ self.skin_modes  # constant RGB offset from the model's mean
        total = offset @ self.constant_coef.T
        total[:, :self.n_local] += coef
        mean_albedo = (albedo * visible[..., None]).sum(1) / np.maximum(n_vis, 1)[:, None]
        return ColourFit(light=light, reflectance=total, skin=skin, albedo=mean_albedo, n_visible=n_vis, rms=rms)
