"""Synthetic faces at chosen poses for the reconstruction tests (the generator's detector-like landmarks)."""
from __future__ import annotations

import functools
import math

import torch

N_VERTICES = 2000


@functools.cache
def face_model():
    from fml_taichi.model import default_face_model

    return default_face_model(N_VERTICES)


def posed_faces(poses_deg, seed: int = 10_000_500, variation: float = 0.0, image_size: int = 240) -> dict:
    """Render faces with Euler angles ``poses_deg`` [(pitch, yaw, roll)] (degrees): the renderer's batch dict."""
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer
    from fml_taichi.reference.image_formation import euler_to_matrix

    class Posed(SyntheticRenderer):
        def draw_params(self, s):
            p = super().draw_params(s)
            rot = torch.tensor([[math.radians(a) for a in poses_deg[s - seed]]])
            target = p.translation[0] + euler_to_matrix(p.rotation)[0] @ self.tables.centre
            return p.replace(rotation=rot, translation=(target - euler_to_matrix(rot)[0] @ self.tables.centre)[None])

    cfg = SyntheticConfig(image_size=image_size, variation=variation, hair_probability=0.0)
    return Posed(face_model(), cfg).render(list(range(seed, seed + len(poses_deg))))
