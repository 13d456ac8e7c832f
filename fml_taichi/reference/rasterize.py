"""Plain-torch z-buffer rasteriser: the test oracle and benchmark baseline for ``ops.rasterize``.

Same maths and the same coverage rule as the Taichi kernel (inclusive, canonical-order edge tests at
pixel centres, 64-bit ``(depth bits << 32) | triangle`` keys reduced with ``amin``), vectorised instead
of looped: every (image, triangle) expands into the pixel centres of its clipped bounding box, so memory grows
with the summed bounding-box area. Fine for meshes with small triangles (faces) and for tests; the
Taichi kernel is the one to use.

This module also holds what both rasterisers share and that needs no Taichi: :class:`RasterResult`,
the argument checks, and :func:`interpolate` / :func:`shade_image` (plain torch indexing, so they are
differentiable with respect to the attributes). ``ops.rasterize`` re-exports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..common.checks import check_indices, check_tensor
# The z-buffer's "nothing drawn" key and the depth of empty pixels, shared with the kernel.
from ..common.constants import BACKGROUND_DEPTH
from ..common.constants import ZBUF_EMPTY_KEY as _EMPTY_KEY
from .image_formation import project

__all__ = ["rasterize", "interpolate", "shade_image", "RasterResult", "BACKGROUND_DEPTH", "check_raster_args"]


@dataclass
class RasterResult:
    """What :func:`rasterize` saw at every pixel.

    depth [B, H, W] float32: camera-space z of the visible surface (the distance along the optical
        axis, not along the ray); ``BACKGROUND_DEPTH`` (0.0) where nothing is drawn.
    triangle_id [B, H, W] int32: index into ``triangles`` of the visible triangle, -1 for background.
    barycentrics [B, H, W, 3] float32: perspective-correct weights of the visible triangle's three
        vertices (sum to 1; interpolating camera-space positions with them gives the 3D point seen
        through the pixel centre); zeros for background.
    mask [B, H, W] bool: ``triangle_id >= 0``.
    """

    depth: torch.Tensor
    triangle_id: torch.Tensor
    barycentrics: torch.Tensor
    mask: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, H, W)."""
        return tuple(self.triangle_id.shape)


def _batched_intrinsics(intrinsics: torch.Tensor, batch: int) -> torch.Tensor:
    check_tensor("intrinsics", intrinsics, contiguous=False)
    if intrinsics.shape == (4,):
        intrinsics = intrinsics.unsqueeze(0).expand(batch, 4)
    elif intrinsics.shape != (batch, 4):
        raise ValueError(f"intrinsics: expected shape (4,) or ({batch}, 4), got {tuple(intrinsics.shape)}")
    if bool((intrinsics[:, :2] == 0).any()):
        raise ValueError("intrinsics: focal lengths fx, fy must be non-zero")
    return intrinsics


def _check_size(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{name}: expected a positive int, got {n!r}")
    return n


def check_raster_args(v_cam, triangles, intrinsics, height, width, near) -> torch.Tensor:
    """Validate :func:`rasterize`'s arguments (ValueError naming the bad one); returns [B, 4] intrinsics."""
    check_tensor("v_cam", v_cam, shape=(None, None, 3))
    if v_cam.shape[0] == 0 or v_cam.shape[1] == 0:
        raise ValueError(f"v_cam: empty batch or mesh, got shape {tuple(v_cam.shape)}")
    check_indices("triangles", triangles, v_cam.shape[1], shape=(None, 3))
    if triangles.shape[0] == 0:
        raise ValueError("triangles: empty mesh (0 triangles)")
    _check_size("height", height)
    _check_size("width", width)
    if not float(near) >= 0.0:
        raise ValueError(f"near: expected a non-negative number, got {near!r}")
    return _batched_intrinsics(intrinsics, v_cam.shape[0])


def _project(v_cam: torch.Tensor, intr: torch.Tensor) -> torch.Tensor:
    """[B, N, 3] camera space -> [B, N, 3] (u, v, z)."""
    z = v_cam[..., 2]
    iz = 1.0 / z  # multiply by the reciprocal, as the kernel does, so both round alike
    u = intr[:, 0, None] * v_cam[..., 0] * iz + intr[:, 2, None]
    v = intr[:, 1, None] * v_cam[..., 1] * iz + intr[:, 3, None]
    return torch.stack([u, v, z], dim=-1)


def _edge(a: torch.Tensor, c: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    return (c[..., 0] - a[..., 0]) * (py - a[..., 1]) - (c[..., 1] - a[..., 1]) * (px - a[..., 0])


def _edge_shared(a, ia, c, ic, px, py):
    """Edge function in canonical vertex order (lower index first), as the kernel does: watertight."""
    return torch.where(ia < ic, _edge(a, c, px, py), -_edge(c, a, px, py))


def _edges(c0, c1, c2, i0, i1, i2, px, py):
    return torch.stack([_edge_shared(c1, i1, c2, i2, px, py), _edge_shared(c2, i2, c0, i0, px, py),
                        _edge_shared(c0, i0, c1, i1, px, py)], -1)


def _corners(screen: torch.Tensor, triangles: torch.Tensor):
    """Per (image, triangle) projected corners, each [B, F, 3]."""
    tri = triangles.long()
    return screen[:, tri[:, 0]], screen[:, tri[:, 1]], screen[:, tri[:, 2]]


def rasterize(v_cam, triangles, intrinsics, height, width, cull_backfaces=False, near=1e-3) -> RasterResult:
    """Same contract, checks and results as :func:`fml_taichi.ops.rasterize.rasterize` (whose
    docstring is the reference), in plain torch."""
    intr = check_raster_args(v_cam, triangles, intrinsics, height, width, near)
    v = v_cam.detach().to(torch.float32)
    batch, dev = v.shape[0], v.device
    intr = intr.detach().to(device=dev, dtype=torch.float32)
    tri = triangles.long().to(dev)
    s0, s1, s2 = _corners(_project(v, intr), tri)

    ok = (s0[..., 2] > near) & (s1[..., 2] > near) & (s2[..., 2] > near)
    if cull_backfaces:
        p0, p1, p2 = v[:, tri[:, 0]], v[:, tri[:, 1]], v[:, tri[:, 2]]
        ok &= (torch.linalg.cross(p1 - p0, p2 - p0) * p0).sum(-1) < 0
    us, vs = torch.stack([s0[..., 0], s1[..., 0], s2[..., 0]]), torch.stack([s0[..., 1], s1[..., 1], s2[..., 1]])
    x0 = us.min(0).values.clamp(min=0).ceil()
    x1 = us.max(0).values.clamp(max=width - 1).floor()
    y0 = vs.min(0).values.clamp(min=0).ceil()
    y1 = vs.max(0).values.clamp(max=height - 1).floor()
    ok &= (x0 <= x1) & (y0 <= y1)

    # Expand every kept (image, triangle) into the pixels of its bounding box.
    b_idx, f_idx = ok.nonzero(as_tuple=True)
    nx = (x1 - x0 + 1)[b_idx, f_idx].long()
    ny = (y1 - y0 + 1)[b_idx, f_idx].long()
    counts = nx * ny
    owner = torch.repeat_interleave(torch.arange(len(b_idx), device=dev), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=dev) - start[owner]
    cb, cf = b_idx[owner], f_idx[owner]
    px = x0[cb, cf] + (local % nx[owner]).float()
    py = y0[cb, cf] + torch.div(local, nx[owner], rounding_mode="floor").float()
    c0, c1, c2 = s0[cb, cf], s1[cb, cf], s2[cb, cf]
    ti_ = tri[cf]
    e = _edges(c0, c1, c2, ti_[:, 0], ti_[:, 1], ti_[:, 2], px, py)
    esum = e.sum(-1)
    inside = (((e >= 0).all(-1)) | ((e <= 0).all(-1))) & (esum != 0)
    iz = 1.0 / torch.stack([c0[:, 2], c1[:, 2], c2[:, 2]], -1)
    z = esum / (e * iz).sum(-1)
    key = (z.view(torch.int32).long() << 32) | cf
    pix = (cb * height + py.long()) * width + px.long()
    zbuf = torch.full((batch * height * width,), _EMPTY_KEY, dtype=torch.int64, device=dev)
    zbuf.scatter_reduce_(0, pix[inside], key[inside], reduce="amin")
    return _resolve(zbuf.view(batch, height, width), v, intr, tri)


def _resolve(zbuf, v, intr, tri):
    batch, height, width = zbuf.shape
    hit = zbuf != _EMPTY_KEY
    f = (zbuf & 0xFFFFFFFF).long().where(hit, torch.zeros_like(zbuf))
    s0, s1, s2 = _corners(_project(v, intr), tri)
    bi = torch.arange(batch, device=zbuf.device).view(-1, 1, 1).expand_as(f)
    c0, c1, c2 = s0[bi, f], s1[bi, f], s2[bi, f]
    py, px = torch.meshgrid(torch.arange(height, device=zbuf.device, dtype=torch.float32),
                            torch.arange(width, device=zbuf.device, dtype=torch.float32), indexing="ij")
    corner = tri[f]
    e = _edges(c0, c1, c2, corner[..., 0], corner[..., 1], corner[..., 2], px, py)
    lam = e / e.sum(-1, keepdim=True)
    w = lam * (1.0 / torch.stack([c0[..., 2], c1[..., 2], c2[..., 2]], -1))  # as the kernel rounds
    s = w.sum(-1, keepdim=True)
    bary = torch.where(hit.unsqueeze(-1), w / s, torch.zeros_like(w))
    depth = torch.where(hit, 1.0 / s[..., 0], torch.zeros_like(s[..., 0]))
    tid = torch.where(hit, f, torch.full_like(f, -1)).to(torch.int32)
    return RasterResult(depth=depth, triangle_id=tid, barycentrics=bary, mask=hit)


def _check_raster(raster) -> None:
    if not isinstance(raster, RasterResult):
        raise ValueError(f"raster: expected a RasterResult from rasterize(), got {type(raster).__name__}")


def interpolate(attributes: torch.Tensor, raster: RasterResult, triangles: torch.Tensor) -> torch.Tensor:
    """Per-pixel value of a per-vertex attribute, weighted by the raster's barycentrics.

    Args:
        attributes: [B, N, C] or [N, C] (shared by the batch) float tensor.
        raster: the :class:`RasterResult` of :func:`rasterize` for the same mesh.
        triangles: the [F, 3] int32 triangles given to :func:`rasterize`.

    Returns:
        [B, H, W, C] in the attributes' dtype; zeros where nothing is drawn. Differentiable with
        respect to ``attributes`` (not the geometry: the barycentrics are constants).
    """
    _check_raster(raster)
    check_tensor("attributes", attributes, contiguous=False)
    if attributes.ndim == 2:
        attributes = attributes.unsqueeze(0)
    if attributes.ndim != 3:
        raise ValueError(f"attributes: expected shape (B, N, C) or (N, C), got {tuple(attributes.shape)}")
    batch, height, width = raster.shape
    if attributes.shape[0] not in (1, batch):
        raise ValueError(f"attributes: batch size {attributes.shape[0]} differs from the raster's {batch}")
    check_indices("triangles", triangles, attributes.shape[1], shape=(None, 3))
    tid = raster.triangle_id.long()
    if tid.numel() and int(tid.max()) >= triangles.shape[0]:
        raise ValueError("triangles: fewer triangles than the raster refers to (not the rasterised mesh?)")
    corner = triangles.long().to(tid.device)[tid.clamp(min=0)]  # [B, H, W, 3] vertex indices
    attributes = attributes.expand(batch, -1, -1)
    flat = corner.reshape(batch, -1)  # gather per image: [B, H*W*3, C]
    values = torch.gather(attributes, 1, flat.unsqueeze(-1).expand(-1, -1, attributes.shape[2]))
    values = values.reshape(batch, height, width, 3, -1)
    w = raster.barycentrics.to(attributes.dtype).unsqueeze(-1)
    out = (values * w).sum(dim=3)
    return out * raster.mask.unsqueeze(-1).to(out.dtype)


def shade_image(
    raster: RasterResult,
    triangles: torch.Tensor,
    vertex_colours: torch.Tensor,
    background: torch.Tensor | Sequence[float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Image of the mesh with per-vertex colours interpolated over each triangle.

    Args:
        raster, triangles: as for :func:`interpolate`.
        vertex_colours: [B, N, 3] or [N, 3] RGB (any range; typically [0, 1], e.g. shaded colours).
        background: [B, H, W, 3] image or an RGB triple shown where nothing is drawn.

    Returns:
        [B, H, W, 3] in the colours' dtype.
    """
    check_tensor("vertex_colours", vertex_colours, contiguous=False)
    if vertex_colours.shape[-1] != 3 or vertex_colours.ndim not in (2, 3):
        raise ValueError(f"vertex_colours: expected shape (B, N, 3) or (N, 3), got {tuple(vertex_colours.shape)}")
    fg = interpolate(vertex_colours, raster, triangles)
    batch, height, width = raster.shape
    if isinstance(background, torch.Tensor) and background.ndim == 4:
        check_tensor("background", background, shape=(batch, height, width, 3), contiguous=False)
        bg = background.to(device=fg.device, dtype=fg.dtype)
    else:
        bg = torch.as_tensor(background, dtype=fg.dtype, device=fg.device)
        if bg.shape != (3,) or not bool(torch.isfinite(bg).all()):
            raise ValueError("background: expected a finite RGB triple or a (B, H, W, 3) image, "
                             f"got shape {tuple(bg.shape)}")
        bg = bg.expand(batch, height, width, 3)
    return torch.where(raster.mask.unsqueeze(-1), fg, bg)


def zbuffer_test(v_cam: torch.Tensor, uv: torch.Tensor, raster: RasterResult, tolerance: float = 0.01) -> torch.Tensor:
    """[B, N] float {0, 1}: 1 where a vertex is the surface its pixel sees (not occluded).

    A vertex projected to ``uv`` [B, N, 2] (px) is visible when its pixel (nearest centre) lies in the
    image and the farthest surface the z-buffer holds in that pixel's 3 x 3 neighbourhood is not nearer
    than the vertex by more than ``tolerance`` (relative). Why the neighbourhood and the tolerance: a
    vertex on or near a silhouette, or next to a steeper triangle, shares its pixel centre with a
    surface up to a pixel's slope nearer (an exact one-pixel test marked ~6 % of a coarse sphere's
    front vertices hidden); a hidden vertex (the cheek behind a nose) has nearer surfaces all around
    it. 1 % is 5 mm at half a metre. Not differentiable (a step function).
    """
    _check_raster(raster)
    b, h, w = raster.shape
    if uv.shape[:2] != v_cam.shape[:2] or uv.shape[0] != b:
        raise ValueError(f"uv: expected shape {tuple(v_cam.shape[:2])} + (2,), got {tuple(uv.shape)}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance: expected >= 0, got {tolerance!r}")
    # Farthest covered depth around each pixel (background depth is 0, so it never wins over a surface).
    far = torch.nn.functional.max_pool2d(raster.depth[:, None], 3, stride=1, padding=1)[:, 0]
    px = torch.round(uv.detach()).long()
    inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    x, y = px[..., 0].clamp(0, w - 1), px[..., 1].clamp(0, h - 1)
    depth = far[torch.arange(b, device=px.device)[:, None], y, x]
    z = v_cam.detach()[..., 2].to(depth.dtype)
    visible = inside & (depth > 0) & (z <= depth * (1.0 + tolerance))
    return visible.to(v_cam.dtype)


def zbuffer_visibility(v_cam: torch.Tensor, triangles: torch.Tensor, intrinsics: torch.Tensor, height: int,
                       width: int, tolerance: float = 0.01) -> torch.Tensor:
    """Torch twin of :func:`fml_taichi.ops.visibility.zbuffer_visibility` (this module's rasteriser)."""
    v = v_cam.detach().contiguous()
    raster = rasterize(v, triangles, intrinsics, int(height), int(width))
    return zbuffer_test(v, project(v, intrinsics.to(v.dtype)), raster, tolerance)
