"""Batched z-buffer triangle rasterisation (Taichi): depth, triangle id, perspective-correct barycentrics.

Used for overlays, on-the-fly synthetic training data and the viewer. NOT differentiable: the outputs
are constants for autograd (``interpolate`` is differentiable with respect to the attributes only,
since it is plain torch indexing and weighting).

Conventions (``docs/conventions.md``): vertices are in the OpenCV camera frame (x right, y down,
z forward), ``u = fx x/z + cx``, ``v = fy y/z + cy``, pixel centres at integer coordinates.

Coverage: a pixel is covered when its centre lies inside the projected triangle or on its edge;
shared edges are watertight (no pixel centre slips between two triangles), exact depth ties go to the
lower triangle index, so results are deterministic. Degenerate triangles cover nothing; triangles
with any vertex at ``z <= near`` are skipped (no clipping). The algorithm, the coverage rule and
their cost: :mod:`fml_taichi.kernels.rasterize`; the plain-torch twin: :mod:`fml_taichi.reference.rasterize`.
"""
import torch

from ..common import runtime
from ..common.constants import ZBUF_EMPTY_KEY
from ..kernels.rasterize import project_vertices, raster_triangles, resolve
from .bridge import chunk_size
# The result type, the argument checks and the (plain torch) interpolation are shared with the
# Taichi-free reference rasteriser, so both give the same results and the same errors.
from ..reference.rasterize import BACKGROUND_DEPTH, RasterResult, check_raster_args, interpolate, shade_image

__all__ = ["rasterize", "triangle_ids", "interpolate", "shade_image", "RasterResult", "BACKGROUND_DEPTH"]


def rasterize(
    v_cam: torch.Tensor,
    triangles: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
    near: float = 1e-3,
) -> RasterResult:
    """Z-buffer rasterisation of a batch of triangle meshes sharing one topology.

    Args:
        v_cam: [B, N, 3] float32/float64 camera-space vertices (OpenCV frame, z forward), contiguous,
            finite. Computation is in float32 whatever the input dtype.
        triangles: [F, 3] int32 vertex indices in [0, N), F >= 1.
        intrinsics: [4] or [B, 4] ``[fx, fy, cx, cy]`` in pixels (pixel centres at integer coordinates).
        height, width: image size in pixels.
        cull_backfaces: drop triangles facing away from the camera (``dot(n, v0) >= 0`` with
            ``n = (v1 - v0) x (v2 - v0)``, the counter-clockwise-outside convention).
        near: triangles with any vertex at ``z <= near`` are skipped (not clipped).

    Returns:
        :class:`RasterResult` with depth (``BACKGROUND_DEPTH`` = 0 where empty), triangle_id (-1 where
        empty), perspective-correct barycentrics and mask, all [B, H, W(, 3)] on v_cam's device.

    Not differentiable. Raises ValueError naming the argument on wrong shapes, dtypes, non-contiguous
    or non-finite input, empty meshes and out-of-range indices.
    """
    intr = check_raster_args(v_cam, triangles, intrinsics, height, width, near)
    screen, tris, zbuf = _zbuffer(v_cam, triangles, intr, height, width, cull_backfaces, near)
    dev = v_cam.device
    depth = torch.empty((v_cam.shape[0], height, width), dtype=torch.float32, device=dev)
    tri_id = torch.empty((v_cam.shape[0], height, width), dtype=torch.int32, device=dev)
    bary = torch.empty((v_cam.shape[0], height, width, 3), dtype=torch.float32, device=dev)
    resolve(screen, tris, zbuf, depth, tri_id, bary, chunk_size(), False)
    return RasterResult(depth=depth, triangle_id=tri_id, barycentrics=bary, mask=tri_id >= 0)


def triangle_ids(v_cam: torch.Tensor, triangles: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                 cull_backfaces: bool = False, near: float = 1e-3) -> torch.Tensor:
    """Only the [B, H, W] int32 ``triangle_id`` of :func:`rasterize` (-1 where empty), for callers that
    recompute depth and barycentrics themselves (``ops.raster.rasterize``, in the positions' dtype).

    The arguments must already be valid (as checked by :func:`rasterize`'s checks): no checks here.
    """
    screen, tris, zbuf = _zbuffer(v_cam, triangles, intrinsics, height, width, cull_backfaces, near)
    tri_id = torch.empty((v_cam.shape[0], height, width), dtype=torch.int32, device=v_cam.device)
    resolve(screen, tris, zbuf, screen, tri_id, screen.unsqueeze(-1), chunk_size(), True)
    return tri_id


def _zbuffer(v_cam, triangles, intr, height, width, cull_backfaces, near):
    """Projected vertices, the triangles on the device and the filled z-buffer."""
    runtime.init()
    dev = v_cam.device
    v32 = v_cam.detach().to(torch.float32).contiguous()
    intr32 = intr.detach().to(device=dev, dtype=torch.float32).contiguous()
    tris = triangles.to(dev).contiguous()
    screen = torch.empty((v_cam.shape[0], v32.shape[1], 4), dtype=torch.float32, device=dev)
    project_vertices(v32, intr32, screen)
    zbuf = torch.full((v_cam.shape[0], height, width), ZBUF_EMPTY_KEY, dtype=torch.int64, device=dev)
    raster_triangles(v32, screen, tris, zbuf, float(near), int(bool(cull_backfaces)))
    return screen, tris, zbuf
