"""Generic differentiable Taichi kernels (nothing face-specific), each with its torch autograd bridge.

Plain-torch twins with the same signatures: :mod:`fml_taichi.reference`.
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
