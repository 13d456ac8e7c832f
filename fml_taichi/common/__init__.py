"""The bottom layer, used by every other: nothing here imports another fml_taichi package.

- ``checks`` / ``loss_checks``: argument checks that raise ValueError naming the argument.
- ``camera``: default intrinsics (the training crop's field of view) and camera distance.
- ``runtime``: Taichi start-up, the one place that chooses the arch (CUDA or CPU) and sets the
  process environment (must run before torch starts its thread pool).
- ``atomic``: every file the project writes goes through a temp file and a rename.
- ``images``: float [0, 1] <-> uint8 conversion.
- ``constants``: numerical constants shared by the Taichi kernels and their torch twins.
"""
