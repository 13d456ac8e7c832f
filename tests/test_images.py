"""Image loading (the one reader): RGB order, grey / alpha / 16-bit, clear errors; PNG writing; layouts."""
import os

import cv2
import numpy as np
import pytest
import torch

from fml_taichi.io.images import from_network, load_image, load_images, to_network, write_png


def _cv2_write(path, bgr):
    assert cv2.imwrite(str(path), bgr)
    return path


def test_colour_order_is_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # pure red, as OpenCV stores it
    bgr[0, 0] = (255, 0, 0)  # one pure blue pixel
    img = load_image(_cv2_write(tmp_path / "red.png", bgr))
    assert img.shape == (4, 5, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[1, 1], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(img[0, 0], [0.0, 0.0, 1.0])


def test_write_png_round_trip_and_rounding(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((7, 9, 3)).astype(np.float32)
    write_png(tmp_path / "a.png", img)
    back = load_image(tmp_path / "a.png")
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6
    # Out-of-range floats are clipped, uint8 and torch input are accepted.
    write_png(tmp_path / "b.png", torch.tensor([[[-1.0, 0.5, 2.0]]]))
    np.testing.assert_allclose(load_image(tmp_path / "b.png")[0, 0], [0.0, 128 / 255, 1.0])
    write_png(tmp_path / "c.png", np.full((2, 2, 3), 7, np.uint8))
    np.testing.assert_allclose(load_image(tmp_path / "c.png"), 7 / 255)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png", "c.png"]  # no temp files left behind


def test_grey_rgba_and_16_bit(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    g = load_image(_cv2_write(tmp_path / "g.png", grey))
    assert g.shape == (3, 4, 3)
    np.testing.assert_allclose(g[..., 0], grey / 255.0)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 10  # blue, nearly transparent: alpha is dropped, not applied
    np.testing.assert_allclose(load_image(_cv2_write(tmp_path / "a.png", bgra))[0, 0], [0, 0, 200 / 255])
    deep = np.zeros((2, 2, 3), np.uint16)
    deep[..., 1] = 65535
    deep[0, 0, 2] = 32768
    d = load_image(_cv2_write(tmp_path / "d.png", deep))
    np.testing.assert_allclose(d[0, 0], [32768 / 65535, 1.0, 0.0])


def test_jpeg_and_resize(tmp_path):
    bgr = np.full((40, 60, 3), (30, 160, 220), np.uint8)
    img = load_image(_cv2_write(tmp_path / "x.jpg", bgr))
    np.testing.assert_allclose(img[20, 30], [220 / 255, 160 / 255, 30 / 255], atol=3 / 255)
    assert load_image(tmp_path / "x.jpg", size=(20, 30)).shape == (20, 30, 3)
    assert load_image(tmp_path / "x.jpg", size=120).shape == (120, 120, 3)
    batch = load_images([tmp_path / "x.jpg"] * 2, size=16)
    assert batch.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="size"):
        load_image(tmp_path / "x.jpg", size=(0, 4))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_unreadable_files_raise_value_error_naming_them(tmp_path):
    ok, png = cv2.imencode(".png", (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8))
    cases = {
        "empty.png": b"",
        "text.png": b"this is not an image at all\n",
        "truncated.png": png.tobytes()[: len(png) // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / name)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ValueError, match="folder.png"):
        load_image(tmp_path / "folder.png")


def test_write_png_rejects_bad_images(tmp_path):
    for bad in (np.zeros((4, 4, 2)), np.full((2, 2, 3), np.nan), np.zeros((0, 3, 3)), np.zeros((2, 2, 3), np.int64)):
        with pytest.raises(ValueError, match="image"):
            write_png(tmp_path / "bad.png", bad)
    assert os.listdir(tmp_path) == []


def test_network_layout_round_trip():
    x = torch.rand(2, 5, 6, 3)
    n = to_network(x)
    assert n.shape == (2, 3, 5, 6) and n.is_contiguous() and n.dtype == torch.float32
    assert torch.equal(n[1, 2], x[1, ..., 2])
    assert torch.equal(from_network(n), x)
    assert to_network(np.zeros((5, 6, 3), np.float32)).shape == (1, 3, 5, 6)
    with pytest.raises(ValueError, match="images"):
        to_network(torch.rand(2, 3, 5, 6))
    with pytest.raises(ValueError, match="images"):
        from_network(torch.rand(2, 5, 6, 3))
