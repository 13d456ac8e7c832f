"""``fml-taichi preprocess``: a nested photo folder -> the cached crop folder training reads."""
import json

import numpy as np
import pytest

from fml_taichi.apps.cli import main
from fml_taichi.data.crop import FACE_FRACTION
from fml_taichi.data.preprocess import REPORT, crop_name, preprocess_folder
from fml_taichi.io.images import write_png
from fml_taichi.data.cached_dataset import CachedCropDataset
from reconstruct_fixtures import dlib_ready, mean_landmarks, paste, synthetic_faces

SEEDS = tuple(range(12))
OFFSET = np.array([80, 30])


def test_crop_names_flatten_the_layout(tmp_path):
    assert crop_name(str(tmp_path / "George_W_Bush" / "George_W_Bush_0001.jpg"), str(tmp_path)) == \
        "George_W_Bush__George_W_Bush_0001"
    assert crop_name(str(tmp_path / "000001.jpg"), str(tmp_path)) == "000001"


def _known_detector(landmarks_by_path):
    """A detector that knows the true landmarks (the renderer's) of each test image."""
    from fml_taichi.data.detect import PtsFileDetector

    scorer = PtsFileDetector(mean_landmarks())._scorer

    def detect(image, path):
        lm = landmarks_by_path.get(str(path))
        if lm is None:
            return []
        return [scorer.detection(np.r_[lm.min(0), lm.max(0)], lm, 2.0, "test")]
    return detect


def test_preprocess_writes_crops_framed_like_training(tmp_path):
    faces = synthetic_faces(SEEDS)
    src = tmp_path / "photos"
    known = {}
    for i, person in enumerate(("ann", "bob", "bob")):
        path = src / person / f"{person}_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, paste(faces["image"][i:i + 1], [tuple(OFFSET)]))
        known[str(path)] = faces["landmarks"][i] + OFFSET
    write_png(src / "empty.png", np.full((100, 100, 3), 0.5, np.float32))  # the detector finds nothing
    (src / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "cache"
    summary = preprocess_folder(src, out, _known_detector(known), mean_landmarks(), progress=False)
    assert (summary.total, summary.kept, dict(summary.dropped)) == (5, 3, {"no face": 1})
    assert len(summary.errors) == 1 and "broken.jpg" in summary.errors[0][0]

    ds = CachedCropDataset(out, image_size=240)
    assert ds.names == ["ann__ann_0000", "bob__bob_0001", "bob__bob_0002"]
    for i, item in enumerate(ds):
        lm = item["landmarks"].numpy()
        assert item["image"].shape == (240, 240, 3)
        assert ((lm > 0) & (lm < 240)).all()
        assert np.allclose(item["landmark_conf"].numpy(), item["landmark_conf"][0].item())
        # framed like the synthetic training faces: the renderer framed these very faces that way,
        # so their landmarks land near where they were in the 240 px render
        np.testing.assert_allclose(lm.mean(0), faces["landmarks"][i].mean(0), atol=12.0)
        width = np.ptp(lm[:17, 0]) / 240  # jaw width as a fraction of the crop
        rendered = np.ptp(faces["landmarks"][i][:17, 0]) / 240
        assert width == pytest.approx(rendered, rel=0.15)
        assert 0.3 < width / FACE_FRACTION < 1.6
    report = json.loads((out / REPORT).read_text())
    assert report["kept"] == 3 and report["dropped"] == {"no face": 1} and report["unreadable"] == 1
    # a second run keeps what is there
    again = preprocess_folder(src, out, _known_detector(known), mean_landmarks(), progress=False)
    assert again.skipped == 3 and again.kept == 0


def test_preprocess_drops_low_confidence_and_refuses_other_sizes(tmp_path):
    faces = synthetic_faces(SEEDS)
    src = tmp_path / "photos"
    src.mkdir()
    write_png(src / "a.png", paste(faces["image"][:1], [tuple(OFFSET)]))
    det = _known_detector({str(src / "a.png"): faces["landmarks"][0] + OFFSET})
    s = preprocess_folder(src, tmp_path / "c", det, mean_landmarks(), min_confidence=0.999, progress=False)
    assert s.kept == 0 and dict(s.dropped) == {"low confidence": 1}
    with pytest.raises(ValueError, match="240px crops"):
        preprocess_folder(src, tmp_path / "c", det, mean_landmarks(), size=128, progress=False)
    with pytest.raises(ValueError, match="no images"):
        preprocess_folder(_empty(tmp_path), tmp_path / "d", det, mean_landmarks(), progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        preprocess_folder(tmp_path / "nope", tmp_path / "d", det, mean_landmarks(), progress=False)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.mark.skipif(not dlib_ready()[0], reason=dlib_ready()[1] or "dlib ready")
def test_preprocess_command_with_dlib(tmp_path, capsys):
    faces = synthetic_faces(SEEDS)
    src = tmp_path / "celeba"
    src.mkdir()
    for i in range(6):
        write_png(src / f"{i:06d}.png", paste(faces["image"][i:i + 1], [tuple(OFFSET)]))
    code = main(["preprocess", str(src), "--out", str(tmp_path / "cache"), "--quiet", "--n-vertices", "2000"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "cache" / REPORT).read_text())
    assert report["total"] == 6 and report["kept"] >= 2 and report["kept"] + sum(report["dropped"].values()) == 6
    assert f"kept {report['kept']}" in out
    ds = CachedCropDataset(tmp_path / "cache", image_size=240)
    for item in ds:
        i = int(item["name"])
        lm = item["landmarks"].numpy()
        # dlib's landmarks, moved into the crop, sit near the renderer's in the 240 px render
        iod = np.linalg.norm(lm[36] - lm[45])
        assert np.linalg.norm(lm.mean(0) - faces["landmarks"][i].mean(0)) < 0.5 * iod
        assert 0.0 < item["landmark_conf"][0] <= 1.0
    # nothing kept at an impossible threshold: exit code 1 and a message
    code = main(["preprocess", str(src), "--out", str(tmp_path / "c2"), "--quiet", "--min-confidence", "1",
                 "--n-vertices", "2000"])
    assert code == 1 and "no face kept" in capsys.readouterr().err
