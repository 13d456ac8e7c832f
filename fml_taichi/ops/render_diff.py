"""A generic differentiable mesh renderer built from the raster ops: mesh + camera + optional SH light +
per-vertex colour or texture -> image, coverage mask, depth. Nothing face-specific.

Pipeline: ``rasterize`` -> per-pixel albedo (``interpolate`` of vertex colours, or ``texture`` at
interpolated uv) -> optional per-pixel SH shading (interpolated, renormalised vertex normals; the
irradiance convention of ``kernels.shading``) -> composite over the background -> ``antialias`` of
image and coverage together, so both carry silhouette gradients.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .normals import vertex_normals
from .shading import sh_shading
from ..reference.raster_ops import check_size
from .raster import Raster, antialias, edge_neighbours, interpolate, rasterize, texture

__all__ = ["Rendering", "render"]


class Rendering(NamedTuple):
    """image [B, H, W, 3]; mask [B, H, W] coverage in [0, 1] (antialiased: fractional at silhouettes);
    depth [B, H, W] camera-space z (w for clip input), 0 on background; raster: the :class:`Raster`."""

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    raster: Raster


def _albedo(rast, tri, colours, uv, tex):
    if (colours is None) == (uv is None or tex is None):
        raise ValueError("colours: pass either per-vertex colours or both uv and texture")
    if (uv is None) != (tex is None):
        raise ValueError("uv: uv and texture go together")
    if colours is not None:
        return interpolate(colours, rast, tri)
    return texture(tex, interpolate(uv, rast, tri).contiguous())


def _shade(albedo, rast, tri, pos, light, normals):
    if normals is None:
        if pos.shape[2] != 3:
            raise ValueError("normals: clip-space input needs normals (camera space) for SH lighting")
        normals = vertex_normals(pos, tri)
    n = interpolate(normals, rast, tri)
    n = n / (n.norm(dim=-1, keepdim=True) + 1e-12)
    batch, h, w, _ = albedo.shape
    flat = lambda t: t.reshape(batch, h * w, 3).contiguous()  # noqa: E731  pixels as points
    return sh_shading(flat(n), flat(albedo), light.contiguous()).view(batch, h, w, 3)


def render(vertices: torch.Tensor, triangles: torch.Tensor, size, intrinsics: torch.Tensor | None = None, *,
           colours: torch.Tensor | None = None, uv: torch.Tensor | None = None, tex: torch.Tensor | None = None,
           light: torch.Tensor | None = None, normals: torch.Tensor | None = None,
           background=(0.0, 0.0, 0.0), cull_backfaces: bool = False, antialiased: bool = True,
           topology: torch.Tensor | None = None, near: float = 1e-3) -> Rendering:
    """Render a batch of meshes (one topology), differentiably w.r.t. everything continuous.

    Args:
        vertices: [B, N, 3] camera space (OpenCV frame; with ``intrinsics``) or [B, N, 4] clip space
            (``intrinsics=None``); float32 (float64 for gradient checks), contiguous.
        triangles: [F, 3] int32, counter-clockwise seen from outside.
        size: H or (H, W).
        intrinsics: [4] or [B, 4] ``[fx, fy, cx, cy]`` for camera-space vertices.
        colours: [B, N, 3] or [N, 3] per-vertex albedo; or instead
        uv: [B, N, 2] or [N, 2] per-vertex texture coordinates in [0, 1] and
        tex: [B, Ht, Wt, 3] or [Ht, Wt, 3] texture (conventions in ``kernels.texture``).
        light: optional [B, 9, 3] SH irradiance coefficients (``kernels.shading``); None: unlit albedo.
        normals: optional [B, N, 3] camera-space vertex normals; default area-weighted from the mesh
            (required for clip-space input with ``light``).
        background: RGB triple or [B, H, W, 3] image behind the mesh.
        cull_backfaces, near: as for :func:`fml_taichi.ops.raster.rasterize`.
        antialiased: blend silhouette edges (:func:`~fml_taichi.ops.raster.antialias`); without it the
            image has no gradient w.r.t. the silhouette's position.
        topology: ``edge_neighbours(triangles)``, to skip recomputing it every call.

    Returns:
        :class:`Rendering` (image, mask, depth, raster).
    """
    h, w = check_size(size)
    rast = rasterize(vertices, triangles, (h, w), intrinsics, cull_backfaces, near)
    image = _albedo(rast, triangles, colours, uv, tex)
    if light is not None:
        image = _shade(image, rast, triangles, vertices, light, normals)
    batch = vertices.shape[0]
    if isinstance(background, torch.Tensor) and background.ndim == 4:
        if background.shape != (batch, h, w, 3):
            raise ValueError(f"background: expected shape ({batch}, {h}, {w}, 3), got {tuple(background.shape)}")
        bg = background.to(image.dtype)
    else:
        bg = torch.as_tensor(background, dtype=image.dtype, device=image.device)
        if bg.shape != (3,):
            raise ValueError(f"background: expected an RGB triple or a (B, H, W, 3) image, got shape {tuple(bg.shape)}")
        bg = bg.expand(batch, h, w, 3)
    m = rast.mask.unsqueeze(-1).to(image.dtype)
    layers = torch.cat([image * m + bg * (1 - m), m], -1)
    if antialiased:
        topo = edge_neighbours(triangles) if topology is None else topology
        layers = antialias(layers.contiguous(), rast, vertices, triangles, topo)
    return Rendering(image=layers[..., :3], mask=layers[..., 3], depth=rast.depth, raster=rast)
