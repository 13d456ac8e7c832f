"""The multi-level face model: base affine 3DMM plus learned correctives (Sec. 4)."""
from .correctives import LinearCorrective, MLPCorrective  # noqa: F401
from .default import default_face_model  # noqa: F401
from .face_model import FaceModel  # noqa: F401
from .format import load_face_model, save_face_model  # noqa: F401
from .multilevel import ModelOutput, MultiLevelModel  # noqa: F401
from .params import FaceParams  # noqa: F401
from .sources import load_bfm2009, load_bfm2017, load_flame  # noqa: F401
