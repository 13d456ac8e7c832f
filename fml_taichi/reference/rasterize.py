"""Plain-torch z-buffer rasteriser: the test oracle and benchmark baseline for ``kernels.rasterize``.

Same maths and the same coverage rule as the Taichi kernel (inclusive, canonical-order edge tests at
pixel centres, 64-bit ``(depth bits << 32) | triangle`` keys reduced with ``amin``), vectorised instead
of looped:
every (image, triangle) expands into the pixel centres of its clipped bounding box, so memory grows
with the summed bounding-box area. Fine for meshes with small triangles (faces) and for tests; the
Taichi kernel is the one to use.
"""
from __future__ import annotations

import torch

_EMPTY_KEY = (0x7FFFFFFF << 32) | 0x7FFFFFFF


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


def rasterize_reference(v_cam, triangles, intrinsics, height, width, cull_backfaces=False, near=1e-3):
    """Same contract as :func:`fml_taichi.kernels.rasterize.rasterize` (inputs assumed valid)."""
    from ..kernels.rasterize import RasterResult  # the shared result type (importing does not init Taichi)

    v = v_cam.detach().to(torch.float32)
    batch, dev = v.shape[0], v.device
    intr = intrinsics.detach().to(device=dev, dtype=torch.float32).reshape(-1, 4).expand(batch, 4)
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
    return _resolve(zbuf.view(batch, height, width), v, intr, tri, RasterResult)


def _resolve(zbuf, v, intr, tri, result_type):
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
    w = lam / torch.stack([c0[..., 2], c1[..., 2], c2[..., 2]], -1)
    s = w.sum(-1, keepdim=True)
    bary = torch.where(hit.unsqueeze(-1), w / s, torch.zeros_like(w))
    depth = torch.where(hit, 1.0 / s[..., 0], torch.zeros_like(s[..., 0]))
    tid = torch.where(hit, f, torch.full_like(f, -1)).to(torch.int32)
    return result_type(depth=depth, triangle_id=tid, barycentrics=bary, mask=hit)
