"""The inference fast path: encoder + multi-level model as one ONNX graph run by ONNX Runtime.

One call maps face crops to the encoder's parameters *and* the final level's geometry and
reflectance (the learned correctives included), so a frame costs one runtime call. ONNX Runtime is
several times faster than eager torch for this small CNN on a CPU (``benchmarks/bench_inference.py``).

* :func:`export_onnx` writes the graph (input ``images`` [B, 3, S, S] float32 in [0, 1], dynamic batch;
  outputs ``z`` [B, P] the encoder's flat head, ``final_geometry`` / ``final_reflectance`` [B, N, 3]).
  Exporting needs the ``onnx`` package (torch's exporter writes through it).
* :func:`make_runner` returns a callable ``runner(crops [B, S, S, 3]) -> (FaceParams, final_geometry,
  final_reflectance)``: ONNX Runtime when ``onnxruntime`` and ``onnx`` are installed (``pip install
  onnxruntime onnx``), eager torch otherwise (or when asked). Exported graphs are cached under
  ``$FML_TAICHI_CACHE/onnx/`` keyed by a hash of the weights and the crop size, so only the first run
  of a checkpoint pays the export (a few seconds).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from ..common.atomic import write_bytes
from ..io.images import to_network
from ..model import FaceParams
from ..model.default import cache_root

__all__ = ["EncoderModelGraph", "export_onnx", "onnx_available", "make_runner", "TorchRunner", "OnnxRunner",
           "INSTALL_ONNX"]

INSTALL_ONNX = "pip install onnxruntime onnx"
OUTPUTS = ("z", "final_geometry", "final_reflectance")


class EncoderModelGraph(nn.Module):
    """images [B, 3, S, S] -> (z, final_geometry, final_reflectance): the exported computation."""

    def __init__(self, encoder, multilevel):
        super().__init__()
        self.encoder = encoder
        self.multilevel = multilevel

    def forward(self, images: torch.Tensor):
        z = self.encoder.forward_flat(images)
        out = self.multilevel(self.encoder.codec.unpack(z))
        return z, out.final_geometry, out.final_reflectance


def onnx_available() -> bool:
    """Both ``onnxruntime`` (to run) and ``onnx`` (for torch's exporter) importable."""

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def export_onnx(encoder, multilevel, path: str | os.PathLike | None = None, size: int = 240) -> bytes:
    """Export encoder + multi-level model as ONNX (module docstring); returns the model bytes and,
    with ``path``, writes them there atomically.

    Raises:
        RuntimeError: ``onnx`` is not installed (message names the pip command).
    """
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError(f"exporting to ONNX needs the onnx package: {INSTALL_ONNX}")
    graph = EncoderModelGraph(encoder, multilevel).eval()
    example = torch.rand(1, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The model's argument checks turn tensors into Python bools while tracing: harmless here
        # (the checks hold for every input of this shape), but torch warns about each one.
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(graph, (example,), buf, dynamo=False, input_names=["images"],
                              output_names=list(OUTPUTS), opset_version=17,
                              dynamic_axes={"images": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}})
    data = buf.getvalue()
    if path is not None:
        write_bytes(path, data)
    return data


def _weights_key(encoder, multilevel, size: int) -> str:
    """A content hash of the weights (and what else shapes the graph): the ONNX cache key."""
    h = hashlib.sha256(f"{torch.__version__}|{size}|{encoder.input_size}".encode())
    for module in (encoder, multilevel):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _cache_dir() -> str:
    return os.path.join(cache_root(), "onnx")


class TorchRunner:
    """Eager torch: ``runner(crops [B, S, S, 3] float32) -> (FaceParams, final_geometry, final_reflectance)``."""

    name = "torch"

    def __init__(self, encoder, multilevel):
        self.encoder = encoder.eval()
        self.multilevel = multilevel.eval()

    @torch.no_grad()
    def __call__(self, crops) -> tuple[FaceParams, torch.Tensor, torch.Tensor]:
        x = _network_input(crops)
        params = self.encoder(x)
        out = self.multilevel(params)
        return params, out.final_geometry, out.final_reflectance


class OnnxRunner:
    """ONNX Runtime on the exported graph; same call as :class:`TorchRunner`.

    ``threads``: intra-op threads (default 1: at batch 1 a second thread gains little for this small
    network and, on a busy machine, costs a lot: a parallel call waits for its slowest thread;
    ``benchmarks/bench_inference.py`` times both). Threads do not spin between calls, so they do
    not starve torch or Taichi work running in between (ONNX Runtime spins by default).
    """
    name = "onnxruntime"

    def __init__(self, encoder, multilevel, size: int = 240, threads: int | None = None, cache: bool = True):
        import onnxruntime as ort

        self.codec = encoder.codec
        data = None
        path = os.path.join(_cache_dir(), _weights_key(encoder, multilevel, size) + ".onnx")
        if cache and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
        if data is None:
            data = export_onnx(encoder, multilevel, path if cache else None, size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or 1)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception:  # a damaged cache file (ONNX Runtime raises its own types): re-export once
            if not cache:
                raise
            data = export_onnx(encoder, multilevel, path, size)
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw graph outputs for network-layout input ``x`` [B, 3, S, S] float32 (for benchmarks)."""
        return self.session.run(list(OUTPUTS), {"images": x})

    def __call__(self, crops) -> tuple[FaceParams, torch.Tensor, torch.Tensor]:
        x = _network_input(crops).numpy()
        z, geo, refl = self.run_numpy(x)
        return self.codec.unpack(torch.from_numpy(z)), torch.from_numpy(geo), torch.from_numpy(refl)


def _network_input(crops) -> torch.Tensor:
    t = to_network(crops)
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"crops: expected square crops, got {tuple(t.shape[-2:])}")
    return t


def make_runner(encoder, multilevel, runner: str = "auto", size: int = 240, threads: int | None = None):
    """The fastest available runner (``runner="auto"``), or ``"onnxruntime"`` / ``"torch"`` explicitly.

    Raises:
        RuntimeError: ``"onnxruntime"`` requested but not installed (message names the pip command).
    """
    if runner not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"runner: expected 'auto', 'onnxruntime' or 'torch', got {runner!r}")
    if runner == "torch" or (runner == "auto" and not onnx_available()):
        return TorchRunner(encoder, multilevel)
    if not onnx_available():
        raise RuntimeError(f"the ONNX Runtime runner needs onnxruntime and onnx: {INSTALL_ONNX}")
    return OnnxRunner(encoder, multilevel, size=size, threads=threads)
