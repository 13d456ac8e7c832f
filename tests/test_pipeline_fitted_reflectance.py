"""FacePipeline with a checkpoint trained with fitted reflectance coefficients and appearance-only residuals."""
import numpy as np
import pytest
import torch

from reconstruct_fixtures import mean_landmarks, synthetic_faces, write_tiny_checkpoint

SEED = 10_000_037


def _detector(points):
    from fml_taichi.data.detect import PtsFileDetector

    scorer = PtsFileDetector(landmarks_3d=mean_landmarks())._scorer

    def detect(image, path=None):
        return [scorer.detection(np.r_[points.min(0), points.max(0)], points, float("inf"), "given")]
    return detect


@pytest.fixture(scope="module")
def face():
    faces = synthetic_faces((SEED,))
    return faces["image"][0], faces["landmarks"][0].astype(np.float32)


def _photo_error(face_model, res, crop, level):
    from fml_taichi.ops.image_formation import image_formation

    p, o = res.params, res.output
    f = image_formation(getattr(o, f"{level}_geometry").float().contiguous(),
                        getattr(o, f"{level}_reflectance").float().contiguous(), face_model.triangles,
                        p.rotation.float().contiguous(), p.translation.float().contiguous(),
                        torch.as_tensor(res.crop_intrinsics, dtype=torch.float32), p.light.float().contiguous(),
                        torch.from_numpy(np.ascontiguousarray(crop[None], np.float32)))
    return float(f.loss[0])


def test_fitted_reflectance_lowers_the_photometric_error_and_appearance_keeps_the_start(tmp_path, face):
    from fml_taichi.recon.pipeline import FacePipeline

    image, lm = face
    fitted = write_tiny_checkpoint(tmp_path / "fitted.pt", encoder_input="image+start", reflectance="fitted",
                                   residuals="appearance", head_std=0.05)
    pipe = FacePipeline.from_checkpoint(fitted, detector=_detector(lm), runner="torch")
    res = pipe(image)[0]
    assert pipe.reconstructor.reflectance_prior is not None and "reflectance_fit" in pipe.last_timings
    assert float(res.params.delta_reflectance.abs().max()) > 0
    corr = pipe.multilevel.reflectance_corrective(res.params.delta_reflectance.float())
    torch.testing.assert_close(res.output.final_reflectance, res.output.base_reflectance + corr, atol=1e-5, rtol=0)
    assert _photo_error(pipe.face_model, res, res.crop, "final") < _photo_error(pipe.face_model, res, res.crop, "base")
    # Appearance-only residuals: the pose and shape are the landmark start's (heads of std 0.05 would move them).
    start = pipe.last_start.params
    assert np.allclose(res.params.shape.numpy(), start.shape.numpy(), atol=1e-4)
    assert np.allclose(res.params.expression.numpy(), start.expression.numpy(), atol=1e-4)
