"""The colour fit of :mod:`fml_taichi.recon.colour_fit` compiled by numba (the same maths, float64).

The numpy path is a few hundred small array operations per call (per-call overhead and temporaries
dominate its ~1.5 ms for one face); here the observation and the whole alternating solve are two
compiled calls with explicit loops. The bilinear sample stays OpenCV's remap, called between the two:
it resolves coordinates to 1/32 px, and calling it keeps the two paths' colours identical.
The big products stay on BLAS: the reflectance normal matrix ``U^T diag(w^2) U`` of [3S, 3 + m] rows
by ``dsyrk`` (as numpy's ``X.T @ X``), the rest by ``np.dot`` inside numba.
"""
from __future__ import annotations

import ctypes

import numpy as np
import numba
from numba.extending import get_cython_function_address

SH_C0, SH_C1, SH_C2, SH_C3, SH_C4 = (0.28209479177387814, 0.4886025119029199, 1.0925484305920792,
                                     0.31539156525252005, 0.5462742152960396)

_JIT = dict(cache=True, nogil=True)

_P = ctypes.c_void_p
#: BLAS ``dsyrk`` (SciPy's), for ``X^T X`` at half a general product's cost (numba's ``np.dot`` has only
#: gemm). Passed to the compiled functions as an argument: a function pointer held as a global would
#: keep numba from caching them.
DSYRK = ctypes.CFUNCTYPE(None, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P)(
    get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))


@numba.njit(**_JIT)
def _sh9(x, y, z, out):
    """The 9 SH functions (docs/conventions.md order) of one unit normal, written into ``out`` [9]."""
    out[0] = SH_C0
    out[1] = SH_C1 * y
    out[2] = SH_C1 * z
    out[3] = SH_C1 * x
    out[4] = SH_C2 * x * y
    out[5] = SH_C2 * y * z
    out[6] = SH_C3 * (3 * z * z - 1)
    out[7] = SH_C2 * x * z
    out[8] = SH_C4 * (x * x - y * y)


@numba.njit(**_JIT)
def observe(geometry, samples, c0, c1, c2, rot, t, k, h, w, min_facing):
    """(pixel positions uv [B, S, 2], SH basis [B, S, 9], weights [B, S] in {0, 1}) of the sample
    vertices, as ``ColourFitter.observe`` without its sampling. ``samples`` [S] and the ring corner
    tables ``c0, c1, c2`` [D, S] index ``geometry`` [B, N, 3]."""
    b, s, d = geometry.shape[0], samples.shape[0], c0.shape[0]
    uv = np.empty((b, s, 2))
    sh = np.empty((b, s, 9))
    weight = np.empty((b, s))
    for f in range(b):
        g = geometry[f]
        r = rot[f]
        for i in range(s):
            # Area-weighted normal: the ring's cross products summed in ring order (as the numpy path).
            fx = fy = fz = 0.0
            for j in range(d):
                a, p, q = c0[j, i], c1[j, i], c2[j, i]
                e1x, e1y, e1z = g[p, 0] - g[a, 0], g[p, 1] - g[a, 1], g[p, 2] - g[a, 2]
                e2x, e2y, e2z = g[q, 0] - g[a, 0], g[q, 1] - g[a, 1], g[q, 2] - g[a, 2]
                fx += e1y * e2z - e1z * e2y
                fy += e1z * e2x - e1x * e2z
                fz += e1x * e2y - e1y * e2x
            norm = max(np.sqrt(fx * fx + fy * fy + fz * fz), 1e-20)
            fx, fy, fz = fx / norm, fy / norm, fz / norm
            nx = fx * r[0, 0] + fy * r[0, 1] + fz * r[0, 2]
            ny = fx * r[1, 0] + fy * r[1, 1] + fz * r[1, 2]
            nz = fx * r[2, 0] + fy * r[2, 1] + fz * r[2, 2]
            v = samples[i]
            x, y, zz = g[v, 0], g[v, 1], g[v, 2]
            cx = x * r[0, 0] + y * r[0, 1] + zz * r[0, 2] + t[f, 0]
            cy = x * r[1, 0] + y * r[1, 1] + zz * r[1, 2] + t[f, 1]
            cz = x * r[2, 0] + y * r[2, 1] + zz * r[2, 2] + t[f, 2]
            z = max(cz, 1e-6)
            u = k[f, 0] * cx / z + k[f, 2]
            vv = k[f, 1] * cy / z + k[f, 3]
            uv[f, i, 0] = u
            uv[f, i, 1] = vv
            facing = -(nx * cx + ny * cy + nz * cz) / np.sqrt(cx * cx + cy * cy + cz * cz)
            inside = u >= 0 and u <= w - 1 and vv >= 0 and vv <= h - 1
            weight[f, i] = 1.0 if (facing > min_facing and inside) else 0.0
            _sh9(nx, ny, nz, sh[f, i])
    return uv, sh, weight


@numba.njit(**_JIT)
def _albedo(base, skin, skin_modes, basis2, coef, out):
    """Sample albedo [S, 3] of one face into ``out``: base + skin modes + model basis [3S, m] @ coef."""
    s = base.shape[0]
    lin = np.dot(basis2, coef) if coef.shape[0] else np.zeros(3 * s)
    for i in range(s):
        for c in range(3):
            out[i, c] = base[i, c] + (skin[0] * skin_modes[0, c] + skin[1] * skin_modes[1, c]
                                           + skin[2] * skin_modes[2, c]) + lin[3 * i + c]


@numba.njit(**_JIT)
def _hbar(sh, weight):
    """The weighted mean SH vector [9] over the visible samples."""
    hb = np.zeros(9)
    tot = 0.0
    for i in range(sh.shape[0]):
        tot += weight[i]
        for j in range(9):
            hb[j] += sh[i, j] * weight[i]
    return hb / max(tot, 1.0)


@numba.njit(**_JIT)
def _solve_light(colours, sh, weight, albedo, light_prior, w_level, light_level):
    """Light [9, 3] of one face for fixed albedo [S, 3] (``ColourFitter.solve_light``)."""
    s = colours.shape[0]
    hb = _hbar(sh, weight)
    hm = light_prior.copy()
    g = np.zeros(27)
    blk = np.zeros((9, 9))
    for c in range(3):
        o = 9 * c
        for i in range(s):
            if weight[i] == 0.0:  # not visible: adds exact zeros
                continue
            aw = albedo[i, c] * weight[i]
            a2 = aw * aw
            rhs = aw * colours[i, c] * weight[i]
            for j in range(9):
                sj = sh[i, j] * a2
                g[o + j] += rhs * sh[i, j]
                for l in range(j, 9):  # the upper triangle; the block is symmetric
                    blk[j, l] += sj * sh[i, l]
        for j in range(9):
            g[o + j] += w_level * light_level * hb[j]
            for l in range(j, 9):
                v = blk[j, l] + w_level * hb[j] * hb[l]
                hm[o + j, o + l] += v
                if l != j:
                    hm[o + l, o + j] += v
        blk[:] = 0.0
    x = np.linalg.solve(hm, g)
    light = np.empty((9, 3))
    for c in range(3):
        for j in range(9):
            light[j, c] = x[9 * c + j]
    return light


@numba.njit(**_JIT)
def _shade(sh, light, out):
    """SH shading [S, 3] = sh [S, 9] @ light [9, 3] into ``out``."""
    for i in range(sh.shape[0]):
        for c in range(3):
            acc = 0.0
            for j in range(9):
                acc += sh[i, j] * light[j, c]
            out[i, c] = acc


@numba.njit(**_JIT)
def _gram(rows, dsyrk):
    """``rows^T rows`` [n, n] of C-ordered ``rows`` [k, n] by BLAS dsyrk (Fortran sees ``rows^T``
    [n, k]: ``C = A A^T``; its lower triangle is the C-order upper one, mirrored here)."""
    k, n = rows.shape
    out = np.empty((n, n))
    if k == 0:
        out[:] = 0.0
        return out
    uplo, trans = np.array([76], np.uint8), np.array([78], np.uint8)  # 'L', 'N'
    nn, kk = np.array([n], np.int32), np.array([k], np.int32)
    alpha, beta = np.ones(1), np.zeros(1)
    dsyrk(uplo.ctypes, trans.ctypes, nn.ctypes, kk.ctypes, alpha.ctypes, rows.ctypes, nn.ctypes, beta.ctypes,
          out.ctypes, nn.ctypes)
    for i in range(n):
        for j in range(i):
            out[i, j] = out[j, i]
    return out


@numba.njit(**_JIT)
def _solve_reflectance(colours, shading, weight, base, design, refl_prior, dsyrk):
    """[3 + m] skin-mode and model coefficients of one face for fixed shading (``solve_reflectance``).
    Samples of weight 0 (not visible) add exact zeros to the normal equations: left out."""
    s = colours.shape[0]
    n = design.shape[1]
    kept = 0
    for i in range(s):
        kept += weight[i] != 0.0
    rows = np.empty((3 * kept, n))
    rhs = np.empty(3 * kept)
    o = 0
    for i in range(s):
        if weight[i] == 0.0:
            continue
        for c in range(3):
            r = 3 * i + c
            sw = shading[i, c] * weight[i]
            rhs[o] = (colours[i, c] - shading[i, c] * base[i, c]) * weight[i]
            for m in range(n):
                rows[o, m] = design[r, m] * sw
            o += 1
    return np.linalg.solve(_gram(rows, dsyrk) + refl_prior, np.dot(rows.T, rhs))


@numba.njit(**_JIT)
def fit(colours, sh, visible, base, skin_modes, basis2, design, refl_prior, light_prior, prior,
        base_c, scales, iterations, sigma_colour, light_level, light_level_sd, robust_delta, dsyrk):
    """The alternating fit and ``resolve_scale`` of ``ColourFitter.__call__`` for every face:
    (light [B, 9, 3], skin [B, 3], coef [B, m], albedo [B, S, 3]). ``base`` [S, 3] the albedo at zero
    coefficients, ``basis2`` [3S, m] the model basis rows, ``design`` [3S, 3 + m] skin modes and basis;
    ``dsyrk``: :data:`DSYRK`."""
    b, s = colours.shape[0], colours.shape[1]
    m = basis2.shape[1]
    w_level = (sigma_colour / light_level_sd) ** 2
    lights = np.empty((b, 9, 3))
    skins = np.empty((b, 3))
    coefs = np.empty((b, m))
    albedos = np.empty((b, s, 3))
    cc = 0.0
    for j in range(3):
        cc += base_c[j] * base_c[j]
    shading = np.empty((s, 3))
    for f in range(b):
        col, shf, vis = colours[f], sh[f], visible[f]
        skin = np.zeros(3)
        coef = np.zeros(m)
        albedo = albedos[f]
        _albedo(base, skin, skin_modes, basis2, coef, albedo)
        weight = vis.copy()
        for _ in range(iterations):
            light = _solve_light(col, shf, weight, albedo, light_prior, w_level, light_level)
            _shade(shf, light, shading)
            x = _solve_reflectance(col, shading, weight, base, design, refl_prior, dsyrk)
            skin = x[:3].copy()
            coef = x[3:].copy()
            _albedo(base, skin, skin_modes, basis2, coef, albedo)
            for i in range(s):  # Huber IRLS weights of the colour residual's norm
                r2 = 0.0
                for c in range(3):
                    d = albedo[i, c] * shading[i, c] - col[i, c]
                    r2 += d * d
                weight[i] = vis[i] * np.sqrt(min(1.0, robust_delta / max(np.sqrt(r2), 1e-12)))
        light = _solve_light(col, shf, weight, albedo, light_prior, w_level, light_level)
        # resolve_scale: the albedo / light split along their common scale, by the priors, on a grid.
        a = base_c + skin
        aa = a[0] * a[0] + a[1] * a[1] + a[2] * a[2]
        ac = a[0] * base_c[0] + a[1] * base_c[1] + a[2] * base_c[2]
        local = 0.0
        for j in range(m):
            local += coef[j] * coef[j] * prior[j]
        hb = _hbar(shf, weight)
        level = np.zeros(3)
        for c in range(3):
            for j in range(9):
                level[c] += hb[j] * light[j, c]
        best_cost, best = np.inf, 1.0
        for gi in range(scales.shape[0]):
            sc = scales[gi]
            cost = sigma_colour ** 2 * (sc ** 2 * (aa + local) - 2 * sc * ac + cc)
            lc = 0.0
            for c in range(3):
                lc += (level[c] / sc - light_level) ** 2
            cost += w_level * lc
            if cost < best_cost:
                best_cost, best = cost, sc
        skin = best * a - base_c
        coef = coef * best
        lights[f] = light / best
        skins[f] = skin
        coefs[f] = coef
        _albedo(base, skin, skin_modes, basis2, coef, albedo)
    return lights, skins, coefs, albedos


@numba.njit(**_JIT)
def summarise(colours, sh, visible, albedo, light, skin, coef, skin_offset, skin_modes, constant_coef):
    """(model coefficients [B, m_all] with the global colour, visible count [B], colour rms [B], mean
    albedo [B, 3] over the visible samples): ``ColourFitter.__call__``'s summary of the fit."""
    b, s = colours.shape[0], colours.shape[1]
    m_all, m = constant_coef.shape[0], coef.shape[1]
    total = np.empty((b, m_all))
    n_vis = np.empty(b)
    rms = np.empty(b)
    mean_albedo = np.empty((b, 3))
    for f in range(b):
        nv = 0.0
        se = 0.0
        acc = np.zeros(3)
        for i in range(s):
            nv += visible[f, i]
            e = 0.0
            for c in range(3):
                shade = 0.0
                for j in range(9):
                    shade += sh[f, i, j] * light[f, j, c]
                d = albedo[f, i, c] * shade - colours[f, i, c]
                e += d * d
                acc[c] += albedo[f, i, c] * visible[f, i]
            se += e * visible[f, i]
        n_vis[f] = nv
        rms[f] = np.sqrt(se / max(nv, 1.0))
        for c in range(3):
            mean_albedo[f, c] = acc[c] / max(nv, 1.0)
        # The constant RGB offset from the model's mean, written into the model's constant modes.
        off = np.empty(3)
        for c in range(3):
            off[c] = skin_offset[c] + skin[f, 0] * skin_modes[0, c] + skin[f, 1] * skin_modes[1, c] \
                + skin[f, 2] * skin_modes[2, c]
        for j in range(m_all):
            total[f, j] = off[0] * constant_coef[j, 0] + off[1] * constant_coef[j, 1] + off[2] * constant_coef[j, 2]
        for j in range(m):
            total[f, j] += coef[f, j]
    return total, n_vis, rms, mean_albedo
