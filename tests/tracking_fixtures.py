"""Shared pieces of the tracking tests: a pinhole camera, projected landmarks, a fake detection."""
import numpy as np

from fml_taichi.recon.landmark_fit import euler_to_matrix_np
from fml_taichi.recon.tracking import landmark_box

K = np.array([500.0, 500.0, 159.5, 119.5])


def project(lm3, rotation, translation, k=K):
    """68 model points [68, 3] at an Euler rotation and translation -> pixels [68, 2]."""
    cam = lm3 @ euler_to_matrix_np(np.asarray(rotation, float)[None])[0].T + translation
    return np.stack([k[0] * cam[:, 0] / cam[:, 2] + k[2], k[1] * cam[:, 1] / cam[:, 2] + k[3]], 1)


class FakeDetection:
    """What the tracker reads of a detection: landmarks, their box, a sure score."""

    def __init__(self, lm):
        self.landmarks, self.box, self.score = lm, landmark_box(lm), 2.0
