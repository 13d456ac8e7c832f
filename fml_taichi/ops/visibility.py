"""Vertex visibility: the backface test, and the z-buffer test against the rasterised mesh.

Backface: with the camera at the origin, a vertex is visible when ``dot(n_cam, v_cam) < 0``
(docs/conventions.md); it misses self-occlusion (the cheek behind the nose of a turned head faces
the camera). Z-buffer: the vertex is the surface its pixel sees. Both are {0, 1} masks in the points'
dtype and carry no gradient (step functions). The image-formation layer additionally requires
z > Z_MIN and a position inside the image.
"""
import torch

from ..common.checks import check_same
from ..kernels.visibility import visibility_kernel
from ..reference.image_formation import check_float_tensor, check_points
from ..reference.rasterize import zbuffer_test
from .bridge import check_device, ti_float
from .projection import project
from .rasterize import rasterize

__all__ = ["backface_visibility", "zbuffer_visibility"]


def backface_visibility(v_cam: torch.Tensor, normals_cam: torch.Tensor) -> torch.Tensor:
    """[B, N] float {0, 1}: 1 where ``dot(normals_cam, v_cam) < 0``. Not differentiable.

    v_cam, normals_cam [B, N, 3] camera space, same float dtype, contiguous.
    """
    check_points("v_cam", v_cam)
    check_device("v_cam", v_cam)
    check_float_tensor("normals_cam", normals_cam, tuple(v_cam.shape))
    check_same("v_cam", v_cam, "normals_cam", normals_cam)
    out = v_cam.new_empty(v_cam.shape[:2])
    visibility_kernel()(v_cam.detach(), normals_cam.detach(), out, ti_float(out.dtype))
    return out


def zbuffer_visibility(v_cam: torch.Tensor, triangles: torch.Tensor, intrinsics: torch.Tensor, height: int,
                       width: int, tolerance: float = 0.01) -> torch.Tensor:
    """[B, N] float {0, 1}: 1 where the vertex is not hidden by the mesh itself (z-buffer test).

    Rasterises ``v_cam`` [B, N, 3] (all faces: a back face also occludes) into ``height`` x ``width``
    with ``intrinsics``, then compares each vertex's depth with the z-buffer at its pixel
    (:func:`fml_taichi.reference.rasterize.zbuffer_test`; ``tolerance`` relative). Not
    differentiable.
    """
    check_points("v_cam", v_cam)
    check_device("v_cam", v_cam)
    v = v_cam.detach().contiguous()
    raster = rasterize(v, triangles, intrinsics, int(height), int(width))
    return zbuffer_test(v, project(v, intrinsics.to(v.dtype)), raster, tolerance)
