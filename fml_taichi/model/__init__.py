"""The multi-level face model: base affine 3DMM plus learned correctives (Sec. 4)."""
from .params import FaceParams  # noqa: F401
