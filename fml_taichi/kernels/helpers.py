"""Small Taichi helpers every per-op kernel shares: row loads/stores of [B, N, 3] ndarrays and the
chunked parallel loop."""
import taichi as ti


@ti.func
def load3(a: ti.template(), b, i):
    """Row ``a[b, i, :]`` of a [B, N, 3] ndarray as a 3-vector."""
    return ti.Vector([a[b, i, 0], a[b, i, 1], a[b, i, 2]])


@ti.func
def store3(a: ti.template(), b, i, x):
    for k in ti.static(range(3)):
        a[b, i, k] = x[k]


@ti.func
def load_mat3(a: ti.template(), b):
    """``a[b]`` of a [B, 3, 3] ndarray as a 3x3 matrix."""
    return ti.Matrix([[a[b, r, c] for c in ti.static(range(3))] for r in ti.static(range(3))])


# Items per serial chunk of a parallel loop on the CPU: large enough that per-chunk register reductions
# (instead of per-item atomics) and per-image loads are amortised, small enough (B * N / 256 tasks) to
# keep both cores busy at B = 1. On CUDA a thread per few items is the right shape (untested here).
CPU_CHUNK = 256
CUDA_CHUNK = 4


@ti.func
def chunk_range(c, chunk, n):
    """Items ``[lo, hi)`` of chunk ``c`` of ``n`` items."""
    return c * chunk, ti.min(n, (c + 1) * chunk)
