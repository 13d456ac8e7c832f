"""Property tests of every loader and parser: random, truncated and mutated files either load or raise
the project's documented error (``ValueError`` and its subclasses ``ConfigError``/``CheckpointError``/
``RefusedPickle``), never another exception; a command given such a file writes no output.

Examples per property: ``FML_FUZZ_EXAMPLES`` (default 20, so the file runs in well under 30 s); run
``FML_FUZZ_EXAMPLES=1000 python -m pytest tests/test_fuzz_loaders.py`` for a deeper search
(docs/reliability.md lists the counts run).
"""
import copy
import functools
import io
import os
import pickle
import tempfile

import cv2
import numpy as np
import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fml_taichi.common import safe_pickle  # noqa: E402
from fml_taichi.io.images import load_image  # noqa: E402
from fml_taichi.io.pts import read_pts, write_pts  # noqa: E402
from fml_taichi.nets.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from fml_taichi.nets.config import TrainConfig, load_config  # noqa: E402

N = int(os.environ.get("FML_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=N <= 50, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _file(folder, name: str, data: bytes) -> str:
    fd, path = tempfile.mkstemp(dir=folder, suffix="-" + name)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def mutated(valid: bytes):
    """Truncations, byte flips, inserted junk and random bytes derived from a valid file."""
    n = len(valid)
    truncated = st.integers(0, n).map(lambda k: valid[:k])
    flips = st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda fl: bytes(_flip(valid, fl)))
    inserted = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(
        lambda t: valid[:t[0]] + t[1] + valid[t[0]:])
    return st.one_of(truncated, flips, inserted, st.binary(max_size=2048))


def _flip(data: bytes, flips):
    b = bytearray(data)
    for i, v in flips:
        if b:
            b[i % len(b)] = v
    return b


# ---- images -------------------------------------------------------------------------------------


def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@functools.cache
def _valid_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    return [(".png", _encode(".png", rgb)), (".jpg", _encode(".jpg", rgb)),
            (".png", _encode(".png", (rng.random((5, 7, 4)) * 65535).astype(np.uint16))),  # 16-bit RGBA
            (".png", _encode(".png", rgb[:1, :1, 0])),  # 1x1 grey
            (".bmp", _encode(".bmp", rgb))]


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims huge dimensions (the data cannot back it)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


image_files = st.one_of(
    st.sampled_from(range(5)).flatmap(lambda i: mutated(_valid_images()[i][1]).map(lambda d: (_valid_images()[i][0], d))),
    st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(lambda wh: (".png", _png_claiming(*wh))),
)


@FUZZ
@given(image_files)
def test_images_load_or_raise_value_error(scratch, case):
    ext, data = case
    path = _file(scratch, "img" + ext, data)
    try:
        img = load_image(path)
    except ValueError:
        return
    finally:
        os.remove(path)
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


# ---- .pts landmark files -------------------------------------------------------------------------

_token = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                   st.text(max_size=6), st.sampled_from(["{", "}", "n_points:", "version: 1", "68", "-", ""]))
pts_texts = st.one_of(
    st.lists(st.lists(_token, max_size=4).map(" ".join), max_size=80).map("\n".join),
    st.tuples(st.integers(-3, 200), st.lists(st.tuples(_token, _token), max_size=90), st.booleans()).map(
        lambda t: f"version: 1\nn_points: {t[0]}\n{{\n" + "\n".join(f"{a} {b}" for a, b in t[1])
        + ("\n}" if t[2] else "")),
)


@functools.cache
def _valid_pts() -> bytes:
    buf = tempfile.NamedTemporaryFile(suffix=".pts", delete=False)
    buf.close()
    write_pts(buf.name, np.random.default_rng(0).random((68, 2)) * 100)
    data = open(buf.name, "rb").read()
    os.remove(buf.name)
    return data


@FUZZ
@given(st.one_of(pts_texts.map(lambda s: s.encode("utf-8", "surrogatepass")), mutated(_valid_pts())))
def test_pts_files_parse_or_raise_value_error(scratch, data):
    path = _file(scratch, "lm.pts", data)
    try:
        points, conf = read_pts(path)
    except ValueError:
        return
    finally:
        os.remove(path)
    assert points.shape == (68, 2) and np.isfinite(points).all()


# ---- YAML training configs -----------------------------------------------------------------------

_SECTIONS = {f.name: f for f in __import__("dataclasses").fields(TrainConfig)}
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["adam", "cosine", "taichi", "folder", "synthetic", "linear"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
_keys = {"model": ["source", "n_vertices", "n_correctives_geometry", "kind", "geometry_smooth"],
         "encoder": ["input_size", "width", "n_features", "pool", "scales"],
         "data": ["kind", "root", "n_train", "pool", "n_val", "image_size", "synthetic"],
         "losses": ["weights", "overrides", "backend", "final_landmarks"],
         "stage1": ["steps", "batch_size", "optimizer", "lr", "grad_clip", "schedule", "warmup_steps", "warm_start"],
         "stage2": ["steps", "batch_size", "optimizer", "lr", "grad_clip", "schedule", "warmup_steps", "warm_start"],
         "log": ["every", "val_every", "checkpoint_every", "progress"], "eval": ["n", "at_end"]}
_section = st.sampled_from(sorted(_keys)).flatmap(lambda s: st.tuples(st.just(s), st.dictionaries(
    st.one_of(st.sampled_from(_keys[s]), st.text(max_size=8)), st.one_of(_value, st.dictionaries(
        st.sampled_from(["base", "geometry", "reflectance", "x"]), _scalar, max_size=3)), max_size=4)))
configs = st.one_of(
    st.lists(st.one_of(_section, st.tuples(st.sampled_from(["seed", "threads", "bogus"]), _scalar)), max_size=5).map(dict),
    _value,
)


@FUZZ
@given(st.one_of(configs.map(lambda c: yaml.safe_dump(c).encode()), st.binary(max_size=300),
                 st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_configs_load_or_raise_config_error(scratch, data):
    path = _file(scratch, "cfg.yaml", data)
    try:
        cfg = load_config(path)
    except ValueError:  # ConfigError
        return
    finally:
        os.remove(path)
    assert isinstance(cfg, TrainConfig)


# ---- checkpoints ---------------------------------------------------------------------------------


@functools.cache
def _valid_checkpoint() -> tuple[bytes, dict]:
    from fml_taichi.nets.config import from_dict
    from fml_taichi.nets.models import build_networks, face_model_from_spec, face_model_spec
    from test_train_loop import TINY

    cfg = from_dict(copy.deepcopy(TINY))
    spec = face_model_spec(cfg.model)
    ml, enc = build_networks(cfg, face_model_from_spec(spec))
    ck = Checkpoint(config=cfg.to_dict(), face_model_spec=spec, encoder=enc.state_dict(), multilevel=ml.state_dict(),
                    step=3, optimizer={"state": {}, "param_groups": []})
    buf = io.BytesIO()
    torch.save(ck.to_payload(), buf)
    return buf.getvalue(), ck.to_payload()


_field_values = st.one_of(_scalar, st.lists(st.integers(), max_size=3),
                          st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda s: torch.full(s, float("nan"))),
                          st.tuples(st.integers(0, 4), st.integers(0, 4)).map(lambda s: torch.zeros(s)),
                          st.dictionaries(st.text(max_size=5), st.integers(0, 3).map(torch.ones), max_size=3))


def _edited_payload(edits):
    payload = copy.copy(_valid_checkpoint()[1])
    for key, action, value in edits:
        if action == "drop":
            payload.pop(key, None)
        elif action == "set":
            payload[key] = value
        elif action == "tensor" and isinstance(payload.get(key), dict) and payload[key]:
            section = dict(payload[key])
            name = sorted(section)[len(str(value)) % len(section)]
            section[name] = value if isinstance(value, torch.Tensor) else torch.zeros(1)
            payload[key] = section
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


_keys_ck = st.sampled_from(["format", "version", "config", "face_model_spec", "encoder", "multilevel", "optimizer",
                            "stage", "step", "rng", "extra"])
payload_edits = st.lists(st.tuples(_keys_ck, st.sampled_from(["drop", "set", "tensor"]), _field_values),
                         min_size=1, max_size=3).map(_edited_payload)


@FUZZ
@given(st.one_of(st.deferred(lambda: mutated(_valid_checkpoint()[0])), payload_edits))
def test_checkpoints_load_or_raise_checkpoint_error(scratch, data):
    from fml_taichi.recon.reconstructor import Reconstructor

    path = _file(scratch, "ck.pt", data)
    try:
        ck = load_checkpoint(path)
        Reconstructor.from_checkpoint(path)  # valid markers with wrong-shaped fields fail here, named
    except CheckpointError:
        return
    except ValueError as e:  # config/spec problems of the rebuilt networks
        assert os.path.basename(path) in str(e) or "checkpoint" in str(e), e
        return
    finally:
        os.remove(path)
    assert isinstance(ck, Checkpoint)


# ---- base face model .npz ------------------------------------------------------------------------


@functools.cache
def _valid_model() -> tuple[bytes, dict]:
    from fml_taichi.model import default_face_model, save_face_model

    d = tempfile.mkdtemp()
    path = os.path.join(d, "m.npz")
    save_face_model(path, default_face_model(n_vertices=500, cache=False), source="fuzz")
    data = open(path, "rb").read()
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return data, arrays


_arrays = st.one_of(
    st.tuples(st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8]),
              st.lists(st.integers(0, 5), max_size=3)).map(lambda t: np.zeros(t[1], t[0])),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(np.array),
    st.lists(st.integers(-2**40, 2**40), max_size=6).map(lambda v: np.array(v, np.int64)),
    st.just(np.array("text")),
)


def _edited_model(edits):
    arrays = dict(_valid_model()[1])
    for key, drop, value, scale in edits:
        if drop:
            arrays.pop(key, None)
        elif value is not None:
            arrays[key] = value
        elif key in arrays and arrays[key].dtype.kind in "fiub":  # same shape, other values: NaN, bad indices
            a = arrays[key]
            arrays[key] = ~a if a.dtype == np.bool_ else (a * scale).astype(a.dtype)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


model_edits = st.deferred(lambda: st.lists(st.tuples(st.sampled_from(sorted(_valid_model()[1])), st.booleans(),
                                                     st.one_of(st.none(), _arrays),
                                                     st.sampled_from([float("nan"), -1.0, 1e6, 0.0, 7.0])),
                                           min_size=1, max_size=3).map(_edited_model))


@FUZZ
@given(st.one_of(st.deferred(lambda: mutated(_valid_model()[0])), model_edits))
def test_face_model_files_load_or_raise_value_error(scratch, data):
    import warnings

    from fml_taichi.model import FaceModel, load_face_model

    path = _file(scratch, "m.npz", data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # casts of NaN to int in the edits above
            model = load_face_model(path)
    except ValueError:
        return
    finally:
        os.remove(path)
    assert isinstance(model, FaceModel)


# ---- pickled model files (FLAME, landmark embeddings) --------------------------------------------

_pickled = st.recursive(
    st.one_of(_scalar, st.binary(max_size=8), st.lists(st.floats(), max_size=4).map(np.array)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)


@FUZZ
@given(st.one_of(st.tuples(_pickled, st.integers(0, 5)).map(lambda t: pickle.dumps(t[0], protocol=t[1])),
                 st.binary(max_size=500),
                 _pickled.flatmap(lambda v: mutated(pickle.dumps(v, protocol=2)))))
def test_pickles_load_or_raise_value_error(scratch, data):
    from fml_taichi.model import load_flame

    try:
        safe_pickle.loads(data)
    except ValueError:
        pass
    path = _file(scratch, "generic_model.pkl", data)
    out = path + ".npz"
    try:
        load_flame(path, landmarks=list(range(68)))
    except ValueError:
        pass
    finally:
        os.remove(path)
    from fml_taichi.apps.cli import main

    lm = _file(scratch, "lm.npy", data)
    try:
        assert main(["build-model", "flame", lm, "--landmarks", lm, "--out", out]) == 1
        assert not os.path.exists(out)  # a failed conversion writes nothing
    finally:
        os.remove(lm)


# ---- videos --------------------------------------------------------------------------------------


@functools.cache
def _valid_video() -> bytes:
    from fml_taichi.data.video import VideoWriter

    d = tempfile.mkdtemp()
    path = os.path.join(d, "v.mp4")
    with VideoWriter(path, 10.0, (32, 24)) as w:
        for i in range(6):
            w.write(np.full((24, 32, 3), i / 6, np.float32))
    return open(path, "rb").read()


@FUZZ
@given(st.deferred(lambda: mutated(_valid_video())))
def test_videos_decode_or_raise_value_error(scratch, data):
    from fml_taichi.data.video import VideoReader

    path = _file(scratch, "v.mp4", data)
    try:
        with VideoReader(path) as reader:
            frames = list(reader)
    except ValueError:
        return
    finally:
        os.remove(path)
    assert frames and all(np.isfinite(np.asarray(f if not isinstance(f, tuple) else f[-1])).all() for f in frames)
