"""Differentiable rasterisation ops, in the spirit of nvdiffrast: rasterize, interpolate, antialias,
texture, plus a SoftRas-style soft silhouette. Taichi kernels (one source for CPU and CUDA), torch
autograd on top; plain-torch twins with the same signatures in :mod:`fml_taichi.reference.raster_ops`.

A typical differentiable image (gradients reach colours, positions, and at silhouettes the positions
through ``antialias``)::

    rast = rasterize(pos, tri, (H, W), intrinsics)          # pos [B, N, 3] camera space (or clip [B, N, 4])
    rgb = interpolate(colours, rast, tri)                     # [B, H, W, 3]; colours [B, N, 3] or [N, 3]
    rgb = antialias(rgb, rast, pos, tri, topology)            # topology = edge_neighbours(tri), once per mesh

Where the gradients come from:

- ``rasterize``: which triangle covers each pixel centre is a constant; the perspective-correct
  barycentrics and depth of that triangle at the pixel centre are recomputed in the positions' dtype and
  are differentiable w.r.t. the positions (``kernels.interpolate``).
- ``interpolate``: w.r.t. the attributes and the barycentrics (hence the positions): interior gradients.
- ``antialias``: w.r.t. the colours and the screen positions of silhouette edges (Laine et al. 2020;
  ``kernels.antialias``): the gradients a white-on-black silhouette needs.
- ``texture``: bilinear, w.r.t. texture and uv.
- ``soft_silhouette``: a blurred coverage (Liu et al. 2019) with gradients a few sigma away from the
  silhouette, for starts far from the answer; it does not need ``rasterize``.

Positions: camera space ``[B, N, 3]`` with intrinsics ``[fx, fy, cx, cy]`` ((4,) or (B, 4); OpenCV frame,
pixel centres at integer coordinates), or clip space ``[B, N, 4]`` with ``intrinsics=None`` (pixel
``u = (x/w + 1) W/2 - 1/2``, row 0 at y/w = -1, depth = w); details in ``reference.raster_ops``. One
topology (``tri`` [F, 3] int32) for the batch. float32 for use, float64 for gradient checks; tensors must
be contiguous and live where Taichi runs (``runtime.torch_device()``). Intrinsics get no gradient.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..common import runtime
from .bridge import check_device, chunk_size, detached, ti_float
from ..kernels.antialias import antialias_kernels
from ..kernels.interpolate import barycentric_kernels, interpolate_kernels
from .rasterize import triangle_ids
from ..kernels.soft_raster import soft_silhouette_kernels
from ..kernels.texture import texture_kernels
from ..reference.raster_ops import (Raster, camera_points, check_antialias_args, check_attr, check_pos, check_raster,
                                    check_sigma, check_size, check_texture, check_triangles, edge_neighbours,
                                    projection_intrinsics, screen_positions, soft_radius)

__all__ = ["Raster", "rasterize", "interpolate", "antialias", "texture", "soft_silhouette", "edge_neighbours",
           "screen_positions"]


class _Barycentrics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, screen, tri, tri_id):
        fwd, _ = barycentric_kernels()
        b, h, w = tri_id.shape
        bary = screen.new_empty((b, h, w, 3))
        depth = screen.new_empty((b, h, w))
        fwd(*detached([screen, tri, tri_id, bary, depth]), chunk_size(), ti_float(screen.dtype))
        ctx.save_for_backward(screen, tri, tri_id, bary, depth)
        return bary, depth

    @staticmethod
    @once_differentiable
    def backward(ctx, g_bary, g_depth):
        _, bwd = barycentric_kernels()
        screen, tri, tri_id, bary, depth = detached(ctx.saved_tensors)
        g_bary = torch.zeros_like(bary) if g_bary is None else g_bary.contiguous()
        g_depth = torch.zeros_like(depth) if g_depth is None else g_depth.contiguous()
        g_screen = torch.zeros_like(screen)
        bwd(screen, tri, tri_id, bary, depth, g_bary, g_depth, g_screen, chunk_size(), ti_float(screen.dtype))
        return g_screen, None, None


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, bary, tri, tri_id):
        fwd, _ = interpolate_kernels()
        b, h, w = tri_id.shape
        out = attr.new_empty((b, h, w, attr.shape[2]))
        fwd(*detached([attr, tri, tri_id, bary, out]), chunk_size(), ti_float(attr.dtype))
        ctx.save_for_backward(attr, bary, tri, tri_id)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        _, bwd = interpolate_kernels()
        attr, bary, tri, tri_id = detached(ctx.saved_tensors)
        want_attr, want_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_attr = torch.zeros_like(attr) if want_attr else attr.new_zeros((1, 1, 1))
        g_bary = torch.empty_like(bary) if want_bary else bary.new_zeros((1, 1, 1, 1))
        bwd(attr, tri, tri_id, bary, g_out.contiguous(), g_attr, g_bary, int(want_attr), int(want_bary),
            chunk_size(), ti_float(attr.dtype))
        return (g_attr if want_attr else None), (g_bary if want_bary else None), None, None


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, colour, screen, tri, nbr, tri_id, depth):
        fwd, _ = antialias_kernels()
        out = colour.detach().clone()
        fwd(*detached([colour, tri_id, depth, screen, tri, nbr, out]), chunk_size(), ti_float(colour.dtype))
        ctx.save_for_backward(colour, screen, tri, nbr, tri_id, depth)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        _, bwd = antialias_kernels()
        colour, screen, tri, nbr, tri_id, depth = detached(ctx.saved_tensors)
        g_out = g_out.contiguous()
        g_colour = g_out.clone()
        g_screen = torch.zeros_like(screen)
        bwd(colour, tri_id, depth, screen, tri, nbr, g_out, g_colour, g_screen, chunk_size(), ti_float(colour.dtype))
        return g_colour, g_screen, None, None, None, None


class _Texture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tex, uv):
        fwd, _ = texture_kernels()
        b, h, w, _ = uv.shape
        out = tex.new_empty((b, h, w, tex.shape[3]))
        fwd(*detached([tex, uv, out]), ti_float(tex.dtype))
        ctx.save_for_backward(tex, uv)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        _, bwd = texture_kernels()
        tex, uv = detached(ctx.saved_tensors)
        want_tex = ctx.needs_input_grad[0]
        g_tex = torch.zeros_like(tex) if want_tex else tex.new_zeros((1, 1, 1, 1))
        g_uv = torch.empty_like(uv)
        bwd(tex, uv, g_out.contiguous(), g_tex, g_uv, int(want_tex), ti_float(tex.dtype))
        return (g_tex if want_tex else None), (g_uv if ctx.needs_input_grad[1] else None)


class _SoftSilhouette(torch.autograd.Function):
    @staticmethod
    def forward(ctx, screen, tri, h, w, sigma, radius, max_iz):
        fwd, _ = soft_silhouette_kernels()
        log_sum = screen.new_zeros((screen.shape[0], h, w))
        sil = screen.new_empty((screen.shape[0], h, w))
        fwd(*detached([screen, tri, log_sum, sil]), 1.0 / sigma, radius, max_iz, ti_float(screen.dtype))
        ctx.save_for_backward(screen, tri, sil)
        ctx.params = (sigma, radius, max_iz)
        return sil

    @staticmethod
    @once_differentiable
    def backward(ctx, g_sil):
        _, bwd = soft_silhouette_kernels()
        screen, tri, sil = detached(ctx.saved_tensors)
        sigma, radius, max_iz = ctx.params
        g_screen = torch.zeros_like(screen)
        bwd(screen, tri, sil, g_sil.contiguous(), g_screen, 1.0 / sigma, radius, max_iz, ti_float(screen.dtype))
        return g_screen, None, None, None, None, None, None


def _check_placement(name: str, t: torch.Tensor) -> None:
    runtime.init()
    check_device(name, t)


def rasterize(pos: torch.Tensor, tri: torch.Tensor, size, intrinsics: torch.Tensor | None = None,
              cull_backfaces: bool = False, near: float = 1e-3) -> Raster:
    """Z-buffer rasterisation with differentiable barycentrics and depth.

    Args:
        pos: [B, N, 3] camera-space vertices (with ``intrinsics``) or [B, N, 4] clip-space (without),
            float32/float64, contiguous, finite. Gradients flow back to it through ``barycentrics`` and
            ``depth`` (and through :func:`antialias` at silhouettes).
        tri: [F, 3] int32 vertex indices, counter-clockwise seen from outside (for ``cull_backfaces``).
        size: ``H`` (square) or ``(H, W)`` in pixels.
        intrinsics: [4] or [B, 4] ``[fx, fy, cx, cy]`` for camera-space ``pos``; None for clip space.
        cull_backfaces: drop triangles facing away from the camera.
        near: triangles with a vertex at depth ``<= near`` are not drawn (no clipping).

    Returns:
        :class:`Raster`: ``triangle_id`` [B, H, W] int32 (-1 background) and ``mask`` (constants),
        ``barycentrics`` [B, H, W, 3] and ``depth`` [B, H, W] (0 on background) in pos's dtype,
        differentiable w.r.t. ``pos``; ``intrinsics`` [B, 4] used for the projection.

    Which triangle wins a pixel is decided in float32 by ``kernels.rasterize`` (pixel centre inside or
    on an edge, nearest wins); its weights are then recomputed at the pixel centre in pos's dtype.
    Raises ValueError naming the bad argument.
    """
    check_pos(pos, intrinsics)
    check_triangles(tri, pos.shape[1])
    h, w = check_size(size)
    if not float(near) >= 0.0:
        raise ValueError(f"near: expected a non-negative number, got {near!r}")
    _check_placement("pos", pos)
    intr = projection_intrinsics(pos, intrinsics, h, w)
    # The arguments are checked above: the visibility pass need not check them again.
    tri_id = triangle_ids(camera_points(pos).detach().contiguous(), tri, intr, h, w, cull_backfaces, near)
    screen = screen_positions(pos, intr)
    bary, depth = _Barycentrics.apply(screen, tri.contiguous(), tri_id)
    return Raster(depth=depth, triangle_id=tri_id, barycentrics=bary, mask=tri_id >= 0, intrinsics=intr)


def interpolate(attr: torch.Tensor, rast: Raster, tri: torch.Tensor) -> torch.Tensor:
    """Per-pixel barycentric interpolation of a per-vertex attribute.

    Args:
        attr: [B, N, C] per-image, or [N, C] / [1, N, C] shared by the batch; pos's dtype, contiguous.
        rast: the :class:`Raster` of :func:`rasterize` for the same mesh.
        tri: the [F, 3] int32 triangles given to :func:`rasterize`.

    Returns:
        [B, H, W, C] ``sum_k b_k attr[tri[f, k]]`` at each covered pixel, 0 on background.
        Differentiable w.r.t. ``attr`` and, through ``rast.barycentrics``, the positions. The image is
        still piecewise in the positions where the covering triangle changes: follow with
        :func:`antialias` for silhouette gradients.
    """
    check_raster(rast)
    attr = check_attr(attr, rast, tri)
    _check_placement("attr", attr)
    return _Interpolate.apply(attr.contiguous(), rast.barycentrics.contiguous(), tri.contiguous(),
                              rast.triangle_id)


def antialias(colour: torch.Tensor, rast: Raster, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor | None = None) -> torch.Tensor:
    """Analytic antialiasing of silhouette edges (Laine et al. 2020), differentiable w.r.t. positions.

    Args:
        colour: [B, H, W, C] image rendered from ``rast`` (e.g. :func:`interpolate` output, or a
            mask), pos's dtype, contiguous. Any number of channels.
        rast: the :class:`Raster` of :func:`rasterize`.
        pos: the positions given to :func:`rasterize` (same tensor, so gradients reach it).
        tri: the [F, 3] int32 triangles given to :func:`rasterize`.
        topology: ``edge_neighbours(tri)``; computed here when None (an argsort over 3F edges:
            pass it in when rendering the same mesh repeatedly).

    Returns:
        [B, H, W, C]: ``colour`` with each pair of adjacent pixels across a silhouette edge blended by
        where the edge crosses between their centres (maths in ``kernels.antialias``). Differentiable
        w.r.t. ``colour`` and ``pos`` (the silhouette edges' vertices). Interior edges between
        front-facing neighbours are left alone.
    """
    check_antialias_args(colour, rast, pos, tri)
    _check_placement("colour", colour)
    nbr = edge_neighbours(tri) if topology is None else topology
    if not (isinstance(nbr, torch.Tensor) and nbr.shape == tri.shape and nbr.dtype == torch.int32):
        raise ValueError("topology: expected edge_neighbours(tri), an [F, 3] int32 tensor")
    screen = screen_positions(pos, rast.intrinsics.to(pos.dtype))
    return _Antialias.apply(colour.contiguous(), screen, tri.contiguous(), nbr.contiguous(), rast.triangle_id,
                            rast.depth.detach().contiguous())


def texture(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup, clamped at the border.

    Args:
        tex: [B, Ht, Wt, C] per-image or [Ht, Wt, C] shared texture, float32/float64, contiguous.
        uv: [B, H, W, 2] texture coordinates in [0, 1] (u across, v down; texel centres at
            ``(j + 1/2) / Wt, (i + 1/2) / Ht``), tex's dtype, e.g. ``interpolate(vertex_uv, rast, tri)``.

    Returns:
        [B, H, W, C]. Differentiable w.r.t. ``tex`` and ``uv`` (zero uv gradient where clamped).
        Multiply by ``rast.mask`` for background pixels, which look up whatever uv they hold.
    """
    tex = check_texture(tex, uv)
    _check_placement("uv", uv)
    return _Texture.apply(tex.contiguous(), uv.contiguous())


def soft_silhouette(pos: torch.Tensor, tri: torch.Tensor, size, intrinsics: torch.Tensor | None = None,
                    sigma: float = 1.0, near: float = 1e-3) -> torch.Tensor:
    """SoftRas soft silhouette (Liu et al. 2019) ``S = 1 - prod_j (1 - sigmoid(delta_j d_j^2 / sigma))``.

    Args:
        pos, tri, size, intrinsics, near: as for :func:`rasterize`.
        sigma: blur in px^2: the coverage falls to ~0.27 at ``sqrt(sigma)`` px outside an edge. Each
            triangle touches only pixels within ``soft_radius(sigma)`` px of its bounding box
            (contributions beyond are below 1e-4), so cost grows with sigma.

    Returns:
        [B, H, W] in (0, 1), pos's dtype; differentiable w.r.t. ``pos`` everywhere near the mesh.
        All triangles count, front- or back-facing, occluded or not (a silhouette has no depth order).
    """
    check_pos(pos, intrinsics)
    check_triangles(tri, pos.shape[1])
    h, w = check_size(size)
    sigma = check_sigma(sigma)
    if not float(near) >= 0.0:
        raise ValueError(f"near: expected a non-negative number, got {near!r}")
    _check_placement("pos", pos)
    intr = projection_intrinsics(pos, intrinsics, h, w)
    screen = screen_positions(pos, intr)
    max_iz = 1.0 / near if near > 0 else float("inf")
    return _SoftSilhouette.apply(screen, tri.contiguous(), h, w, sigma, soft_radius(sigma), max_iz)
