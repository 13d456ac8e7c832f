"""``fml-taichi reconstruct`` on a real photo that ships with the tests (tests/data/LICENCE.md), the way a
user runs it after the README's install: dlib's detector and 68-point model, the shipped checkpoint.

Three versions of the photo: as it is, rolled 30 degrees, and greyscale. Each must give one face
whose reconstruction's landmarks sit on the detector's (NME <= 0.03), a roll that follows the
image's, and for the greyscale copy a grey reflectance.
"""
import json
import os

import cv2
import numpy as np
import pytest
import trimesh

from fml_taichi.apps.cli import main

PHOTO = os.path.join(os.path.dirname(__file__), "data", "astronaut.jpg")


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    img = cv2.imread(PHOTO)
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 30.0, 1.0)  # counter-clockwise in the image
    cv2.imwrite(str(root / "plain.jpg"), img)
    cv2.imwrite(str(root / "rolled.jpg"), cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REPLICATE))
    cv2.imwrite(str(root / "grey.jpg"), cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))
    out = root / "out"
    code = main(["reconstruct", str(root / "plain.jpg"), str(root / "rolled.jpg"), str(root / "grey.jpg"),
                 "--out", str(out), "--quiet", "--report"])
    summary = json.loads((out / "summary.json").read_text())
    return code, out, {os.path.splitext(os.path.basename(r["input"]))[0]: r for r in summary["inputs"]}


def test_every_version_of_the_photo_gives_one_face_on_its_landmarks(reconstructed):
    code, out, records = reconstructed
    assert code == 0
    for name in ("plain", "rolled", "grey"):
        rec = records[name]
        assert rec["status"] == "ok" and rec["faces"] == 1, rec
        q = rec["quality"][0]
        assert q["landmark_nme"] <= 0.03, (name, q)
        assert (out / f"{name}.overlay.png").is_file()


def test_the_rolled_copy_is_reconstructed_rolled(reconstructed):
    _, _, records = reconstructed
    plain, rolled = records["plain"]["quality"][0], records["rolled"]["quality"][0]
    # The image turned 30 degrees counter-clockwise: the head's roll changes by 30 degrees (sign by
    # the camera frame's y-down convention), and the other angles stay close.
    assert abs(abs(rolled["roll_deg"] - plain["roll_deg"]) - 30.0) < 5.0, (plain, rolled)
    assert abs(rolled["yaw_deg"] - plain["yaw_deg"]) < 8.0


def _reflectance(out, name):
    """The PLY's vertex colours: the final level's reflectance (recon.outputs)."""
    mesh = trimesh.load(str(out / f"{name}.face_00.ply"))
    return mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0


def _chroma(rgb):
    return float(np.abs(rgb - rgb.mean(1, keepdims=True)).mean())


def test_the_greyscale_copy_gets_grey_reflectance_and_grey_light(reconstructed):
    _, out, _ = reconstructed
    grey, colour = _reflectance(out, "grey"), _reflectance(out, "plain")
    # A grey crop's final level is the channel mean of base + corrective (recon.pipeline.GREY_TOLERANCE):
    # grey to the PLY's 8-bit rounding; the colour photo keeps its skin tone.
    assert _chroma(grey) < 0.01 * _chroma(colour), (_chroma(grey), _chroma(colour))
    assert _chroma(colour) > 0.03
    light = np.load(out / "grey.face_00.npz")["param_light"][0]  # [9, 3] SH
    assert np.abs(light - light.mean(1, keepdims=True)).max() < 0.02 * np.abs(light).max()
