"""Regulariser kernels on per-point attributes ``values[B, N, C]`` over a graph, each with a
hand-written backward; the ops, their maths and the measurements behind this structure are in
:mod:`fml_taichi.ops.regularizers`.

Every factory is specialised to a Taichi float dtype (locals and casts carry it: with
``default_fp = f32`` float literals would round f64 kernels to f32).
"""
# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import functools

import taichi as ti

__all__ = ["laplacian_kernels", "pair_kernels", "SUM_CHUNK", "sum_sq_kernels", "chroma_kernels"]

nd = ti.types.ndarray


@functools.cache
def laplacian_kernels(dtype, channels: int):
    @ti.kernel
    def forward(values: nd(dtype=dtype, ndim=3), offsets: nd(dtype=ti.i32, ndim=1),
                neighbours: nd(dtype=ti.i32, ndim=1), lap: nd(dtype=dtype, ndim=3),
                energy: nd(dtype=dtype, ndim=2)):
        for i in range(values.shape[1]):
            lo, hi = offsets[i], offsets[i + 1]
            inv = ti.cast(1, dtype) / ti.cast(ti.max(hi - lo, 1), dtype)
            for b in range(values.shape[0]):
                acc = ti.Vector.zero(dtype, channels)
                for e in range(lo, hi):
                    j = neighbours[e]
                    for c in ti.static(range(channels)):
                        acc[c] += values[b, j, c]
                sq = ti.cast(0, dtype)
                for c in ti.static(range(channels)):
                    # Isolated point (hi == lo): residual 0, no smoothness constraint.
                    d = (values[b, i, c] - acc[c] * inv) if hi > lo else ti.cast(0, dtype)
                    lap[b, i, c] = d
                    sq += d * d
                energy[b, i] = sq

    @ti.kernel
    def backward(lap: nd(dtype=dtype, ndim=3), offsets: nd(dtype=ti.i32, ndim=1),
                 neighbours: nd(dtype=ti.i32, ndim=1), grad_loss: nd(dtype=dtype, ndim=1),
                 grad: nd(dtype=dtype, ndim=3)):
        # d/dx of sum_i |L_i|^2 is 2 L^T L x: each row's residual goes back to the point itself and,
        # divided by its degree, negated to each of its neighbours (atomic: neighbours are shared).
        for i in range(lap.shape[1]):
            lo, hi = offsets[i], offsets[i + 1]
            if hi > lo:
                inv = ti.cast(1, dtype) / ti.cast(hi - lo, dtype)
                for b in range(lap.shape[0]):
                    g = ti.cast(2, dtype) * grad_loss[b]
                    for c in ti.static(range(channels)):
                        grad[b, i, c] += g * lap[b, i, c]
                    for e in range(lo, hi):
                        j = neighbours[e]
                        for c in ti.static(range(channels)):
                            grad[b, j, c] -= g * inv * lap[b, i, c]

    return forward, backward


@functools.cache
def pair_kernels(dtype, channels: int, squared: bool):
    @ti.kernel
    def forward(values: nd(dtype=dtype, ndim=3), src: nd(dtype=ti.i32, ndim=1), dst: nd(dtype=ti.i32, ndim=1),
                weights: nd(dtype=dtype, ndim=2), hyper: nd(dtype=dtype, ndim=1), energy: nd(dtype=dtype, ndim=2),
                coef: nd(dtype=dtype, ndim=2)):
        # hyper = (p / 2, eps^2, eps^p); coef = w * dphi/ds with s = d^2, what the backward needs.
        for e in range(src.shape[0]):
            i, j = src[e], dst[e]
            for b in range(values.shape[0]):
                s = ti.cast(0, dtype)
                for c in ti.static(range(channels)):
                    d = values[b, i, c] - values[b, j, c]
                    s += d * d
                w = weights[b, e]
                if ti.static(squared):
                    energy[b, e] = w * s
                else:
                    # phi(s) = (s + eps^2)^(p/2) - eps^p; s == 0 is pinned to exactly 0 (eps^p is computed
                    # in double on the host, so pow's rounding could otherwise leave ~1e-10).
                    pw = ti.pow(s + hyper[1], hyper[0])
                    energy[b, e] = w * (pw - hyper[2]) if s > 0 else ti.cast(0, dtype)
                    coef[b, e] = w * hyper[0] * pw / (s + hyper[1])

    @ti.kernel
    def backward(values: nd(dtype=dtype, ndim=3), src: nd(dtype=ti.i32, ndim=1), dst: nd(dtype=ti.i32, ndim=1),
                 coef: nd(dtype=dtype, ndim=2), grad_loss: nd(dtype=dtype, ndim=1), grad: nd(dtype=dtype, ndim=3)):
        # d phi / d x_i = 2 phi'(s) (x_i - x_j) = -d phi / d x_j; atomic: points are shared by edges.
        for e in range(src.shape[0]):
            i, j = src[e], dst[e]
            for b in range(values.shape[0]):
                g = ti.cast(2, dtype) * coef[b, e] * grad_loss[b]
                for c in ti.static(range(channels)):
                    gd = g * (values[b, i, c] - values[b, j, c])
                    grad[b, i, c] += gd
                    grad[b, j, c] -= gd

    return forward, backward


SUM_CHUNK = 1024  # entries per thread in the forward's partial sums


@functools.cache
def sum_sq_kernels(dtype):
    @ti.kernel
    def forward(values: nd(dtype=dtype, ndim=2), weights: nd(dtype=dtype, ndim=1), partial: nd(dtype=dtype, ndim=2)):
        # One partial sum per (chunk, image), each thread summing a contiguous run: no atomics.
        d_all = values.shape[1]
        for k in range(partial.shape[1]):
            for b in range(values.shape[0]):
                acc = ti.cast(0, dtype)
                for d in range(k * SUM_CHUNK, ti.min((k + 1) * SUM_CHUNK, d_all)):
                    x = values[b, d]
                    acc += weights[d] * x * x
                partial[b, k] = acc

    @ti.kernel
    def backward(values: nd(dtype=dtype, ndim=2), weights: nd(dtype=dtype, ndim=1), grad_loss: nd(dtype=dtype, ndim=1),
                 grad: nd(dtype=dtype, ndim=2)):
        for d in range(values.shape[1]):
            for b in range(values.shape[0]):
                grad[b, d] = ti.cast(2, dtype) * weights[d] * values[b, d] * grad_loss[b]

    return forward, backward


@functools.cache
def chroma_kernels(dtype):
    @ti.func
    def _corner(x, size):
        # Lower bilinear corner and fraction for a border-clamped coordinate (pixel centres at integers).
        xc = ti.min(ti.max(x, ti.cast(0, dtype)), ti.cast(size - 1, dtype))
        x0 = ti.min(ti.cast(ti.floor(xc), ti.i32), ti.max(size - 2, 0))
        return x0, xc - ti.cast(x0, dtype)

    @ti.kernel
    def chroma(image: nd(dtype=dtype, ndim=4), uv: nd(dtype=dtype, ndim=3), hyper: nd(dtype=dtype, ndim=1),
               out: nd(dtype=dtype, ndim=3)):
        h, w = image.shape[1], image.shape[2]
        for i in range(uv.shape[1]):
            for b in range(uv.shape[0]):
                x0, fx = _corner(uv[b, i, 0], w)
                y0, fy = _corner(uv[b, i, 1], h)
                x1, y1 = ti.min(x0 + 1, w - 1), ti.min(y0 + 1, h - 1)
                col = ti.Vector.zero(dtype, 3)
                for c in ti.static(range(3)):
                    top = image[b, y0, x0, c] * (1 - fx) + image[b, y0, x1, c] * fx
                    bot = image[b, y1, x0, c] * (1 - fx) + image[b, y1, x1, c] * fx
                    col[c] = top * (1 - fy) + bot * fy
                inv = ti.cast(1, dtype) / (col[0] + col[1] + col[2] + hyper[1])
                for c in ti.static(range(3)):
                    out[b, i, c] = col[c] * inv

    @ti.kernel
    def edge(chroma: nd(dtype=dtype, ndim=3), src: nd(dtype=ti.i32, ndim=1), dst: nd(dtype=ti.i32, ndim=1),
             hyper: nd(dtype=dtype, ndim=1), out: nd(dtype=dtype, ndim=2)):
        for e in range(src.shape[0]):
            i, j = src[e], dst[e]
            for b in range(chroma.shape[0]):
                s = ti.cast(0, dtype)
                for c in ti.static(range(3)):
                    d = chroma[b, i, c] - chroma[b, j, c]
                    s += d * d
                out[b, e] = ti.exp(-hyper[0] * ti.sqrt(s))

    return chroma, edge
