"""Kernels of the fused image-formation layer (paper Sec. 5, Eq. 5 and Eq. 9) with a hand-written
backward; the op and its contract are in :mod:`fml_taichi.ops.image_formation`.

Why fused and hand-differentiated (measured: N=30k, B=8, 240x240, float32, taichi 1.7.4, 2-core
CPU, CPU time): a Taichi launch costs ~0.1 ms and an elementwise Taichi pass is no faster than
torch's, so the speed comes from doing all per-vertex maths in one pass over memory. Taichi's
autodiff of the per-vertex part of this kernel (normals given) took 72 ms for the backward and 6.5 s
to compile, flooding warnings, against 13.5 ms here with the same gradients: autodiff turns the
per-image reductions (light 27, rotation 9, translation 3 values) into per-vertex atomics on the
same addresses, and forbids the chunked loops that reduce in registers. The backward here
recomputes the cheap forward quantities per vertex instead of storing them, reduces per chunk in
registers, skips vertices whose adjoints are all zero (outside the loss, no output gradient given:
typically half of them, the back faces), and ends with one gather pass taking the normal gradients
through the cross products.

Normals are gathered per vertex over its incident corners (a cached vertex adjacency built from the
triangles, :func:`~fml_taichi.ops.normals.vertex_adjacency`) instead of scattered per face:
float atomics are compare-and-swap loops on the CPU, and the atomic scatter pass took 10.6 ms against
5-7 ms for the gather.

Passes: forward = one vertex pass; backward = one vertex pass + one gather pass for the normals.
"""
import functools

import taichi as ti

from ..common import runtime
from ..common.constants import NORMAL_EPS, Z_MIN
from .helpers import chunk_range
from .normals import safe_unit
from .photometric import l2_eps
from .projection import project_point
from .sampling import bilinear_interp, bilinear_taps
from .shading import irradiance, irradiance_vjp, sh9, sh9_vjp
from .visibility import faces_camera

__all__ = ["fused_kernels"]

ND = ti.types.ndarray(ndim=1)


# The kernels index flat 1D views with explicit offsets: measured ~25% faster on the CPU than
# [B, N, 3] ndarray indexing, whose per-access shape arithmetic the compiler does not hoist.
@ti.func
def ld3(a: ti.template(), j):
    return ti.Vector([a[j], a[j + 1], a[j + 2]])


@ti.func
def st3(a: ti.template(), j, x):
    for q in ti.static(range(3)):
        a[j + q] = x[q]


@ti.func
def ld_mat3(a: ti.template(), j):
    return ti.Matrix([[a[j + 3 * r + c] for c in ti.static(range(3))] for r in ti.static(range(3))])


@ti.func
def inside(u, v, h, w):
    return (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)


@ti.func
def normal_sum(verts: ti.template(), vb, vm, offsets: ti.template(), others: ti.template(), i):
    """Sum of vertex i's incident face normals by gathering its corners (no atomics)."""
    s = vm * 0
    for q in range(offsets[i], offsets[i + 1]):
        s += (ld3(verts, vb + 3 * others[2 * q]) - vm).cross(ld3(verts, vb + 3 * others[2 * q + 1]) - vm)
    return s


@functools.cache
def fused_kernels():
    """The three Taichi kernels of the fused layer (see the module docstring), as a namespace.

    Every ndarray argument is a flat 1D view of a contiguous tensor; sizes travel as ints.
    """
    runtime.init()

    @ti.kernel
    def forward(verts: ND, refl: ND, offsets: ND, others: ND, rot: ND, trans: ND, k: ND, light: ND, image: ND,
                sums: ND, colors: ND, uv: ND, visible: ND, v_cam: ND, normals: ND, sampled: ND, loss: ND,
                nb: ti.i32, n: ti.i32, h: ti.i32, w: ti.i32, chunk: ti.i32, dt: ti.template()):
        for b, c in ti.ndrange(nb, (n + chunk - 1) // chunk):
            rm = ld_mat3(rot, 9 * b)
            t = ld3(trans, 3 * b)
            lt = ti.Matrix([[light[27 * b + 3 * q + ch] for q in ti.static(range(9))] for ch in ti.static(range(3))])
            fxk, fyk, cxk, cyk = k[4 * b], k[4 * b + 1], k[4 * b + 2], k[4 * b + 3]
            vb, img0 = 3 * n * b, 3 * h * w * b
            acc = dt(0.0)
            lo, hi = chunk_range(c, chunk, n)
            for i in range(lo, hi):
                j = vb + 3 * i
                vm = ld3(verts, j)
                s_m = normal_sum(verts, vb, vm, offsets, others, i)
                p = rm @ vm + t
                nm, _ = safe_unit(s_m, dt)
                nc = rm @ nm
                u, v = project_point(p, fxk, fyk, cxk, cyk, dt)
                col = ld3(refl, j) * irradiance(lt, sh9(nc, dt))
                x0, x1, y0, y1, fx, fy = bilinear_taps(u, v, h, w, dt)
                s, _, _ = bilinear_interp(ld3(image, img0 + 3 * (y0 * w + x0)), ld3(image, img0 + 3 * (y0 * w + x1)),
                                          ld3(image, img0 + 3 * (y1 * w + x0)), ld3(image, img0 + 3 * (y1 * w + x1)),
                                          fx, fy)
                visf = ti.select(faces_camera(p, nc) & (p[2] > dt(Z_MIN)) & inside(u, v, h, w), dt(1.0), dt(0.0))
                acc += visf * l2_eps(s - col, dt)
                st3(sums, j, s_m)
                st3(colors, j, col)
                uv[2 * (n * b + i)] = u
                uv[2 * (n * b + i) + 1] = v
                visible[n * b + i] = visf
                st3(v_cam, j, p)
                st3(normals, j, nc)
                st3(sampled, j, s)
            loss[b] += acc / ti.cast(n, dt)

    @ti.kernel
    def backward(verts: ND, refl: ND, sums: ND, rot: ND, trans: ND, k: ND, light: ND, image: ND,
                 g_loss: ND, g_colors: ND, g_uv: ND, g_vcam: ND, g_normals: ND, g_sampled: ND, extra: ti.i32,
                 g_verts: ND, g_refl: ND, g_sums: ND, g_rot: ND, g_trans: ND, g_light: ND, g_image: ND,
                 image_grad: ti.i32, nb: ti.i32, n: ti.i32, h: ti.i32, w: ti.i32, chunk: ti.i32, dt: ti.template()):
        for b, c in ti.ndrange(nb, (n + chunk - 1) // chunk):
            rm = ld_mat3(rot, 9 * b)
            t = ld3(trans, 3 * b)
            lt = ti.Matrix([[light[27 * b + 3 * q + ch] for q in ti.static(range(9))] for ch in ti.static(range(3))])
            fxk, fyk, cxk, cyk = k[4 * b], k[4 * b + 1], k[4 * b + 2], k[4 * b + 3]
            vb, img0 = 3 * n * b, 3 * h * w * b
            g_l = g_loss[b] / ti.cast(n, dt)
            a_light = ti.Matrix.zero(dt, 3, 9)  # transposed, like lt
            a_rot = ti.Matrix.zero(dt, 3, 3)
            a_t = ti.Vector.zero(dt, 3)
            lo, hi = chunk_range(c, chunk, n)
            for i in range(lo, hi):
                # Recompute the forward quantities (cheaper than storing and re-reading them).
                j = vb + 3 * i
                vm = ld3(verts, j)
                p = rm @ vm + t
                nm, norm = safe_unit(ld3(sums, j), dt)
                nc = rm @ nm
                u, v = project_point(p, fxk, fyk, cxk, cyk, dt)
                vis = faces_camera(p, nc) & (p[2] > dt(Z_MIN)) & inside(u, v, h, w)
                if not (vis | extra):
                    # Outside the loss and no output gradient given: every adjoint of this vertex is
                    # zero. Typically half the vertices (back faces): this halves the backward.
                    zero = ti.Vector.zero(dt, 3)
                    st3(g_refl, j, zero)
                    st3(g_verts, j, zero)
                    st3(g_sums, j, zero)
                    continue
                hs = sh9(nc, dt)
                e = irradiance(lt, hs)
                r = ld3(refl, j)
                x0, x1, y0, y1, fx, fy = bilinear_taps(u, v, h, w, dt)
                o00, o01 = img0 + 3 * (y0 * w + x0), img0 + 3 * (y0 * w + x1)
                o10, o11 = img0 + 3 * (y1 * w + x0), img0 + 3 * (y1 * w + x1)
                s, ds_dfx, ds_dfy = bilinear_interp(ld3(image, o00), ld3(image, o01), ld3(image, o10),
                                                    ld3(image, o11), fx, fy)
                # Adjoints of the per-vertex outputs: the loss term, plus the outputs' own gradients.
                g_s = ti.Vector.zero(dt, 3)
                if vis:
                    d = s - r * e
                    g_s = g_l / l2_eps(d, dt) * d
                g_col = -g_s
                g_u, g_v = dt(0.0), dt(0.0)
                g_p = ti.Vector.zero(dt, 3)
                g_nc = ti.Vector.zero(dt, 3)
                if extra:
                    g_s += ld3(g_sampled, j)
                    g_col += ld3(g_colors, j)
                    g_u, g_v = g_uv[2 * (n * b + i)], g_uv[2 * (n * b + i) + 1]
                    g_p = ld3(g_vcam, j)
                    g_nc = ld3(g_normals, j)
                # Shading: c = r * e, e = gamma^T H(n).
                st3(g_refl, j, g_col * e)
                g_e = g_col * r
                a_light += g_e.outer_product(hs)
                g_nc += sh9_vjp(nc, irradiance_vjp(lt, g_e), dt)
                # Sampling: the clamp passes gradient only inside [0, W-1] x [0, H-1].
                if (u >= 0) & (u <= w - 1):
                    g_u += g_s.dot(ds_dfx)
                if (v >= 0) & (v <= h - 1):
                    g_v += g_s.dot(ds_dfy)
                if image_grad:
                    one = dt(1.0)
                    for ch in ti.static(range(3)):
                        g_image[o00 + ch] += (one - fx) * (one - fy) * g_s[ch]
                        g_image[o01 + ch] += fx * (one - fy) * g_s[ch]
                        g_image[o10 + ch] += (one - fx) * fy * g_s[ch]
                        g_image[o11 + ch] += fx * fy * g_s[ch]
                # Projection with z clamped to Z_MIN (no z gradient where clamped).
                z = ti.max(p[2], dt(Z_MIN))
                g_p += ti.Vector([fxk * g_u / z, fyk * g_v / z, dt(0.0)])
                if p[2] > dt(Z_MIN):
                    g_p[2] -= (fxk * p[0] * g_u + fyk * p[1] * g_v) / (z * z)
                # Rigid transform and the normal's rotation: p = R v + t, nc = R nm.
                st3(g_verts, j, rm.transpose() @ g_p)
                a_rot += g_p.outer_product(vm) + g_nc.outer_product(nm)
                a_t += g_p
                # Normalisation nm = s / |s| (zero where the normal is undefined).
                g_nm = rm.transpose() @ g_nc
                g_sum = ti.Vector.zero(dt, 3)
                if norm > dt(NORMAL_EPS):
                    g_sum = (g_nm - nm * nm.dot(g_nm)) / norm
                st3(g_sums, j, g_sum)
            for q in ti.static(range(9)):
                for ch in ti.static(range(3)):
                    g_light[27 * b + 3 * q + ch] += a_light[ch, q]
            for q in ti.static(range(3)):
                g_trans[3 * b + q] += a_t[q]
                for ch in ti.static(range(3)):
                    g_rot[9 * b + 3 * q + ch] += a_rot[q, ch]

    @ti.kernel
    def normals_backward(verts: ND, offsets: ND, others: ND, g_sums: ND, g_verts: ND,
                         nb: ti.i32, n: ti.i32, chunk: ti.i32):
        # Corner i of a face sees fn = (v_next - v_i) x (v_prev - v_i); with g = dL/dfn (the sum of the
        # face's three g_sums), dL/dv_i = g x (v_prev - v_next). Gathered per vertex: no atomics.
        for b, c in ti.ndrange(nb, (n + chunk - 1) // chunk):
            vb = 3 * n * b
            lo, hi = chunk_range(c, chunk, n)
            for i in range(lo, hi):
                j = vb + 3 * i
                g_own = ld3(g_sums, j)
                acc = g_own * 0
                for q in range(offsets[i], offsets[i + 1]):
                    jn, jp = vb + 3 * others[2 * q], vb + 3 * others[2 * q + 1]
                    g = g_own + ld3(g_sums, jn) + ld3(g_sums, jp)
                    acc += g.cross(ld3(verts, jp) - ld3(verts, jn))
                st3(g_verts, j, ld3(g_verts, j) + acc)

    class Kernels:
        pass

    ks = Kernels()
    ks.forward, ks.backward, ks.normals_backward = forward, backward, normals_backward
    return ks
