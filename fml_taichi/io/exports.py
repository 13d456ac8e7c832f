"""Exports people open elsewhere: meshes (OBJ + MTL, binary PLY) and face parameters (JSON, NPZ).

Every file is written atomically (``io.atomic``): a failing writer leaves neither a partial file nor
a temp file. Arrays may be numpy arrays or torch tensors. Meshes follow ``docs/conventions.md``
(triangles counter-clockwise seen from outside, millimetres); colours are RGB floats in [0, 1]
(clipped: reflectance estimates can overshoot) or uint8.

Formats were chosen for Blender and MeshLab: OBJ carries per-vertex colours with the widespread
``v x y z r g b`` extension (both read it) and, when UVs are given, a texture image referenced by
the MTL; PLY is binary little-endian with ``red green blue`` uchar vertex properties.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile

import numpy as np
import torch

from ..model.params import FaceParams
from ..common.atomic import atomic_path, write_bytes, write_text
from .images import to_uint8, write_png

__all__ = ["write_obj", "write_ply", "write_params_json", "write_params_npz", "read_params_npz",
           "bake_vertex_colors"]

_PARAMS_FORMAT = "fml_taichi.face_params"
_PARAMS_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# argument checks (numpy side: exports accept numpy and torch alike)

def _array(name: str, x, shape: tuple, integer: bool = False) -> np.ndarray:
    """``x`` as numpy with ``shape`` (None = any size; a size-0 first axis is an empty mesh)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty (0 rows)")
    if integer:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name}: expected an integer array, got {x.dtype}")
    else:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"{name}: expected a numeric array, got {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or inf values")
    return x


def _mesh(vertices, triangles) -> tuple[np.ndarray, np.ndarray]:
    v = _array("vertices", vertices, (None, 3)).astype(np.float64)
    t = _array("triangles", triangles, (None, 3), integer=True)
    if t.min() < 0 or t.max() >= len(v):
        raise ValueError(f"triangles: index out of range: values must lie in [0, {len(v)}), "
                         f"got [{t.min()}, {t.max()}]")
    return v, t.astype(np.int64)


def _colors_u8(colors, n: int) -> np.ndarray:
    c = _array("colors", colors, (n, 3))
    return c if c.dtype == np.uint8 else to_uint8(c.astype(np.float32)[None], "colors")[0]


# ----------------------------------------------------------------------------------------------------------
# meshes

def bake_vertex_colors(uvs, triangles, colors, size: int = 512, dilate: int = 4) -> np.ndarray:
    """Texture image [size, size, 3] float32 with per-vertex ``colors`` painted through per-vertex ``uvs``.

    UVs follow the OBJ convention (origin bottom-left, v up; row 0 of the image is v = 1). Each
    texel centre takes the colour interpolated over the UV triangle that covers it (rasterised with
    ``ops.rasterize`` in texture space), then covered colours are grown ``dilate`` texels into
    the empty space so bilinear sampling at chart borders does not bleed in the background.
    """
    from ..ops.rasterize import interpolate, rasterize  # lazy: keeps Taichi out of plain IO

    uv = _array("uvs", uvs, (None, 2)).astype(np.float32)
    tri = _array("triangles", triangles, (None, 3), integer=True)
    raw = _array("colors", colors, (len(uv), 3))
    col = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
    # Texture space as a camera-space plane at z = 1 seen by an identity camera: x, y are texel coords.
    pts = np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5, np.ones(len(uv))], -1)
    v = torch.as_tensor(pts, dtype=torch.float32)[None].contiguous()
    t = torch.as_tensor(tri.astype(np.int32)).contiguous()
    raster = rasterize(v, t, torch.tensor([1.0, 1.0, 0.0, 0.0]), size, size)
    tex = interpolate(torch.as_tensor(col), raster, t)[0].numpy()
    return _dilate(tex, raster.mask[0].numpy(), dilate)


def _dilate(tex: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """Fill empty texels next to covered ones with their covered neighbours' mean, ``steps`` times."""
    import cv2

    tex, m = tex * mask[..., None], mask.astype(np.float32)
    for _ in range(steps):
        s = cv2.boxFilter(tex, -1, (3, 3), normalize=False)
        c = cv2.boxFilter(m, -1, (3, 3), normalize=False)
        grow = (m == 0) & (c > 0)
        tex[grow] = s[grow] / c[grow][:, None]
        m = np.where(grow, 1.0, m).astype(np.float32)
    return tex.astype(np.float32)


def _fmt_rows(fmt: str, rows: np.ndarray) -> str:
    return "".join(fmt % tuple(r) for r in rows)


def write_obj(path, vertices, triangles, colors=None, uvs=None, texture=None, texture_size: int = 1024) -> list[str]:
    """Write a Wavefront OBJ with its MTL (and a texture PNG when ``uvs`` are given).

    Args:
        path: the ``.obj`` file; the material goes to ``<stem>.mtl`` and the texture to ``<stem>.png``
            next to it (referenced by relative names so the folder can be moved).
        vertices: [N, 3] float positions. triangles: [F, 3] int, 0-based (written 1-based).
        colors: optional [N, 3] per-vertex RGB (float [0, 1] or uint8), written as ``v x y z r g b``.
        uvs: optional [N, 2] per-vertex texture coordinates (OBJ convention, v up); written as ``vt``
            lines sharing the vertex indices.
        texture: optional [H, W, 3] image (float [0, 1] or uint8) for ``map_Kd``. With ``uvs`` but no
            texture, a ``texture_size`` texture is baked from ``colors`` (:func:`bake_vertex_colors`).

    Returns:
        The paths written, in order (png if any, mtl, obj). Raises ValueError naming a bad argument.
    """
    v, t = _mesh(vertices, triangles)
    c = None if colors is None else _colors_u8(colors, len(v))
    uv = None if uvs is None else _array("uvs", uvs, (len(v), 2)).astype(np.float64)
    if texture is not None and uv is None:
        raise ValueError("texture: given without uvs; pass per-vertex uvs to map it")
    if uv is not None and texture is None:
        if c is None:
            raise ValueError("uvs: need a texture or per-vertex colors to bake one from")
        texture = bake_vertex_colors(uv, t, c.astype(np.float32) / 255.0, size=texture_size)
    tex_u8 = None if texture is None else to_uint8(texture, "texture")

    path = os.fspath(path)
    stem = os.path.splitext(path)[0]
    mtl_path, png_path = stem + ".mtl", stem + ".png"
    material = "face"
    mtl = [f"# fml_taichi export\nnewmtl {material}\n", "Ka 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n",
           "Ks 0.000 0.000 0.000\nd 1.0\nillum 1\n"]
    if tex_u8 is not None:
        mtl.append(f"map_Kd {os.path.basename(png_path)}\n")

    lines = [f"# fml_taichi export: {len(v)} vertices, {len(t)} triangles\n",
             f"mtllib {os.path.basename(mtl_path)}\n"]
    if c is None:
        lines.append(_fmt_rows("v %.6f %.6f %.6f\n", v))
    else:
        lines.append(_fmt_rows("v %.6f %.6f %.6f %.4f %.4f %.4f\n", np.hstack([v, c / 255.0])))
    if uv is not None:
        lines.append(_fmt_rows("vt %.6f %.6f\n", uv))
    lines.append(f"usemtl {material}\n")
    f1 = t + 1
    if uv is not None:
        lines.append(_fmt_rows("f %d/%d %d/%d %d/%d\n", np.repeat(f1, 2, axis=1)))
    else:
        lines.append(_fmt_rows("f %d %d %d\n", f1))

    # The texture and MTL first: the OBJ appears last, only once everything it references exists.
    # Each file is atomic; if a later one fails, the companions written by this call are removed too,
    # so a failed export never leaves a partial set behind.
    jobs = ([(png_path, lambda p: write_png(p, tex_u8))] if tex_u8 is not None else []) + [
        (mtl_path, lambda p: write_text(p, "".join(mtl))), (path, lambda p: write_text(p, "".join(lines)))]
    written = []
    try:
        for target, write in jobs:
            write(target)
            written.append(target)
    except BaseException:
        for target in written:
            with contextlib.suppress(OSError):
                os.remove(target)
        raise
    return written


def write_ply(path, vertices, triangles, colors=None) -> None:
    """Write a binary little-endian PLY: float x y z, uchar red green blue (if ``colors``), int faces.

    ``colors``: optional [N, 3] per-vertex RGB, float in [0, 1] (clipped) or uint8 (e.g. reflectance).
    """
    v, t = _mesh(vertices, triangles)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(len(v), dtype=fields)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c = _colors_u8(colors, len(v))
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    face = np.empty(len(t), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face["n"], face["idx"] = 3, t
    props = "".join(f"property {'float' if d == '<f4' else 'uchar'} {n}\n" for n, d in fields)
    header = ("ply\nformat binary_little_endian 1.0\ncomment fml_taichi export\n"
              f"element vertex {len(v)}\n{props}element face {len(t)}\n"
              "property list uchar int vertex_indices\nend_header\n")
    write_bytes(path, header.encode("ascii") + vert.tobytes() + face.tobytes())


# ----------------------------------------------------------------------------------------------------------
# parameters

def _check_params(params) -> FaceParams:
    if not isinstance(params, FaceParams):
        raise ValueError(f"params: expected a FaceParams, got {type(params).__name__}")
    return params.validate()


def _jsonable(x):
    """numpy / torch values inside ``extra`` -> plain JSON types."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _extra_json(extra) -> str:
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise ValueError(f"extra: expected a dict or None, got {type(extra).__name__}")
    try:
        return json.dumps(extra, default=_jsonable, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"extra: cannot be stored as JSON ({e})") from e


def write_params_json(path, params: FaceParams, extra: dict | None = None) -> None:
    """Write face parameters as readable JSON: ``{"format", "version", "params": {name: nested lists},
    "shapes": {name: shape}, "extra": {...}}``. ``extra`` holds metadata (numpy / torch values allowed)."""
    p = _check_params(params)
    doc = {
        "format": _PARAMS_FORMAT,
        "version": _PARAMS_VERSION,
        "params": {k: t.detach().cpu().tolist() for k, t in p.as_dict().items()},
        "shapes": {k: list(t.shape) for k, t in p.as_dict().items()},
        "extra": json.loads(_extra_json(extra)),
    }
    write_text(path, json.dumps(doc, indent=1) + "\n")


def write_params_npz(path, params: FaceParams, extra: dict | None = None) -> None:
    """Write face parameters (exact dtypes) and an ``extra`` metadata dict (stored as JSON) to an NPZ.

    Read it back with :func:`read_params_npz`. No pickled objects are stored.
    """
    p = _check_params(params)
    arrays = {f"param_{k}": t.detach().cpu().numpy() for k, t in p.as_dict().items()}
    arrays["format"] = np.array(_PARAMS_FORMAT)
    arrays["version"] = np.array(_PARAMS_VERSION)
    arrays["extra_json"] = np.array(_extra_json(extra))
    buf = io.BytesIO()  # numpy appends ".npz" to file names that lack it: write bytes ourselves
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())


def read_params_npz(path) -> tuple[FaceParams, dict]:
    """Read :func:`write_params_npz`'s file: ``(FaceParams of torch tensors, extra dict)``.

    Raises FileNotFoundError if missing, ValueError naming the file if it is not such an NPZ, is
    corrupt, lacks fields, or holds inconsistent shapes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parameter file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"not a readable parameter NPZ (corrupt or wrong format): {path!r} ({e})") from e
    if str(data.get("format", "")) != _PARAMS_FORMAT:
        raise ValueError(f"{path!r}: not an fml_taichi parameter file (format field missing or wrong)")
    missing = [n for n in FaceParams.names() if f"param_{n}" not in data]
    if missing:
        raise ValueError(f"{path!r}: missing parameter fields {missing}")
    try:
        extra = json.loads(str(data["extra_json"])) if "extra_json" in data else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r}: corrupt extra metadata ({e})") from e
    params = FaceParams(**{n: torch.from_numpy(np.array(data[f"param_{n}"])) for n in FaceParams.names()})
    try:
        params.validate()
    except ValueError as e:
        raise ValueError(f"{path!r}: invalid parameters: {e}") from e
    return params, extra
