"""The reflectance coefficient fit's observation (:mod:`fml_taichi.recon.corrective_fit`) compiled by numba.

``ReflectanceCoefficientFitter``'s numpy observation is ~60 array operations on [B, 3, M] planes;
here it is one compiled loop over the rows (ring normals, projection, the backface and image tests,
SH shading, exact bilinear samples), in float32 as the numpy path (constants cast, so no operation
widens to float64). The per-face design rows ``sqrt(w) Theta`` are one more compiled loop; their
normal matrix stays on BLAS.
"""
from __future__ import annotations

import numpy as np
import numba

_JIT = dict(cache=True, nogil=True)
_F = np.float32
C0, C1, C2, C3, C4 = (_F(0.28209479177387814), _F(0.4886025119029199), _F(1.0925484305920792),
                      _F(0.31539156525252005), _F(0.5462742152960396))
ZERO, ONE, THREE = _F(0.0), _F(1.0), _F(3.0)


@numba.njit(**_JIT)
def observe(geometry, rows, c0, c1, c2, rot, t, k, image, light, z_min, normal_eps, min_shading):
    """(sampled colour / clamped shading [B, M, 3], weight ``shading^2 ok`` [B, M, 3], ok [B, M],
    sampled colours [B, M, 3], inside [B, M]) at the vertices ``rows`` [M] of ``geometry`` [B, N, 3]
    (ring corner tables ``c0, c1, c2`` [D, M]); float32 throughout."""
    b, m, d = geometry.shape[0], rows.shape[0], c0.shape[0]
    h, w = image.shape[1], image.shape[2]
    wm1, hm1 = _F(w - 1), _F(h - 1)
    xmax, ymax = _F(max(w - 2, 0)), _F(max(h - 2, 0))
    quotient = np.empty((b, m, 3), np.float32)
    weight = np.empty((b, m, 3), np.float32)
    ok = np.empty((b, m), np.bool_)
    sampled = np.empty((b, m, 3), np.float32)
    inside = np.empty((b, m), np.bool_)
    sh = np.empty(9, np.float32)
    shade = np.empty(3, np.float32)
    for f in range(b):
        g, r, img, lt = geometry[f], rot[f], image[f], light[f]
        for i in range(m):
            sx = sy = sz = ZERO
            for j in range(d):  # area-weighted normal: the ring's cross products summed in ring order
                a, p, q = c0[j, i], c1[j, i], c2[j, i]
                e1x, e1y, e1z = g[p, 0] - g[a, 0], g[p, 1] - g[a, 1], g[p, 2] - g[a, 2]
                e2x, e2y, e2z = g[q, 0] - g[a, 0], g[q, 1] - g[a, 1], g[q, 2] - g[a, 2]
                sx += e1y * e2z - e1z * e2y
                sy += e1z * e2x - e1x * e2z
                sz += e1x * e2y - e1y * e2x
            norm = np.sqrt(sx * sx + sy * sy + sz * sz)
            if norm > normal_eps:
                mx, my, mz = sx / norm, sy / norm, sz / norm
            else:
                mx = my = mz = ZERO
            nx = r[0, 0] * mx + r[0, 1] * my + r[0, 2] * mz
            ny = r[1, 0] * mx + r[1, 1] * my + r[1, 2] * mz
            nz = r[2, 0] * mx + r[2, 1] * my + r[2, 2] * mz
            v = rows[i]
            x, y, zz = g[v, 0], g[v, 1], g[v, 2]
            vx = r[0, 0] * x + r[0, 1] * y + r[0, 2] * zz + t[f, 0]
            vy = r[1, 0] * x + r[1, 1] * y + r[1, 2] * zz + t[f, 1]
            vz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * zz + t[f, 2]
            z = max(vz, z_min)
            u = k[f, 0] * vx / z + k[f, 2]
            vv = k[f, 1] * vy / z + k[f, 3]
            ins = u >= ZERO and u <= wm1 and vv >= ZERO and vv <= hm1 and vz > z_min
            inside[f, i] = ins
            vis = (nx * vx + ny * vy + nz * vz) < ZERO and ins
            sh[0] = C0
            sh[1] = C1 * ny
            sh[2] = C1 * nz
            sh[3] = C1 * nx
            sh[4] = C2 * nx * ny
            sh[5] = C2 * ny * nz
            sh[6] = C3 * (THREE * nz * nz - ONE)
            sh[7] = C2 * nx * nz
            sh[8] = C4 * (nx * nx - ny * ny)
            # Bilinear sample, as reference.image_formation.bilinear_sample (border clamp).
            uc, vc = min(max(u, ZERO), wm1), min(max(vv, ZERO), hm1)
            x0, y0 = min(max(np.floor(uc), ZERO), xmax), min(max(np.floor(vc), ZERO), ymax)
            fx, fy = uc - x0, vc - y0
            ix, iy = int(x0), int(y0)
            ix1, iy1 = min(ix + 1, w - 1), min(iy + 1, h - 1)
            lit = True
            for c in range(3):
                acc = ZERO
                for j in range(9):
                    acc += sh[j] * lt[j, c]
                shade[c] = acc
                lit = lit and acc > min_shading
                i00, i01 = img[iy, ix, c], img[iy, ix1, c]
                i10, i11 = img[iy1, ix, c], img[iy1, ix1, c]
                top = i00 + fx * (i01 - i00)
                bottom = i10 + fx * (i11 - i10)
                sampled[f, i, c] = top + fy * (bottom - top)
            good = vis and lit
            ok[f, i] = good
            for c in range(3):
                quotient[f, i, c] = sampled[f, i, c] / max(shade[c], min_shading)
                weight[f, i, c] = shade[c] * shade[c] if good else ZERO
    return quotient, weight, ok, sampled, inside


@numba.njit(**_JIT)
def design_rows(theta, keep, weight):
    """(``sqrt(w) Theta`` rows [3K, C] float32, ``sqrt(w)`` [K, 3]) of one face's kept vertices
    ``keep`` [K] (``theta`` [M, 3, C], ``weight`` [M, 3])."""
    n, c = keep.shape[0], theta.shape[2]
    a = np.empty((3 * n, c), np.float32)
    sw = np.empty((n, 3), np.float32)
    for i in range(n):
        v = keep[i]
        for ch in range(3):
            s = np.sqrt(weight[v, ch])
            sw[i, ch] = s
            for j in range(c):
                a[3 * i + ch, j] = theta[v, ch, j] * s
    return a, sw


@numba.njit(**_JIT)
def solve_colour_face(quotient, base, rows, keep, sw, a, normal, max_residual):
    """One colour face's coefficients [C] float64: ``a^T (sqrt(w) rho)`` solved against ``normal``;
    ``quotient`` [M, 3] at the rows, ``base`` [N, 3] the face's base reflectance (all vertices)."""
    vec = np.empty(3 * keep.shape[0], np.float32)
    for i in range(keep.shape[0]):
        v = keep[i]
        for c in range(3):
            vec[3 * i + c] = sw[i, c] * min(max(quotient[v, c] - base[rows[v], c], -max_residual), max_residual)
    return np.linalg.solve(normal, np.dot(a.T, vec).astype(np.float64))


@numba.njit(**_JIT)
def solve_grey_face(quotient, base, rows, keep, w, total, sw, a, normal, max_residual):
    """One grey face's coefficients [C] float64: rows ``sqrt(W_i) mean_c Theta_i`` against the
    ``w``-weighted channel mean of ``rho`` (taken against the base's channel mean)."""
    vec = np.empty(keep.shape[0], np.float32)
    for i in range(keep.shape[0]):
        v, n = keep[i], rows[keep[i]]
        g = (base[n, 0] + base[n, 1] + base[n, 2]) / THREE
        acc = ZERO
        for c in range(3):
            acc += w[i, c] * min(max(quotient[v, c] - g, -max_residual), max_residual)
        vec[i] = sw[i] * (acc / total[i])
    return np.linalg.solve(normal, np.dot(a.T, vec).astype(np.float64))


@numba.njit(**_JIT)
def euler_to_matrix(rotation):
    """``R = Rz(rz) Ry(ry) Rx(rx)`` [B, 3, 3] float32 of Euler angles [B, 3] float32, as
    ``landmark_fit.euler_to_matrix_np`` (the same products; sin / cos may differ in the last bit)."""
    out = np.empty((rotation.shape[0], 3, 3), np.float32)
    for f in range(rotation.shape[0]):
        cx, cy, cz = np.cos(rotation[f, 0]), np.cos(rotation[f, 1]), np.cos(rotation[f, 2])
        sx, sy, sz = np.sin(rotation[f, 0]), np.sin(rotation[f, 1]), np.sin(rotation[f, 2])
        out[f, 0, 0] = cz * cy
        out[f, 0, 1] = cz * sy * sx - sz * cx
        out[f, 0, 2] = cz * sy * cx + sz * sx
        out[f, 1, 0] = sz * cy
        out[f, 1, 1] = sz * sy * sx + cz * cx
        out[f, 1, 2] = sz * sy * cx - cz * sx
        out[f, 2, 0] = -sy
        out[f, 2, 1] = cy * sx
        out[f, 2, 2] = cy * cx
    return out
