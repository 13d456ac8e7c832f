"""Numerical constants shared by the Taichi kernels and their plain-torch references.

One definition for both implementations, in a module that imports neither taichi nor torch, so the
kernels need not depend on the references (nor the references on Taichi).
"""

# Real orthonormal SH constants for bands 0..2 (docs/conventions.md order (l, m) = (0,0), (1,-1),
# (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2)); full precision so float64 checks are exact.
SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
SH_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
SH_C2 = 1.0925484305920792  # sqrt(15 / (4 pi))          (xy, yz, xz)
SH_C3 = 0.31539156525252005  # sqrt(5 / (16 pi))          (3 z^2 - 1)
SH_C4 = 0.5462742152960396  # sqrt(15 / (16 pi))         (x^2 - y^2)
N_SH = 9

# Inside the l2 norm of Eq. 9: d/dx ||x|| = x / ||x|| is undefined at x = 0 (a perfectly fitted
# vertex), so we use sqrt(||x||^2 + LOSS_EPS). 1e-10 shifts each visible term by at most 1e-5 and
# bounds the gradient's norm by 1; it is representable in float32.
LOSS_EPS = 1e-10
# Points with camera-space z <= Z_MIN (at or behind the camera) are projected with z clamped to Z_MIN,
# so uv stays finite; they are always invisible, so the clamp never reaches the loss.
Z_MIN = 1e-6
# A vertex whose summed face normal is shorter than this (isolated vertex, only zero-area faces)
# gets the normal 0 and no gradient, instead of 0/0.
NORMAL_EPS = 1e-20

# Depth clamp of the landmark projection (mm), as in the image-formation layer, so points at or behind
# the camera give finite residuals. A power of two: exact in float32, so f32-compiled literals match
# float64.
LANDMARK_Z_MIN = 2.0 ** -20

# Value of ``RasterResult.depth`` where no triangle covers the pixel.
BACKGROUND_DEPTH = 0.0
# The z-buffer's "nothing drawn" key ``(depth bits << 32) | triangle``: the high word 0x7FFFFFFF
# exceeds the bit pattern of every finite positive float32 (inf is 0x7F800000), so any real write is
# smaller.
ZBUF_EMPTY_KEY = (0x7FFFFFFF << 32) | 0x7FFFFFFF

#: Triangles the antialiasing op walks along a pixel pair's segment looking for the silhouette edge
#: (shared by the Taichi kernel and its torch twin, so both find the same edges).
MAX_WALK = 8
