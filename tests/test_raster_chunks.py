"""The raster ops' pixel loops run over chunks of consecutive pixels (``ops.bridge.chunk_size()``: 256 on
the CPU, 4 on CUDA). Every chunk size, including ones that do not divide the image and chunks that span
rows and images, must give the same images and gradients as one pixel per chunk."""
import importlib

import pytest
import torch

from fml_taichi.ops import raster as R
from fml_taichi.reference.meshes import uv_sphere

# The module, not the function that fml_taichi.ops re-exports under the same name.
vis = importlib.import_module("fml_taichi.ops.rasterize")
H, W, BATCH = 23, 37, 2  # odd sizes: chunks straddle rows and the two images


def _scene():
    v, tri = uv_sphere(6, 9, 1.0, torch.float64)
    v = v * torch.tensor([1.0, 0.8, 0.9], dtype=torch.float64) + torch.tensor([0.1, -0.1, 4.0], dtype=torch.float64)
    pos = torch.stack([v, v * 1.05]).contiguous()
    col = torch.rand((BATCH, v.shape[0], 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = 1.1 * H
    return pos, tri, col, torch.tensor([f, f, (W - 1) / 2, (H - 1) / 2], dtype=torch.float64)


def _render_and_grads(monkeypatch, chunk):
    monkeypatch.setattr(R, "chunk_size", lambda: chunk)
    monkeypatch.setattr(vis, "chunk_size", lambda: chunk)
    pos, tri, col, K = _scene()
    pos, col = pos.requires_grad_(True), col.requires_grad_(True)
    rast = R.rasterize(pos, tri, (H, W), K)
    img = R.antialias(R.interpolate(col, rast, tri), rast, pos, tri, R.edge_neighbours(tri))
    (img ** 2).sum().backward()
    return rast.triangle_id, img.detach(), pos.grad, col.grad


@pytest.mark.parametrize("chunk", [4, 7, 256, 10_000])
def test_chunk_size_does_not_change_results(monkeypatch, chunk):
    ids1, img1, gpos1, gcol1 = _render_and_grads(monkeypatch, 1)
    ids, img, gpos, gcol = _render_and_grads(monkeypatch, chunk)
    assert int((ids1 >= 0).sum()) > 100 and int((ids1 < 0).sum()) > 100
    assert torch.equal(ids, ids1)
    torch.testing.assert_close(img, img1, rtol=0, atol=1e-12)
    # Gradients are sums of atomic adds, whose order the chunking changes: equal up to rounding.
    torch.testing.assert_close(gpos, gpos1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gcol, gcol1, rtol=1e-10, atol=1e-12)
    assert float(gpos.abs().max()) > 0


def test_triangle_ids_match_full_rasterize():
    pos, tri, _, K = _scene()
    intr = K.expand(BATCH, 4).contiguous()
    full = vis.rasterize(pos, tri, intr, H, W)
    assert torch.equal(vis.triangle_ids(pos, tri, intr, H, W), full.triangle_id)
