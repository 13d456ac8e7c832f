"""Plain-torch references of the kernels' maths: test oracle, benchmark baseline, Taichi-free fallback.

Same names and signatures as :mod:`fml_taichi.ops`; this package never imports taichi.
"""
from .image_formation import (  # noqa: F401
    ImageFormationResult,
    backface_visibility,
    bilinear_sample,
    euler_to_matrix,
    image_formation,
    photometric_loss,
    project,
    rigid_transform,
    sh_basis,
    sh_shading,
    vertex_normals,
)

__all__ = [
    "ImageFormationResult", "backface_visibility", "bilinear_sample", "euler_to_matrix", "image_formation",
    "photometric_loss", "project", "rigid_transform", "sh_basis", "sh_shading", "vertex_normals",
]
