"""Plain-torch twins of the differentiable raster ops (``fml_taichi.ops.raster``): same signatures, same
maths, gradients from torch autograd. Test oracle and benchmark baseline; no Taichi.

Also what both implementations share and needs no Taichi: :class:`Raster`, the argument checks, the
projection to screen space (:func:`screen_positions`) and the edge adjacency (:func:`edge_neighbours`).
The maths of each op is documented once, in its Taichi kernel module (``kernels.interpolate``,
``kernels.antialias``, ``kernels.texture``, ``kernels.soft_raster``).

Positions come in one of two forms (the ``pos`` argument of every op):

- camera space ``[B, N, 3]`` with ``intrinsics`` ``[fx, fy, cx, cy]`` (OpenCV frame, pixel centres at
  integer coordinates, ``docs/conventions.md``);
- clip space ``[B, N, 4]`` ``(x, y, z, w)`` with ``intrinsics=None``: pixel ``u = (x/w + 1) W/2 - 1/2``,
  ``v = (y/w + 1) H/2 - 1/2`` (as nvdiffrast: row 0 is y/w = -1, so an OpenGL y-up projection comes out
  upside down), depth = w (camera-space z for a perspective matrix; clip z is not used). This is exactly
  camera space ``(x, y, w)`` with intrinsics ``[W/2, H/2, (W-1)/2, (H-1)/2]``, which is how it is handled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common.checks import check_indices, check_tensor
from ..common.constants import MAX_WALK
from .rasterize import RasterResult, _batched_intrinsics
from .rasterize import rasterize as _visibility


__all__ = ["MAX_WALK", "Raster", "rasterize", "interpolate", "antialias", "texture", "soft_silhouette",
           "screen_positions",
           "edge_neighbours", "check_size", "camera_points", "soft_radius"]


@dataclass
class Raster(RasterResult):
    """A :class:`RasterResult` whose ``barycentrics`` and ``depth`` are differentiable w.r.t. the positions
    (in the positions' dtype), plus the intrinsics used to project them (``[B, 4]``; derived from the
    image size for clip-space input), which :func:`antialias` needs to project the same positions."""

    intrinsics: torch.Tensor | None = None


def check_size(size) -> tuple[int, int]:
    """``size``: an int (square) or ``(height, width)``; returns (H, W)."""
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    ok = isinstance(hw, (tuple, list)) and len(hw) == 2 and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in hw)
    if not ok:
        raise ValueError(f"size: expected a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def check_pos(pos, intrinsics) -> torch.Tensor:
    """``pos`` [B, N, 3] (camera space, needs intrinsics) or [B, N, 4] (clip space, no intrinsics)."""
    check_tensor("pos", pos, shape=(None, None, None))
    if pos.shape[0] == 0 or pos.shape[1] == 0:
        raise ValueError(f"pos: empty batch or mesh, got shape {tuple(pos.shape)}")
    if pos.shape[2] == 3 and intrinsics is None:
        raise ValueError("intrinsics: camera-space pos [B, N, 3] needs intrinsics [fx, fy, cx, cy] "
                         "(or pass clip-space pos [B, N, 4])")
    if pos.shape[2] == 4 and intrinsics is not None:
        raise ValueError("intrinsics: clip-space pos [B, N, 4] takes no intrinsics (pass intrinsics=None)")
    if pos.shape[2] not in (3, 4):
        raise ValueError(f"pos: expected shape (B, N, 3) camera space or (B, N, 4) clip space, got {tuple(pos.shape)}")
    return pos


def check_triangles(tri, n_vertices: int) -> torch.Tensor:
    check_indices("tri", tri, n_vertices, shape=(None, 3))
    if tri.shape[0] == 0:
        raise ValueError("tri: empty mesh (0 triangles)")
    return tri


def check_raster(rast) -> Raster:
    if not isinstance(rast, Raster):
        raise ValueError(f"rast: expected the Raster returned by rasterize(), got {type(rast).__name__}")
    return rast


def camera_points(pos: torch.Tensor) -> torch.Tensor:
    """Camera-space points [B, N, 3]: ``pos`` itself, or ``(x, y, w)`` of clip-space ``pos``."""
    return pos if pos.shape[2] == 3 else torch.stack([pos[..., 0], pos[..., 1], pos[..., 3]], -1)


def projection_intrinsics(pos: torch.Tensor, intrinsics, height: int, width: int) -> torch.Tensor:
    """[B, 4] intrinsics in pos's dtype: the given ones, or those equivalent to clip space."""
    if pos.shape[2] == 4:
        intrinsics = torch.tensor([width / 2.0, height / 2.0, (width - 1) / 2.0, (height - 1) / 2.0],
                                  dtype=pos.dtype, device=pos.device)
    return _batched_intrinsics(intrinsics, pos.shape[0]).to(device=pos.device, dtype=pos.dtype)


def screen_positions(pos: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """``(u, v, 1/z)`` [B, N, 3] of camera-space (or clip-space) ``pos``, [B, 4] intrinsics; differentiable."""
    p = camera_points(pos)
    iz = 1.0 / p[..., 2]
    u = intrinsics[:, 0, None] * p[..., 0] * iz + intrinsics[:, 2, None]
    v = intrinsics[:, 1, None] * p[..., 1] * iz + intrinsics[:, 3, None]
    return torch.stack([u, v, iz], -1).contiguous()


def edge_neighbours(tri: torch.Tensor) -> torch.Tensor:
    """[F, 3] int32: the triangle across the edge opposite corner k of each triangle; -1 on a mesh
    boundary and on edges shared by more than two triangles (both then count as silhouette edges)."""
    check_tensor("tri", tri, shape=(None, 3), dtypes=(torch.int32,), finite=False, contiguous=False)
    t = tri.long()
    n_f = t.shape[0]
    a = torch.cat([t[:, 1], t[:, 2], t[:, 0]])  # edge k joins corners k+1, k+2
    c = torch.cat([t[:, 2], t[:, 0], t[:, 1]])
    lo, hi = torch.minimum(a, c), torch.maximum(a, c)
    key = lo * (int(t.max()) + 1) + hi
    slot = torch.arange(3 * n_f, device=t.device)  # = k * F + f
    order = torch.argsort(key)
    ks, ss = key[order], slot[order]
    counts = torch.unique_consecutive(ks, return_counts=True)[1]
    start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    size = torch.repeat_interleave(counts, counts)
    pos_in = torch.arange(len(ks), device=t.device) - start
    partner = torch.where(pos_in == 0, ss[(start + 1).clamp(max=len(ks) - 1)], ss[start])
    out = torch.full((3 * n_f,), -1, dtype=torch.long, device=t.device)
    two = size == 2
    out[ss[two]] = partner[two] % n_f
    return out.view(3, n_f).t().contiguous().to(torch.int32)


def _corner_screen(screen: torch.Tensor, tri: torch.Tensor, bi: torch.Tensor, f: torch.Tensor):
    """Screen rows of the corners of triangles f (in images bi): [..., 3 corners, 3]."""
    corner = tri.long()[f]
    return screen[bi.unsqueeze(-1).expand_as(corner), corner]


def _edge(ax, ay, cx, cy, px, py):
    return (cx - ax) * (py - ay) - (cy - ay) * (px - ax)


def rasterize(pos, tri, size, intrinsics=None, cull_backfaces=False, near=1e-3) -> Raster:
    """Same contract as :func:`fml_taichi.ops.raster.rasterize` (whose docstring is the reference)."""
    check_pos(pos, intrinsics)
    check_triangles(tri, pos.shape[1])
    h, w = check_size(size)
    intr = projection_intrinsics(pos, intrinsics, h, w)
    vis = _visibility(camera_points(pos).detach().contiguous(), tri, intr, h, w, cull_backfaces, near)
    screen = screen_positions(pos, intr)
    batch = pos.shape[0]
    hit = vis.mask
    f = vis.triangle_id.long().clamp(min=0)
    bi = torch.arange(batch, device=pos.device).view(-1, 1, 1).expand_as(f)
    s = _corner_screen(screen, tri, bi, f)  # [B, H, W, 3, 3]
    py, px = torch.meshgrid(torch.arange(h, device=pos.device, dtype=pos.dtype),
                            torch.arange(w, device=pos.device, dtype=pos.dtype), indexing="ij")
    e = torch.stack([_edge(s[..., (k + 1) % 3, 0], s[..., (k + 1) % 3, 1], s[..., (k + 2) % 3, 0],
                           s[..., (k + 2) % 3, 1], px, py) for k in range(3)], -1)
    we = e * s[..., 2]
    d = we.sum(-1, keepdim=True)
    d = torch.where(hit.unsqueeze(-1), d, torch.ones_like(d))
    bary = torch.where(hit.unsqueeze(-1), we / d, torch.zeros_like(we))
    depth = torch.where(hit, e.sum(-1) / d[..., 0], torch.zeros_like(d[..., 0]))
    return Raster(depth=depth, triangle_id=vis.triangle_id, barycentrics=bary, mask=hit, intrinsics=intr)


def check_attr(attr, rast: Raster, tri) -> torch.Tensor:
    """``attr`` [B, N, C] or [N, C]/[1, N, C] (shared); returns it as [Ba, N, C]."""
    check_tensor("attr", attr, shape=None)
    if attr.ndim == 2:
        attr = attr.unsqueeze(0)
    if attr.ndim != 3:
        raise ValueError(f"attr: expected shape (B, N, C) or (N, C), got {tuple(attr.shape)}")
    batch = rast.shape[0]
    if attr.shape[0] not in (1, batch):
        raise ValueError(f"attr: batch size {attr.shape[0]} differs from the raster's {batch}")
    check_triangles(tri, attr.shape[1])
    if rast.barycentrics.dtype != attr.dtype:
        raise ValueError(f"attr: dtype {attr.dtype} differs from the raster's {rast.barycentrics.dtype}")
    return attr


def interpolate(attr, rast, tri):
    """Same contract as :func:`fml_taichi.ops.raster.interpolate`."""
    check_raster(rast)
    attr = check_attr(attr, rast, tri)
    batch, h, w = rast.shape
    corner = tri.long()[rast.triangle_id.long().clamp(min=0)]  # [B, H, W, 3]
    attr = attr.expand(batch, -1, -1)
    values = torch.gather(attr, 1, corner.reshape(batch, -1, 1).expand(-1, -1, attr.shape[2]))
    out = (values.reshape(batch, h, w, 3, -1) * rast.barycentrics.unsqueeze(-1)).sum(3)
    return out * rast.mask.unsqueeze(-1).to(out.dtype)


def check_antialias_args(colour, rast, pos, tri) -> Raster:
    """The checks of :func:`antialias`; ``pos`` must be the positions given to :func:`rasterize`."""
    check_raster(rast)
    check_tensor("pos", pos, shape=(None, None, None))
    if pos.shape[2] not in (3, 4):
        raise ValueError(f"pos: expected shape (B, N, 3) camera space or (B, N, 4) clip space, got {tuple(pos.shape)}")
    check_triangles(tri, pos.shape[1])
    check_tensor("colour", colour, shape=(*rast.shape, None))
    if colour.dtype != pos.dtype:
        raise ValueError(f"colour: dtype {colour.dtype} differs from pos's {pos.dtype}")
    if pos.shape[0] != rast.shape[0]:
        raise ValueError(f"pos: batch size {pos.shape[0]} differs from the raster's {rast.shape[0]}")
    return rast


def _pairs(h: int, w: int, device):
    """All horizontally and vertically adjacent pixel pairs as flat (y*W + x) indices (a, b)."""
    idx = torch.arange(h * w, device=device).view(h, w)
    a = torch.cat([idx[:, :-1].reshape(-1), idx[:-1, :].reshape(-1)])
    b = torch.cat([idx[:, 1:].reshape(-1), idx[1:, :].reshape(-1)])
    return a, b


def antialias(colour, rast, pos, tri, topology=None):
    """Same contract as :func:`fml_taichi.ops.raster.antialias` (maths in ``kernels.antialias``)."""
    check_antialias_args(colour, rast, pos, tri)
    nbr = edge_neighbours(tri) if topology is None else topology
    batch, h, w = rast.shape
    n_ch = colour.shape[-1]
    screen = screen_positions(pos, rast.intrinsics.to(pos.dtype))
    pa, pb = _pairs(h, w, pos.device)
    tid = rast.triangle_id.reshape(batch, -1).long()
    dep = rast.depth.detach().reshape(batch, -1)
    bi = torch.arange(batch, device=pos.device).view(-1, 1).expand(-1, len(pa)).reshape(-1)
    pa, pb = pa.repeat(batch), pb.repeat(batch)
    ta, tb = tid[bi, pa], tid[bi, pb]
    keep = ta != tb
    bi, pa, pb, ta, tb = bi[keep], pa[keep], pb[keep], ta[keep], tb[keep]
    a_in = (tb < 0) | ((ta >= 0) & (dep[bi, pa] < dep[bi, pb]))
    p_in, p_out = torch.where(a_in, pa, pb), torch.where(a_in, pb, pa)
    f = torch.where(a_in, ta, tb)
    xy = lambda p: ((p % w).to(pos.dtype), torch.div(p, w, rounding_mode="floor").to(pos.dtype))  # noqa: E731
    (xi, yi), (xo, yo) = xy(p_in), xy(p_out)
    t_other = torch.where(a_in, tb, ta)
    with torch.no_grad():
        s = _corner_screen(screen, tri, bi, f)
        area = _edge(s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1], s[:, 2, 0], s[:, 2, 1])
        sgn = torch.where(area > 0, 1.0, -1.0).to(pos.dtype)
        cur, walking = f.clone(), torch.ones_like(f, dtype=torch.bool)
        found, sil_k, sil_tri = torch.zeros_like(walking), torch.zeros_like(f), f.clone()
        for _ in range(MAX_WALK):
            s = _corner_screen(screen, tri, bi, cur)
            cross = []
            for k in range(3):
                a, c = (k + 1) % 3, (k + 2) % 3
                e_in = sgn * _edge(s[:, a, 0], s[:, a, 1], s[:, c, 0], s[:, c, 1], xi, yi)
                e_out = sgn * _edge(s[:, a, 0], s[:, a, 1], s[:, c, 0], s[:, c, 1], xo, yo)
                cross.append(torch.where(e_out < e_in, e_in / (e_in - e_out), torch.full_like(e_in, 2.0)))
            best_s, best_k = torch.stack(cross, -1).min(-1)
            ok = walking & (best_s <= 1)
            g = nbr.long()[cur, best_k]
            gs = _corner_screen(screen, tri, bi, g.clamp(min=0))
            g_area = _edge(gs[:, 0, 0], gs[:, 0, 1], gs[:, 1, 0], gs[:, 1, 1], gs[:, 2, 0], gs[:, 2, 1])
            sil = (g < 0) | ~(gs[..., 2] > 0).all(-1) | ((g_area > 0) != (sgn > 0))
            new = ok & sil
            found |= new
            sil_k, sil_tri = torch.where(new, best_k, sil_k), torch.where(new, cur, sil_tri)
            walking = ok & ~sil & (g != t_other)
            cur = torch.where(walking, g, cur)
        corner = tri.long()[sil_tri]
        ia = corner.gather(1, ((sil_k + 1) % 3).unsqueeze(1))[:, 0]
        ic = corner.gather(1, ((sil_k + 2) % 3).unsqueeze(1))[:, 0]
        d = screen[bi, ic] - screen[bi, ia]
        steep = d[:, 1].abs() >= d[:, 0].abs()
        keep = found & (steep == (yi == yo))
    bi, p_in, p_out, ia, ic = bi[keep], p_in[keep], p_out[keep], ia[keep], ic[keep]
    xi, yi, xo, yo = xi[keep], yi[keep], xo[keep], yo[keep]
    sa, sc = screen[bi, ia], screen[bi, ic]
    e_in = _edge(sa[:, 0], sa[:, 1], sc[:, 0], sc[:, 1], xi, yi)
    e_out = _edge(sa[:, 0], sa[:, 1], sc[:, 0], sc[:, 1], xo, yo)
    t = (e_in / (e_in - e_out)).clamp(0.0, 1.0)
    aff_in = t < 0.5
    aff, other = torch.where(aff_in, p_in, p_out), torch.where(aff_in, p_out, p_in)
    alpha = (t - 0.5).abs()
    flat = colour.reshape(batch * h * w, n_ch)
    ga, go = bi * h * w + aff, bi * h * w + other
    delta = alpha.unsqueeze(-1) * (flat[go] - flat[ga])
    return flat.index_add(0, ga, delta).view(batch, h, w, n_ch)


def check_texture(tex, uv) -> torch.Tensor:
    """``tex`` [B, Ht, Wt, C] or [Ht, Wt, C] (shared); ``uv`` [B, H, W, 2]; returns tex as 4-D."""
    check_tensor("uv", uv, shape=(None, None, None, 2))
    check_tensor("tex", tex, shape=None)
    if tex.ndim == 3:
        tex = tex.unsqueeze(0)
    if tex.ndim != 4 or 0 in tex.shape:
        raise ValueError(f"tex: expected a non-empty (B, Ht, Wt, C) or (Ht, Wt, C) texture, got {tuple(tex.shape)}")
    if tex.shape[0] not in (1, uv.shape[0]):
        raise ValueError(f"tex: batch size {tex.shape[0]} differs from uv's {uv.shape[0]}")
    if tex.dtype != uv.dtype:
        raise ValueError(f"tex: dtype {tex.dtype} differs from uv's {uv.dtype}")
    return tex


def texture(tex, uv):
    """Same contract as :func:`fml_taichi.ops.raster.texture` (conventions in ``kernels.texture``)."""
    tex = check_texture(tex, uv)
    th, tw = tex.shape[1], tex.shape[2]
    x = (uv[..., 0] * tw - 0.5).clamp(0, tw - 1)
    y = (uv[..., 1] * th - 0.5).clamp(0, th - 1)
    x0 = x.detach().floor().long().clamp(max=max(tw - 2, 0))
    y0 = y.detach().floor().long().clamp(max=max(th - 2, 0))
    x1, y1 = (x0 + 1).clamp(max=tw - 1), (y0 + 1).clamp(max=th - 1)
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    batch = uv.shape[0]
    t = tex.expand(batch, -1, -1, -1)
    bi = torch.arange(batch, device=uv.device).view(-1, 1, 1)
    t00, t01, t10, t11 = t[bi, y0, x0], t[bi, y0, x1], t[bi, y1, x0], t[bi, y1, x1]
    top = t00 + fx * (t01 - t00)
    bottom = t10 + fx * (t11 - t10)
    return top + fy * (bottom - top)


def soft_radius(sigma: float, tail: float = 1e-4) -> int:
    """Pixels beyond a triangle's bounding box where its soft coverage ``exp(-d^2/sigma)`` exceeds tail."""
    import math

    return max(1, int(math.ceil(math.sqrt(sigma * math.log(1.0 / tail)))))


def check_sigma(sigma) -> float:
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0 or sigma != sigma:
        raise ValueError(f"sigma: expected a positive number (px^2), got {sigma!r}")
    return float(sigma)


def soft_silhouette(pos, tri, size, intrinsics=None, sigma=1.0, near=1e-3):
    """Same contract as :func:`fml_taichi.ops.raster.soft_silhouette` (maths in ``kernels.soft_raster``)."""
    check_pos(pos, intrinsics)
    check_triangles(tri, pos.shape[1])
    h, w = check_size(size)
    sigma = check_sigma(sigma)
    intr = projection_intrinsics(pos, intrinsics, h, w)
    screen = screen_positions(pos, intr)
    batch, dev = pos.shape[0], pos.device
    r = soft_radius(sigma)
    t = tri.long()
    s = screen[:, t]  # [B, F, 3, 3]
    with torch.no_grad():
        ok = ((s[..., 2] > 0) & (s[..., 2] < (1.0 / near if near > 0 else float("inf")))
              & (s[..., 0].abs() < 1e7) & (s[..., 1].abs() < 1e7)).all(-1)
        x0 = (s[..., 0].min(-1).values - r).ceil().clamp(min=0)
        x1 = (s[..., 0].max(-1).values + r).floor().clamp(max=w - 1)
        y0 = (s[..., 1].min(-1).values - r).ceil().clamp(min=0)
        y1 = (s[..., 1].max(-1).values + r).floor().clamp(max=h - 1)
        ok &= (x0 <= x1) & (y0 <= y1)
        b_idx, f_idx = ok.nonzero(as_tuple=True)
        nx = (x1 - x0 + 1)[b_idx, f_idx].long()
        ny = (y1 - y0 + 1)[b_idx, f_idx].long()
        counts = nx * ny
        owner = torch.repeat_interleave(torch.arange(len(b_idx), device=dev), counts)
        local = torch.arange(int(counts.sum()), device=dev) - (torch.cumsum(counts, 0) - counts)[owner]
        cb, cf = b_idx[owner], f_idx[owner]
        px = x0[cb, cf] + (local % nx[owner]).to(pos.dtype)
        py = y0[cb, cf] + torch.div(local, nx[owner], rounding_mode="floor").to(pos.dtype)
    c = s[cb, cf]  # [P, 3, 3], differentiable
    d2s, es = [], []
    for k in range(3):
        a, b = c[:, k, :2], c[:, (k + 1) % 3, :2]
        e = b - a
        p = torch.stack([px, py], -1)
        ee = (e * e).sum(-1)
        sk = torch.where(ee > 0, ((p - a) * e).sum(-1) / ee.clamp(min=1e-30), torch.zeros_like(ee))
        sk = sk.clamp(0, 1).detach()  # the closest point's parameter: its variation does not move d^2
        q = a + sk.unsqueeze(-1) * e
        d2s.append(((p - q) ** 2).sum(-1))
        es.append(_edge(a[:, 0], a[:, 1], b[:, 0], b[:, 1], px, py))
    d2 = torch.stack(d2s, -1).min(-1).values
    e = torch.stack(es, -1).detach()
    inside = (e > 0).all(-1) | (e < 0).all(-1)
    x = torch.where(inside, d2, -d2) / sigma
    log_sum = torch.zeros(batch * h * w, dtype=pos.dtype, device=dev)
    log_sum = log_sum.index_add(0, (cb * h + py.long()) * w + px.long(), -F.softplus(x))
    return (1.0 - torch.exp(log_sum)).view(batch, h, w)
