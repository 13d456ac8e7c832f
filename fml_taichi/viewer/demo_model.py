"""A documented, hand-made corrective space for figures and tests when no trained checkpoint exists.

This is NOT learned: it stands in for a trained Theta so the viewer, its headless strips and the
README figure can be produced (and checked) without a training run. Every column is written down:

Geometry, column j (``GEOMETRY_BUMP_MM`` per unit coefficient): the surface moves along its outward
vertex normal by a Gaussian bump ``exp(-d^2 / (2 r^2))`` of radius ``r = BUMP_RADIUS_MM`` around centre
j of ``DEMO_CENTRES`` (the mean of some iBUG landmarks of the mean face; d: Euclidean distance in mm).
Outward normals point out of the head, so positive coefficients grow the nose, chin, brows, cheeks...

Reflectance, column j (``REFLECTANCE_STEP`` per unit coefficient): the same Gaussian weight times the
centre's RGB direction: "darker" (-1, -1, -1)/sqrt(3) (beard, moustache, eyebrows) or "redder"
(2, -1, -1)/sqrt(6) (flushed nose and cheeks).

Overlapping bumps (e.g. the two mouth corners) make the columns non-orthogonal, so the SVD modes of
``corrective_modes`` mix them: a useful check that the viewer shows principal directions, not columns.
"""
from __future__ import annotations

import torch

from ..model.mesh import vertex_normals
from ..model.multilevel import MultiLevelModel

#: (name, iBUG 300-W landmarks whose mean is the centre, reflectance direction) of each column.
DEMO_CENTRES = (
    ("nose tip", (30,), "redder"),
    ("chin", (8,), "darker"),
    ("right brow", (19,), "darker"),
    ("left brow", (24,), "darker"),
    ("right mouth corner", (48,), "darker"),
    ("left mouth corner", (54,), "darker"),
    ("right cheek", (36, 48), "redder"),
    ("left cheek", (45, 54), "redder"),
    ("nose bridge", (27,), "redder"),
    ("upper lip", (51,), "darker"),
)
BUMP_RADIUS_MM = 15.0
GEOMETRY_BUMP_MM = 2.0
REFLECTANCE_STEP = 0.06
_DARKER = torch.tensor([-1.0, -1.0, -1.0]) / 3**0.5
_REDDER = torch.tensor([2.0, -1.0, -1.0]) / 6**0.5


def _weights(face_model) -> torch.Tensor:
    """[N, C] Gaussian weights of every vertex for every demo centre (mean face, mm)."""
    v = face_model.mean_geometry.to(torch.float64)
    lm = v[face_model.landmarks.long()]
    centres = torch.stack([lm[list(idx)].mean(0) for _, idx, _ in DEMO_CENTRES])
    d2 = ((v[:, None, :] - centres[None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2.0 * BUMP_RADIUS_MM**2))


def demo_thetas(face_model) -> tuple[torch.Tensor, torch.Tensor]:
    """(Theta_g, Theta_r), each [3N, C] with C = len(DEMO_CENTRES), as the module docstring says."""

    w = _weights(face_model)  # [N, C]
    n = torch.from_numpy(vertex_normals(face_model.mean_geometry.double().numpy(),
                                        face_model.triangles.long().numpy()))  # [N, 3] outward
    theta_g = GEOMETRY_BUMP_MM * w[:, None, :] * n[:, :, None]  # [N, 3, C]
    colours = torch.stack([_DARKER if c == "darker" else _REDDER for _, _, c in DEMO_CENTRES], dim=1)  # [3, C]
    theta_r = REFLECTANCE_STEP * w[:, None, :] * colours.double()[None]
    n3 = 3 * face_model.n_vertices
    return theta_g.reshape(n3, -1), theta_r.reshape(n3, -1)


def demo_multilevel(face_model) -> MultiLevelModel:
    """A linear :class:`MultiLevelModel` of ``face_model`` whose Theta_g, Theta_r are :func:`demo_thetas`."""
    c = len(DEMO_CENTRES)
    ml = MultiLevelModel(face_model, c, c, kind="linear")
    theta_g, theta_r = demo_thetas(face_model)
    with torch.no_grad():
        ml.geometry_corrective.theta.copy_(theta_g)
        ml.reflectance_corrective.theta.copy_(theta_r)
    return ml
