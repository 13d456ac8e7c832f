"""Differentiable torch ops on Taichi kernels (nothing face-specific): each module holds the
``torch.autograd.Function`` bridging one op family's kernels (:mod:`fml_taichi.kernels`) and the thin,
documented public wrapper that checks its arguments. All gradients go through one mechanism,
:mod:`fml_taichi.ops.bridge`.

Ops, and their plain-torch twin (same names and signatures) in :mod:`fml_taichi.reference`:

==========================================  ============================================================
op (``fml_taichi.ops``)                     torch twin
==========================================  ============================================================
``transform.rigid_transform``               ``reference.image_formation.rigid_transform``
``transform.euler_to_matrix`` (torch)       ``reference.image_formation.euler_to_matrix`` (the same)
``projection.project``                      ``reference.image_formation.project``
``normals.vertex_normals``                  ``reference.image_formation.vertex_normals``
``shading.sh_shading``, ``sh_basis``        ``reference.image_formation.sh_shading``, ``sh_basis``
``visibility.backface_visibility``          ``reference.image_formation.backface_visibility``
``sampling.bilinear_sample``                ``reference.image_formation.bilinear_sample``
``photometric.photometric_loss``            ``reference.image_formation.photometric_loss``
``image_formation.image_formation`` (fused) ``reference.image_formation.image_formation``
``landmarks.sparse_reprojection_loss``,     ``reference.landmarks`` (same names)
``landmarks.closest_to_rays``
``regularizers.laplacian_energy``,          ``reference.regularizers`` (same names)
``pair_energy``, ``weighted_sum_of_squares``,
``chromaticity_edge_weights``
``rasterize.rasterize`` (not differentiable) ``reference.rasterize.rasterize``
``rasterize.interpolate``, ``shade_image``  shared torch code, from ``reference.rasterize``
``composite.composite``, ``blur_and_noise`` none (``composite`` matches ``shade_image``)
==========================================  ============================================================

:mod:`fml_taichi.ops.render` builds the one mesh renderer from these ops. The names below are the
image-formation ops and the rasteriser; the landmark, regulariser and compositing ops are imported
from their modules.
"""
from .image_formation import ImageFormationResult, image_formation
from .normals import vertex_normals
from .photometric import photometric_loss
from .projection import project
from .rasterize import BACKGROUND_DEPTH, RasterResult, interpolate, rasterize, shade_image
from .sampling import bilinear_sample
from .shading import sh_basis, sh_shading
from .transform import euler_to_matrix, rigid_transform
from .visibility import backface_visibility

__all__ = [
    "ImageFormationResult", "backface_visibility", "bilinear_sample", "euler_to_matrix", "image_formation",
    "photometric_loss", "project", "rigid_transform", "sh_basis", "sh_shading", "vertex_normals",
    "BACKGROUND_DEPTH", "RasterResult", "interpolate", "rasterize", "shade_image",
]
