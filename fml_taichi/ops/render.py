"""The renderer: a triangle mesh + a camera + SH light + colours or a texture -> image, mask, depth.

Every caller that draws a mesh uses this module (synthetic training data, evaluation renders,
reconstruction overlays and figures, the inverse-rendering demo, the viewer's shading), so all of
them see the image formation of Eq. 5 exactly as the photometric loss scores it::

    from fml_taichi.ops import render
    out = render.render(vertices, triangles, intrinsics, 240, 240,
                        rotation=rot, translation=t, reflectance=albedo, light=sh)
    out.image, out.mask, out.depth          # [B, H, W, 3], [B, H, W] bool, [B, H, W] (0 = empty)

The chain is ``transform`` (Euler R = Rz Ry Rx, then ``v R^T + t``) -> area-weighted vertex normals
-> per-vertex SH irradiance (9 bands x RGB) times reflectance -> z-buffer rasterisation with
back-face culling -> per-pixel interpolation of the vertex colours over a background. Nothing in it
is face-specific: any mesh with per-vertex reflectance (or ready colours) works.

Two entry points, built from the same ops:

- :func:`render`: per-vertex shading (Eq. 5, exactly what the photometric loss scores), with a pose.
  Colours, reflectance and light get gradients through the interpolation. By default the raster is
  a constant (no silhouette gradients) and, without gradients, the final interpolation runs as one
  fused Taichi pass (``ops.composite``) that also resamples a low-resolution background: the fast
  path of synthetic data, overlays and evaluation. ``antialias=True`` draws through the
  differentiable raster ops instead (barycentrics differentiable w.r.t. positions, silhouette edges
  blended by :func:`fml_taichi.ops.raster.antialias`), so positions get silhouette gradients too.
- :func:`render_textured`: per-pixel albedo from vertex colours or a texture, per-pixel SH shading,
  camera-space or clip-space input, antialiased by default: the generic differentiable renderer
  (``docs/differentiable_rendering.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch

from ..reference.raster_ops import check_size
from . import raster as diff
from .composite import composite
from .normals import vertex_normals
from .raster import Raster, antialias, edge_neighbours, texture
from .rasterize import RasterResult, interpolate, rasterize, shade_image
from .shading import sh_shading
from .transform import rigid_transform

__all__ = ["ShadedMesh", "Rendering", "TexturedRendering", "transform", "shade", "irradiance", "render", "draw",
           "render_textured"]


@dataclass
class ShadedMesh:
    """Per-vertex quantities of a posed, lit mesh (camera frame).

    v_cam [B, N, 3]: camera-space vertices. normals [B, N, 3]: unit outward normals (camera frame).
    colours [B, N, 3]: shaded colours clipped to [0, 1] (reflectance x irradiance, or given colours).
    """

    v_cam: torch.Tensor
    normals: torch.Tensor
    colours: torch.Tensor


@dataclass
class Rendering:
    """What :func:`render` returns.

    image [B, H, W, 3]: the mesh's interpolated vertex colours over the background.
    mask [B, H, W] bool: pixels the mesh covers. depth [B, H, W]: camera z there, 0 elsewhere.
    raster: the :class:`~fml_taichi.ops.rasterize.RasterResult` (triangle ids, barycentrics).
    mesh: the :class:`ShadedMesh` that was drawn. layers: extra per-vertex attributes asked for with
    ``layers=``, interpolated to [B, H, W, C] (zeros off the mesh).
    """

    image: torch.Tensor | None
    mask: torch.Tensor
    depth: torch.Tensor
    raster: RasterResult
    mesh: ShadedMesh
    layers: dict = field(default_factory=dict)


def transform(vertices: torch.Tensor, rotation: torch.Tensor | None, translation: torch.Tensor | None) -> torch.Tensor:
    """Camera-space vertices ``v R(rotation)^T + translation`` ([B, N, 3]); identity where both are None.

    rotation [B, 3] Euler angles in radians (R = Rz Ry Rx), translation [B, 3] in the mesh's units.
    """
    if rotation is None and translation is None:
        return vertices.contiguous()
    b = vertices.shape[0]
    zeros = vertices.new_zeros(b, 3)
    rotation = zeros if rotation is None else rotation
    translation = zeros if translation is None else translation
    return rigid_transform(vertices.contiguous(), rotation.to(vertices.dtype).contiguous(),
                           translation.to(vertices.dtype).contiguous())


def shade(v_cam: torch.Tensor, triangles: torch.Tensor, reflectance: torch.Tensor | None = None,
          light: torch.Tensor | None = None, colours: torch.Tensor | None = None) -> ShadedMesh:
    """Normals and clipped per-vertex colours of a camera-space mesh.

    Either ``reflectance`` [B, N, 3] and ``light`` [B, 9, 3] (colours = reflectance x SH irradiance,
    Eq. 5), or ready ``colours`` [B, N, 3].
    """
    normals = vertex_normals(v_cam, triangles)
    if colours is None:
        if reflectance is None or light is None:
            raise ValueError("shade: give either colours, or reflectance and light")
        colours = sh_shading(normals, reflectance.to(v_cam.dtype).contiguous(), light.to(v_cam.dtype).contiguous())
    return ShadedMesh(v_cam=v_cam, normals=normals, colours=colours.clamp(0.0, 1.0))


def irradiance(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Per-vertex SH irradiance [B, N, 3] (white reflectance): the "shading" layer."""
    ones = torch.ones_like(normals)
    return sh_shading(normals, ones, light.to(normals.dtype).contiguous())


def _background(background, b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(background, torch.Tensor) and background.ndim == 4:
        return background.to(device=like.device, dtype=torch.float32)
    rgb = torch.as_tensor(background, dtype=torch.float32, device=like.device).reshape(1, 1, 1, 3)
    return rgb.expand(b, 1, 1, 3).contiguous()


def render(vertices: torch.Tensor, triangles: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, *,
           rotation: torch.Tensor | None = None, translation: torch.Tensor | None = None,
           reflectance: torch.Tensor | None = None, light: torch.Tensor | None = None,
           colours: torch.Tensor | None = None, background: torch.Tensor | Sequence[float] | None = (0.0, 0.0, 0.0),
           cull_backfaces: bool = True, layers: dict | None = None, antialias: bool = False) -> Rendering:
    """Render a batch of meshes sharing one topology.

    Args:
        vertices: [B, N, 3] float32/float64, the mesh in its own frame (or camera space when no pose).
        triangles: [F, 3] int32, counter-clockwise seen from outside.
        intrinsics: [4] or [B, 4] ``[fx, fy, cx, cy]`` px (OpenCV frame, pixel centres at integers).
        height, width: image size in pixels.
        rotation, translation: [B, 3] pose (radians, R = Rz Ry Rx; mesh units); None = identity.
        reflectance + light ([B, N, 3], [B, 9, 3] SH), or colours [B, N, 3]: see :func:`shade`.
        background: see :func:`draw`; None skips the image (raster and shaded mesh only, e.g. to draw
            a background that depends on where the mesh landed, then :func:`draw`).
        cull_backfaces: drop triangles facing away from the camera.
        layers: optional ``{name: [B, N, C]}`` extra per-vertex attributes to interpolate, or the
            names ``"reflectance"`` / ``"shading"`` (True) for the reflectance and irradiance layers.
        antialias: draw through the differentiable raster ops with silhouette antialiasing: the image
            and ``mask`` (then fractional coverage in [0, 1]) get gradients w.r.t. vertex positions
            and pose at silhouettes. Needs a full-resolution background (or an RGB triple).

    Returns:
        :class:`Rendering`.
    """
    v_cam = transform(vertices, rotation, translation)
    mesh = shade(v_cam, triangles, reflectance, light, colours)
    if antialias:
        return _render_antialiased(v_cam, mesh, triangles, intrinsics, int(height), int(width), background,
                                   cull_backfaces, layers, reflectance, light)
    raster = rasterize(v_cam.contiguous(), triangles, intrinsics, int(height), int(width), cull_backfaces=cull_backfaces)
    image = None if background is None else draw(raster, triangles, mesh.colours, background)
    out = Rendering(image=image, mask=raster.mask, depth=raster.depth, raster=raster, mesh=mesh)
    for name, attr in (layers or {}).items():
        out.layers[name] = _layer(name, attr, mesh, reflectance, light, raster, triangles)
    return out


def draw(raster: RasterResult, triangles: torch.Tensor, colours: torch.Tensor,
         background: torch.Tensor | Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """The image step of :func:`render`: ``colours`` [B, N, 3] interpolated over the raster's pixels,
    ``background`` elsewhere (an RGB triple, or [B, h, w, 3] of any resolution, resampled bilinearly,
    when no gradient is needed; a differentiable interpolation at full resolution otherwise)."""
    b, h, w = raster.shape
    if torch.is_grad_enabled() and colours.requires_grad or colours.dtype == torch.float64:
        return shade_image(raster, triangles, colours, background)
    return composite(raster, triangles, colours, _background(background, b, h, w, colours)).to(colours.dtype)


def _full_background(background, b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(background, torch.Tensor) and background.ndim == 4:
        if tuple(background.shape) != (b, h, w, 3):
            raise ValueError(f"background: expected shape ({b}, {h}, {w}, 3), got {tuple(background.shape)}")
        return background.to(like.dtype)
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.shape != (3,):
        raise ValueError(f"background: expected an RGB triple or a (B, H, W, 3) image, got shape {tuple(bg.shape)}")
    return bg.expand(b, h, w, 3)


def _render_antialiased(v_cam, mesh: ShadedMesh, triangles, intrinsics, h, w, background, cull_backfaces, layers,
                        reflectance, light) -> Rendering:
    """:func:`render` through the differentiable raster ops (``antialias=True``)."""
    if background is None:
        raise ValueError("background: antialiasing blends the mesh into a background; give one")
    rast = diff.rasterize(v_cam.contiguous(), triangles, (h, w), intrinsics, cull_backfaces)
    image = diff.interpolate(mesh.colours.contiguous(), rast, triangles)
    m = rast.mask.unsqueeze(-1).to(image.dtype)
    bg = _full_background(background, v_cam.shape[0], h, w, image)
    blended = antialias(torch.cat([image * m + bg * (1 - m), m], -1).contiguous(), rast, v_cam.contiguous(),
                        triangles, edge_neighbours(triangles))
    out = Rendering(image=blended[..., :3], mask=blended[..., 3], depth=rast.depth, raster=rast, mesh=mesh)
    for name, attr in (layers or {}).items():
        out.layers[name] = _layer(name, attr, mesh, reflectance, light, rast, triangles)
    return out


def _layer(name, attr, mesh: ShadedMesh, reflectance, light, raster, triangles) -> torch.Tensor:
    """One extra interpolated layer: a given [B, N, C] attribute as it is, or a named one clipped to [0, 1]."""
    if attr is not True:
        return interpolate(attr, raster, triangles)
    if name == "reflectance" and reflectance is not None:
        named = reflectance
    elif name == "shading" and light is not None:
        named = irradiance(mesh.normals, light)
    else:
        raise ValueError(f"layers: {name!r} is not a named layer of this call (give a [B, N, C] tensor)")
    return interpolate(named.to(mesh.colours.dtype).clamp(0.0, 1.0), raster, triangles)


# ---- the generic textured renderer ------------------------------------------------------------------


class TexturedRendering(NamedTuple):
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
        return diff.interpolate(colours, rast, tri)
    return texture(tex, diff.interpolate(uv, rast, tri).contiguous())


def _shade(albedo, rast, tri, pos, light, normals):
    if normals is None:
        if pos.shape[2] != 3:
            raise ValueError("normals: clip-space input needs normals (camera space) for SH lighting")
        normals = vertex_normals(pos, tri)
    n = diff.interpolate(normals, rast, tri)
    n = n / (n.norm(dim=-1, keepdim=True) + 1e-12)
    batch, h, w, _ = albedo.shape
    flat = lambda t: t.reshape(batch, h * w, 3).contiguous()  # noqa: E731  pixels as points
    return sh_shading(flat(n), flat(albedo), light.contiguous()).view(batch, h, w, 3)


def render_textured(vertices: torch.Tensor, triangles: torch.Tensor, size, intrinsics: torch.Tensor | None = None, *,
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
        :class:`TexturedRendering` (image, mask, depth, raster).
    """
    h, w = check_size(size)
    rast = diff.rasterize(vertices, triangles, (h, w), intrinsics, cull_backfaces, near)
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
    return TexturedRendering(image=layers[..., :3], mask=layers[..., 3], depth=rast.depth, raster=rast)
