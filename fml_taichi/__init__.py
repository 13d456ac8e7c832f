"""fml_taichi: differentiable Taichi graphics ops and a self-supervised multi-level face model.

What a user calls (imported on first use, so ``import fml_taichi`` stays fast)::

    from fml_taichi import FacePipeline
    faces = FacePipeline.from_checkpoint()(image)       # photo -> pose, shape, expression, light

    from fml_taichi import render, rasterize, image_formation
    out = render(vertices, triangles, intrinsics, 256, 256, rotation=r, translation=t,
                 reflectance=albedo, light=sh)          # any mesh, not only faces

The layers, low to high, are the sub-packages: ``common``, ``kernels`` / ``reference``, ``ops``,
``model``, ``losses`` / ``io``, ``data``, ``nets``, ``recon``, ``eval``, ``train``, ``viewer``,
``apps`` (``docs/architecture.md``). Importing the package first sets the process environment Taichi
and torch need (:mod:`fml_taichi.common.runtime`).
"""
import importlib

from .common import runtime  # noqa: F401  (must run before torch starts its thread pool)

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "FacePipeline": "fml_taichi.recon.pipeline",
    "Reconstructor": "fml_taichi.recon.reconstructor",
    "FaceParams": "fml_taichi.model.params",
    "FaceModel": "fml_taichi.model.face_model",
    "MultiLevelModel": "fml_taichi.model.multilevel",
    "default_face_model": "fml_taichi.model.default",
    "load_face_model": "fml_taichi.model.format",
    "load_checkpoint": "fml_taichi.nets.checkpoint",
    "total_loss": "fml_taichi.losses.total",
    "render": "fml_taichi.ops.render",
    "render_textured": "fml_taichi.ops.render",
    "rasterize": "fml_taichi.ops.rasterize",
    "image_formation": "fml_taichi.ops.image_formation",
}

__all__ = ["FacePipeline", "Reconstructor", "FaceParams", "FaceModel", "MultiLevelModel", "default_face_model", "load_face_model", "load_checkpoint", "total_loss", "render", "render_textured", "rasterize", "image_formation"]  # noqa: E501


def __getattr__(name: str):
    # Lazy: the face pipeline pulls in torch, Taichi kernels and cv2; a user of one op should not pay
    # for the rest (and `fml-taichi --help` should be instant).
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fml_taichi' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
