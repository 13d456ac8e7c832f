"""File input and output: atomic writes, image loading, exports.

- ``atomic``: every file the project writes goes through :func:`atomic_path` (temp file + rename).
- ``images``: the one place images are read (:func:`load_image`: float32 RGB [0, 1], BGR fixed) and
  PNGs written (:func:`write_png`); channels-last <-> network layout (:func:`to_network`).
- ``exports``: meshes (OBJ + MTL + texture, binary PLY) and face parameters (JSON, NPZ).
- ``figures``: overlays and labelled panel figures; ``plots``: line and bar charts (OpenCV, no matplotlib).
"""
from ..common.atomic import atomic_path, write_bytes, write_text
from .exports import (bake_vertex_colors, read_params_npz, write_obj, write_params_json, write_params_npz,
                      write_ply)
from .figures import compose_figure, overlay
from .images import from_network, load_image, load_images, to_network, to_uint8, write_png
from .plots import plot_bars, plot_curves

__all__ = [
    "atomic_path", "write_bytes", "write_text",
    "load_image", "load_images", "write_png", "to_uint8", "to_network", "from_network",
    "write_obj", "write_ply", "write_params_json", "write_params_npz", "read_params_npz", "bake_vertex_colors",
    "overlay", "compose_figure", "plot_curves", "plot_bars",
]
