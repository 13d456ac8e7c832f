"""The landmark fit's joint solver compiled by numba: the same maths as
:class:`~fml_taichi.recon.landmark_fit.LandmarkFitter` (``solver="joint"``), one face at a time.

Why a twin: the numpy fit is ~60 small array operations per Gauss-Newton step, and at batch 1 their
per-call overhead and temporaries, not the arithmetic, set its time (~1-2 ms of a 4 ms budget).
Compiled, a face costs tens of microseconds. The numpy code stays the reference (and the fallback
when numba is missing): ``tests/test_landmark_fit_jit.py`` checks that both give the same fit.

Every function mirrors one of ``landmark_fit``'s (same names), on one face's arrays:
``rot`` [3, 3], ``t`` [3], ``coef`` [M], points [P, 3], pixels [P, 2], ``k`` [4].
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fit_joint_batch"]

N_JAW = 17


@njit(cache=True, nogil=True)
def _unit(v):
    return v / max(np.sqrt((v * v).sum()), 1e-300)


@njit(cache=True, nogil=True)
def _cross(a, b):
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


@njit(cache=True, nogil=True)
def rodrigues(w):
    """``cos(t) I + sin(t) [k]_x + (1 - cos(t)) k k^T`` of a rotation vector [3]."""
    theta = np.sqrt((w * w).sum())
    k = w / max(theta, 1e-12)
    c, s = np.cos(theta), np.sin(theta)
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    r = s * skew + (1 - c) * np.outer(k, k)
    for i in range(3):
        r[i, i] += c
    return r


@njit(cache=True, nogil=True)
def affine_pose(x2_inner, k, pinv, mean_inner):
    """``landmark_fit.affine_pose`` for one face: (R [3, 3], t [3]) from the inner points."""
    sol = pinv @ x2_inner  # [4, 2]
    a_n = np.empty((2, 3))
    for i in range(2):
        for j in range(3):
            a_n[i, j] = sol[j, i] / k[i]
    scale = 0.5 * (np.sqrt((a_n[0] * a_n[0]).sum()) + np.sqrt((a_n[1] * a_n[1]).sum()))
    r0, r1 = _unit(a_n[0] / scale), _unit(a_n[1] / scale)
    c, d = _unit(r0 + r1), _unit(r0 - r1)
    rot = np.empty((3, 3))
    rot[0] = (c + d) * np.sqrt(0.5)
    rot[1] = (c - d) * np.sqrt(0.5)
    rot[2] = _cross(rot[0], rot[1])
    z = 1.0 / scale
    centroid = np.zeros(3)
    for p in range(len(mean_inner)):
        centroid += mean_inner[p]
    centroid /= len(mean_inner)
    t = np.array([(sol[3, 0] - k[2]) / k[0] * z, (sol[3, 1] - k[3]) / k[1] * z, z - (rot[2] * centroid).sum()])
    return rot, t


@njit(cache=True, nogil=True)
def points(mean, basis_flat, coef):
    """Positions [U, 3] of the used vertices (``basis_flat`` [M, 3U])."""
    return mean + (coef @ basis_flat).reshape(mean.shape)


@njit(cache=True, nogil=True)
def jaw_vertices(rot, t, pts, fixed_local, jaw_local, jaw_valid, own_k, jaw_normals, fixed_jaw):
    """Local indices [68] of the landmark vertices with the jaw on the silhouette."""
    idx = fixed_local.copy()
    if fixed_jaw:
        return idx
    n_k = jaw_local.shape[1]
    for j in range(N_JAW):
        leading = 0
        for c in range(n_k):
            v = pts[jaw_local[j, c]]
            cam = rot @ v + t
            n_cam = rot @ jaw_normals[j, c]
            if not ((cam * n_cam).sum() < 0 and jaw_valid[j, c]):
                break
            leading += 1
        pick = own_k[j] if leading > own_k[j] else max(leading - 1, 0)
        idx[j] = jaw_local[j, pick]
    return idx


@njit(cache=True, nogil=True)
def _point_rows(rot, t, x, k, jac, res, row, scale, rot_first):
    """Fill the two Jacobian rows (rotation, translation columns; ``d(u, v) / d cam`` in the
    translation columns, ``q x g`` in the rotation ones) and residuals of one point ``x`` [3], scaled
    by ``scale``; returns ``g R`` [2, 3] for the coefficient columns (scalar code: no temporaries)."""
    q0 = rot[0, 0] * x[0] + rot[0, 1] * x[1] + rot[0, 2] * x[2]
    q1 = rot[1, 0] * x[0] + rot[1, 1] * x[1] + rot[1, 2] * x[2]
    q2 = rot[2, 0] * x[0] + rot[2, 1] * x[1] + rot[2, 2] * x[2]
    c0, c1, c2 = q0 + t[0], q1 + t[1], q2 + t[2]
    iz = 1.0 / max(c2, 1e-6)
    fx, fy = k[0] * iz, k[1] * iz
    gu = (fx, 0.0, -fx * c0 * iz)
    gv = (0.0, fy, -fy * c1 * iz)
    r = row
    jac[r, 0] = (q1 * gu[2] - q2 * gu[1]) * scale
    jac[r, 1] = (q2 * gu[0] - q0 * gu[2]) * scale
    jac[r, 2] = (q0 * gu[1] - q1 * gu[0]) * scale
    jac[r, 3], jac[r, 4], jac[r, 5] = gu[0] * scale, gu[1] * scale, gu[2] * scale
    jac[r + 1, 0] = (q1 * gv[2] - q2 * gv[1]) * scale
    jac[r + 1, 1] = (q2 * gv[0] - q0 * gv[2]) * scale
    jac[r + 1, 2] = (q0 * gv[1] - q1 * gv[0]) * scale
    jac[r + 1, 3], jac[r + 1, 4], jac[r + 1, 5] = gv[0] * scale, gv[1] * scale, gv[2] * scale
    res[r] = (rot_first[0] - (fx * c0 + k[2])) * scale
    res[r + 1] = (rot_first[1] - (fy * c1 + k[3])) * scale
    gr = np.empty((2, 3))
    for j in range(3):
        gr[0, j] = gu[0] * rot[0, j] + gu[1] * rot[1, j] + gu[2] * rot[2, j]
        gr[1, j] = gv[0] * rot[0, j] + gv[1] * rot[1, j] + gv[2] * rot[2, j]
    return gr


@njit(cache=True, nogil=True)
def pose_step(rot, t, x3, x2, w, k):
    """One Gauss-Newton step on (rotation, translation), left-multiplied rotation update."""
    p = len(x3)
    jac = np.zeros((2 * p, 6))
    res = np.zeros(2 * p)
    for i in range(p):
        _point_rows(rot, t, x3[i], k, jac, res, 2 * i, w[i], x2[i])
    h = jac.T @ jac
    h += 1e-6 * np.trace(h) * np.eye(6)
    step = np.linalg.solve(h, jac.T @ res)
    return rodrigues(step[:3]) @ rot, t + step[3:]


@njit(cache=True, nogil=True)
def joint_step(rot, t, coef, idx, pts, basis, x2, w, k, sigma_px, prior):
    """One Gauss-Newton step on pose, shape and expression together (6 + M unknowns)."""
    p, m = len(idx), basis.shape[2]
    jac = np.zeros((2 * p, 6 + m))
    res = np.zeros(2 * p)
    for i in range(p):
        s = w[i] / sigma_px
        v = idx[i]
        gr = _point_rows(rot, t, pts[v], k, jac, res, 2 * i, s, x2[i])
        for r in range(2):
            g0, g1, g2 = gr[r, 0] * s, gr[r, 1] * s, gr[r, 2] * s
            for a in range(m):
                jac[2 * i + r, 6 + a] = g0 * basis[v, 0, a] + g1 * basis[v, 1, a] + g2 * basis[v, 2, a]
    h = jac.T @ jac
    grad = jac.T @ res
    for a in range(6):
        h[a, a] += 1e-9
    for a in range(m):
        h[6 + a, 6 + a] += prior[a]
        grad[6 + a] -= prior[a] * coef[a]
    step = np.linalg.solve(h, grad)
    return rodrigues(step[:3]) @ rot, t + step[3:6], coef + step[6:]


@njit(cache=True, nogil=True)
def fit_joint_batch(x2, k, w, rot0, t0, sigma_px, mean, basis, basis_flat, fixed_local, jaw_local, jaw_valid,
                    own_k, jaw_normals, prior, pose_steps, iterations, fixed_jaw):
    """The joint solver from the rigid start ``(rot0 [B, 3, 3], t0 [B, 3])`` for a batch:
    ``(rot [B, 3, 3], t [B, 3], coef [B, M], idx [B, 68], uv [B, 68, 2])`` (``LandmarkFitter.__call__``)."""
    b, m = len(x2), basis.shape[2]
    rot_out, t_out = np.empty((b, 3, 3)), np.empty((b, 3))
    coef_out, idx_out, uv_out = np.empty((b, m)), np.empty((b, 68), np.int64), np.empty((b, 68, 2))
    for f in range(b):
        rot, t = rot0[f].copy(), t0[f].copy()
        coef = np.zeros(m)
        pts = points(mean, basis_flat, coef)
        w_inner = w[f].copy()
        w_inner[:N_JAW] = 0.0
        x3 = np.empty((68, 3))
        for i in range(68):
            x3[i] = pts[fixed_local[i]]
        for _ in range(pose_steps):
            rot, t = pose_step(rot, t, x3, x2[f], w_inner, k[f])
        idx = jaw_vertices(rot, t, pts, fixed_local, jaw_local, jaw_valid, own_k, jaw_normals, fixed_jaw)
        for _ in range(iterations):
            rot, t, coef = joint_step(rot, t, coef, idx, pts, basis, x2[f], w[f], k[f], sigma_px[f], prior)
            pts = points(mean, basis_flat, coef)
            idx = jaw_vertices(rot, t, pts, fixed_local, jaw_local, jaw_valid, own_k, jaw_normals, fixed_jaw)
        for i in range(68):
            cam = rot @ pts[idx[i]] + t
            z = max(cam[2], 1e-6)
            uv_out[f, i, 0] = k[f, 0] * cam[0] / z + k[f, 2]
            uv_out[f, i, 1] = k[f, 1] * cam[1] / z + k[f, 3]
        rot_out[f], t_out[f], coef_out[f], idx_out[f] = rot, t, coef, idx
    return rot_out, t_out, coef_out, idx_out, uv_out


@njit(cache=True, nogil=True)
def affine_pose_batch(x2_inner, k, pinv, mean_inner):
    """:func:`affine_pose` for a batch: (R [B, 3, 3], t [B, 3])."""
    b = len(x2_inner)
    rot, t = np.empty((b, 3, 3)), np.empty((b, 3))
    for f in range(b):
        rot[f], t[f] = affine_pose(x2_inner[f], k[f], pinv, mean_inner)
    return rot, t
