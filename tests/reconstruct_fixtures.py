"""Shared helpers of the reconstruction / preprocessing tests: a tiny checkpoint, synthetic face photos.

No face photos ship in any package registry, so test "photos" are synthetic faces
(:mod:`fml_taichi.data.synthetic`, known landmarks) pasted into larger frames.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import torch

N_VERTICES = 2000


def detector_ready(module: str, install: str, find_model) -> tuple[bool, str]:
    """(usable, reason): ``module`` importable (else ``install`` names the pip command) and
    ``find_model()`` finding its model file without raising ``DetectorUnavailable``."""
    if importlib.util.find_spec(module) is None:
        return False, f"{module} not installed ({install})"
    from fml_taichi.data.detect import DetectorUnavailable

    try:
        find_model()
    except DetectorUnavailable as e:
        return False, str(e)
    return True, ""


def dlib_ready() -> tuple[bool, str]:
    """(usable, reason): dlib importable and a 68-point predictor file found."""
    from fml_taichi.data.detect import find_dlib_predictor

    return detector_ready("dlib", "pip install dlib-bin==20.0.1.post1", find_dlib_predictor)


def onnx_ready() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def tiny_config(encoder_input: str = "image", reflectance: str = "predicted", residuals: str = "all") -> dict:
    """A small but complete training config (the checkpoint's architecture); ``encoder_input``
    ``"image+start"`` for an encoder that reads the landmark start (trained on aligned crops);
    ``reflectance`` "fitted" for reflectance coefficients fitted to the image; ``residuals``: what an
    image+start encoder corrects."""
    cfg = {"seed": 0, "model": {"source": "default", "n_vertices": N_VERTICES, "n_correctives_geometry": 8,
                                "n_correctives_reflectance": 8},
           "encoder": {"input_size": 64, "width": 0.5, "n_features": 64}}
    if encoder_input != "image":
        cfg["encoder"]["input"] = encoder_input
        cfg["encoder"]["residuals"] = residuals
        cfg["data"] = {"align": True}
    if reflectance != "predicted":
        cfg["model"]["reflectance_coefficients"] = reflectance
        cfg["stage2"] = {"warm_start": 8}
    return cfg


def write_tiny_checkpoint(path, encoder_input: str = "image", head_std: float = 0.01, geometry_head: bool = True,
                          **config) -> str:
    """An untrained checkpoint whose heads are small random weights (outputs depend on the input, stay
    near the mean face, frontal, 0.5 m away); ``head_std=0``: zero heads, as a fresh encoder has them;
    ``geometry_head=False``: the geometry head zero (a default run trains no geometry corrective)."""
    from fml_taichi.nets.checkpoint import save_checkpoint
    from fml_taichi.nets.config import from_dict
    from fml_taichi.nets.models import build_networks, face_model_from_spec, face_model_spec

    cfg = from_dict(tiny_config(encoder_input, **config))
    spec = face_model_spec(cfg.model)
    multilevel, encoder = build_networks(cfg, face_model_from_spec(spec))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in (encoder.head_base, encoder.head_geometry, encoder.head_reflectance):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * head_std)
        if not geometry_head:
            encoder.head_geometry.weight.zero_()
            encoder.head_geometry.bias.zero_()
    # Untrained BatchNorm statistics (mean 0, var 1) let activations vanish in eval mode: estimate
    # them from a few random images, as a short training run would.
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    encoder.train()
    with torch.no_grad():
        for _ in range(4):
            encoder.backbone(encoder.preprocess(torch.rand(8, 3, 240, 240, generator=g)))
    encoder.eval()
    save_checkpoint(path, config=cfg.to_dict(), face_model_spec=spec, encoder=encoder.state_dict(),
                    multilevel=multilevel.state_dict(), step=0,
                    optimizer={"state": {}, "param_groups": []})
    return os.fspath(path)


@functools.cache
def _renderer():
    from fml_taichi.data.synthetic import SyntheticConfig, SyntheticRenderer

    # Near-frontal faces without hair blobs: what a frontal-face detector reliably finds. The
    # detection/pipeline tests keep the bumps-only generator (fields="none"): the region fields'
    # centimetre-scale bumps move dlib's landmarks past these tests' per-face NME bound (0.21 > 0.2).
    return SyntheticRenderer(n_vertices=N_VERTICES,
                             config=SyntheticConfig(yaw_deg=8, pitch_deg=5, roll_deg=5, hair_probability=0.0,
                                                    fields="none"))


@functools.cache
def synthetic_faces(seeds: tuple) -> dict:
    """Rendered 240 px synthetic faces (numpy ``image`` [B, 240, 240, 3], ``landmarks`` [B, 68, 2], ...)."""
    b = _renderer().render(list(seeds))
    return {"image": b["image"].numpy(), "landmarks": b["gt_landmarks"].numpy(), "params": b["gt_params"]}


def mean_landmarks():
    from fml_taichi.data.crop import mean_landmarks_3d

    return mean_landmarks_3d(_renderer().face_model)


def paste(faces: np.ndarray, positions, size=(300, 400), grey: float = 0.35) -> np.ndarray:
    """Faces [K, S, S, 3] pasted with their top-left corners at ``positions`` [(x, y)] into a grey frame."""
    h, w = size
    frame = np.full((h, w, 3), grey, np.float32)
    for face, (x, y) in zip(faces, positions):
        s = face.shape[0]
        frame[y:y + s, x:x + s] = face
    return frame
