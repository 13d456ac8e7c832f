"""The renderer: a triangle mesh + a camera + SH light (or colours) -> image, mask, depth.

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

Gradients: colours, reflectance and light get gradients through the interpolation; the raster
(triangle ids, barycentrics) is a constant, so there are no silhouette gradients here. Without
gradients the final interpolation runs as one fused Taichi pass (``ops.composite``), which also
resamples a background of any resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .composite import composite
from .normals import vertex_normals
from .rasterize import RasterResult, interpolate, rasterize, shade_image
from .shading import sh_shading
from .transform import rigid_transform

__all__ = ["ShadedMesh", "Rendering", "transform", "shade", "irradiance", "render", "draw"]


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
           cull_backfaces: bool = True, layers: dict | None = None) -> Rendering:
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

    Returns:
        :class:`Rendering`.
    """
    v_cam = transform(vertices, rotation, translation)
    mesh = shade(v_cam, triangles, reflectance, light, colours)
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
