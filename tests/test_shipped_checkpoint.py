"""The checkpoint shipped in the package loads on a fresh install and reconstructs faces."""
import os

import torch

from fml_taichi.recon.pipeline import DEFAULT_CHECKPOINT
from fml_taichi.common.camera import DEFAULT_DISTANCE_MM
from fml_taichi.eval.harness import evaluate
from fml_taichi.eval.methods import CheckpointMethod, Reconstruction
from fml_taichi.model import FaceParams, ModelOutput


class FrontalMeanFace:
    """What an untrained network predicts: the mean face, frontal, at the default distance, ambient light."""

    name = "frontal-mean"

    def __init__(self, multilevel):
        self.multilevel = multilevel
        self.face_model = multilevel.face_model

    def __call__(self, images, landmarks=None, landmark_conf=None, intrinsics=None):
        fm, b = self.face_model, images.shape[0]
        p = FaceParams.zeros(b, fm.m_shape, fm.m_expression, fm.m_reflectance, 0, 0)
        p.translation[:, 2] = DEFAULT_DISTANCE_MM
        p.light[:, 0] = 1.0 / 0.282095
        g, r = fm.base(p.shape, p.expression, p.reflectance)
        z = torch.zeros_like(g)
        return Reconstruction(p, ModelOutput(g, g, r, r, z, z))


def test_shipped_checkpoint_exists_and_is_small():
    assert os.path.isfile(DEFAULT_CHECKPOINT), "fml_taichi/checkpoints/default.pt must ship with the package"
    assert os.path.getsize(DEFAULT_CHECKPOINT) <= 20 * 1024 * 1024


def test_shipped_checkpoint_reconstructs_held_out_faces():
    method = CheckpointMethod(DEFAULT_CHECKPOINT)
    ours = evaluate(method, n=4, batch_size=4, n_examples=0, progress=False).summary
    blind = evaluate(FrontalMeanFace(method.reconstructor.multilevel), n=4, batch_size=4, n_examples=0,
                     progress=False).summary
    # From pixels alone the network must place and light the face far better than a blind guess.
    assert ours["nme_final"] < 0.5 * blind["nme_final"]
    assert ours["photo_final"] < 0.8 * blind["photo_final"]
    assert ours["nme_final"] < 0.15
