"""The .npz model format: roundtrip, and a clear error for each kind of bad file."""
import numpy as np
import pytest
import torch

from fml_taichi.model import FaceModel, load_face_model, save_face_model
from fml_taichi.model.format import FORMAT_VERSION, read_source
from model_fixtures import tiny_random_model


@pytest.fixture()
def saved(tmp_path):
    fm = tiny_random_model(dtype=torch.float32)
    path = tmp_path / "model.npz"
    save_face_model(path, fm, source="unit test")
    return fm, path


def _rewrite(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def test_roundtrip(saved):
    fm, path = saved
    back = load_face_model(path)
    for k, v in fm.tensors().items():
        assert torch.equal(v, getattr(back, k)), k
    assert read_source(path) == "unit test"
    assert load_face_model(path, dtype=torch.float64).mean_geometry.dtype == torch.float64
    assert not list(path.parent.glob(".tmp-*"))  # the atomic writer cleaned up


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_face_model(tmp_path / "nope.npz")


def test_truncated_and_garbage_files(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.npz"):
        load_face_model(path)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="model.npz"):
        load_face_model(path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("landmarks", None, "landmarks: missing"),
        ("format_version", np.int64(FORMAT_VERSION + 1), "format_version"),
        ("format_version", None, "format_version: missing"),
        ("mean_geometry", np.full((20, 3), np.nan, np.float32), "mean_geometry: contains NaN"),
        ("shape_basis", np.zeros((19, 3, 3), np.float32), "shape_basis: expected shape"),
        ("triangles", np.array([[0, 1, 99]], np.int32), "triangles: index out of range"),
        ("triangles", np.zeros((0, 3), np.int32), "triangles: the mesh has no triangles"),
        ("triangles", np.array([[0.0, 1.0, 2.0]]), "triangles: expected integers"),
        ("neighbour_offsets", np.zeros(21, np.int32), "neighbour_offsets"),
        ("contour_indices", np.array([-1] * 17, np.int32), "contour_indices: index out of range"),
        ("skin_mask", np.ones(20, np.int32), "skin_mask: expected bool"),
        ("shape_sigma", np.array([1.0, 0.0, 1.0], np.float32), "shape_sigma: standard deviations must be positive"),
        ("reflectance_basis", np.ones((20, 3, 2), np.int64), "reflectance_basis: expected floating point"),
    ],
)
def test_corrupt_fields_are_named(saved, field, value, message):
    _, path = saved
    _rewrite(path, **{field: value})
    with pytest.raises(ValueError, match=message) as e:
        load_face_model(path)
    assert "model.npz" in str(e.value)


def test_pickled_object_arrays_are_refused(saved):
    _, path = saved
    _rewrite(path, landmarks=np.array([{"a": 1}] * 68, dtype=object))
    with pytest.raises(ValueError, match="model.npz: landmarks: cannot read"):
        load_face_model(path)


def test_save_rejects_non_models(tmp_path):
    with pytest.raises(ValueError, match="model"):
        save_face_model(tmp_path / "x.npz", {"mean_geometry": 1})
    assert not (tmp_path / "x.npz").exists()


def test_model_constructor_validates():
    fm = tiny_random_model()
    fields = fm.tensors()
    with pytest.raises(ValueError, match="landmarks"):
        FaceModel(**{**fields, "landmarks": fields["landmarks"][:10]})
    with pytest.raises(ValueError, match="mean_reflectance"):
        FaceModel(**{**fields, "mean_reflectance": fields["mean_reflectance"].float()})
    with pytest.raises(ValueError, match="mean_geometry"):
        FaceModel(**{**fields, "mean_geometry": torch.zeros(0, 3, dtype=torch.float64)})
