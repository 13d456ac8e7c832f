"""The inference fast path: the encoder (and the multi-level model) as ONNX graphs run by ONNX Runtime.

Two graphs, both with a dynamic batch:

* ``"model"`` (the paper's image-only regression, ``init="encoder"``): input ``images`` [B, 3, S, S]
  float32 in [0, 1]; outputs ``z`` [B, P] the encoder's flat head and ``final_geometry`` /
  ``final_reflectance`` [B, N, 3], so a frame costs one runtime call;
* ``"features"`` (the landmark-anchored path): input ``crops`` [B, S, S, 3] channels-last as the
  crops come (the transpose is inside the graph); output ``features`` [B, F], the backbone's last
  hidden layer. The encoder's three linear heads then run in numpy (:class:`EncoderHeads`), after the
  landmark start they may read (``image+start`` encoders) is known: the backbone can run on another
  thread while the start is fitted, and the multi-level model, whose base the start already gives,
  is not evaluated twice.

ONNX Runtime is several times faster than eager torch for this small CNN on a CPU
(``benchmarks/bench_inference.py``). :func:`export_onnx` writes a graph (needs the ``onnx`` package:
torch's exporter writes through it). :func:`make_runner` returns ONNX Runtime's runner when
``onnxruntime`` and ``onnx`` are installed (``pip install onnxruntime onnx``), eager torch otherwise
(or when asked); both have the same calls: ``runner(crops [B, S, S, 3]) -> (FaceParams,
final_geometry, final_reflectance)`` and ``runner.features(crops) -> [B, F]`` float32 numpy, plus
``runner.heads``. Exported graphs are cached under ``$FML_TAICHI_CACHE/onnx/`` keyed by a hash of
the graph's kind, the weights and the crop size, so only the first run of a checkpoint pays the
export (a few seconds per graph).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import threading
import warnings

import numpy as np
import torch
from torch import nn

from ..common.atomic import write_bytes
from ..io.images import to_network
from ..model import FaceParams
from ..model.default import cache_root

__all__ = ["EncoderModelGraph", "EncoderFeaturesGraph", "EncoderHeads", "GRAPHS", "export_onnx", "onnx_available",
           "make_runner", "TorchRunner", "OnnxRunner", "INSTALL_ONNX"]

INSTALL_ONNX = "pip install onnxruntime onnx"
OUTPUTS = ("z", "final_geometry", "final_reflectance")
#: The exportable graphs (module docstring): name -> (input name, output names).
GRAPHS = {"model": ("images", OUTPUTS), "features": ("crops", ("features",))}


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


class EncoderFeaturesGraph(nn.Module):
    """crops [B, S, S, 3] channels-last in [0, 1] -> the backbone's features [B, F] (the encoder's
    resize and centring included): everything of the encoder but its linear heads."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, crops: torch.Tensor):
        return self.encoder.backbone(self.encoder.preprocess(crops.permute(0, 3, 1, 2)))


class EncoderHeads:
    """The encoder's three linear heads in numpy float32: backbone features (and, for an
    ``image+start`` encoder, the start's z) -> the head outputs, exactly as
    :meth:`~fml_taichi.nets.encoder.FaceEncoder.forward_flat` computes them (base residuals added to
    the start). A [1, 1024] x [1024, ~300] product costs microseconds; a torch module call costs more."""

    def __init__(self, encoder):
        self.codec = encoder.codec
        self.takes_start = bool(encoder.takes_start)
        self.n_features = encoder.backbone.n_features
        lay = encoder.codec.layout
        self.n_identity = lay.n_shape + lay.n_expression + lay.n_reflectance

        def numpy_of(head):
            return (np.ascontiguousarray(head.weight.detach().cpu().float().numpy().T),
                    head.bias.detach().cpu().float().numpy().copy())
        self.base, self.geometry, self.reflectance = (numpy_of(h) for h in (encoder.head_base, encoder.head_geometry,
                                                                            encoder.head_reflectance))
        if self.takes_start:  # outputs held at the start (encoder.residuals): mask(xW + b) = x(W mask) + b mask
            mask = encoder.base_mask.detach().cpu().float().numpy()
            self.base = (np.ascontiguousarray(self.base[0] * mask), self.base[1] * mask)
            #: The base outputs with a residual (the others are the start's): only their columns are computed.
            self._active = np.flatnonzero(mask)
        else:
            self._active = np.arange(self.base[0].shape[1])
        # One product for the three heads (the active base columns, geometry, reflectance): a third of
        # the weights read per call with reflectance-only residuals, one BLAS call instead of three.
        self._fused = (np.ascontiguousarray(np.concatenate([self.base[0][:, self._active], self.geometry[0],
                                                            self.reflectance[0]], 1)),
                       np.concatenate([self.base[1][self._active], self.geometry[1], self.reflectance[1]]))
        # The codec's maps as per-part (offset, scale) vectors, float32 like its buffers: ``p = offset +
        # z * scale`` (torch's float32 ops and numpy's give the same numbers).
        codec, sc = encoder.codec, encoder.codec.scales

        def f32(x, n=None):
            a = x.detach().cpu().float().numpy().reshape(-1) if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
            return np.broadcast_to(a, (n,)).astype(np.float32) if n is not None else a.astype(np.float32)
        zero = np.float32(0.0)
        self._maps = {
            "shape": (zero, f32(codec.shape_sigma)), "expression": (zero, f32(codec.expression_sigma)),
            "reflectance": (zero, f32(codec.reflectance_sigma)),
            "delta_geometry": (zero, np.float32(sc.corrective_scale)), "delta_reflectance": (zero, np.float32(sc.corrective_scale)),
            "rotation": (zero, np.float32(sc.rotation_scale)),
            "translation": (f32(codec.translation_mean), f32(codec.translation_scale)),
            "light": (f32(codec.light_mean), np.float32(sc.light_scale)),
        }
        self._slices = lay.slices()
        # Whether the heads can move only the base reflectance and the reflectance corrective: the
        # geometry head is exactly zero and every residual column is a reflectance one. Pose, shape,
        # expression, light and the final geometry are then the start's, known before the features.
        self._reflectance_lo = lo = lay.n_shape + lay.n_expression  # first reflectance column of the base z
        self.keeps_geometry = bool(self.takes_start and not (self.geometry[0].any() or self.geometry[1].any())
                                   and np.all((self._active >= lo) & (self._active < self.n_identity)))
        # base_reflectance's product: the residual columns of the fused weights alone.
        n_act = len(self._active)
        self._residual_columns = (np.ascontiguousarray(self._fused[0][:, :n_act]), self._fused[1][:n_act].copy())
        self._base_parts = ("shape", "expression", "reflectance", "rotation", "translation", "light")

    def _inputs(self, features: np.ndarray, start_z: np.ndarray | None) -> np.ndarray:
        f = np.asarray(features, np.float32)
        if f.ndim != 2 or f.shape[1] != self.n_features:
            raise ValueError(f"features: expected shape (B, {self.n_features}), got {f.shape}")
        if not self.takes_start:
            if start_z is not None:
                raise ValueError("start_z: this encoder reads the image only (input 'image'); pass no start")
            return f
        n_base = self.codec.layout.n_base
        if start_z is None or np.shape(start_z) != (len(f), n_base):
            got = None if start_z is None else np.shape(start_z)
            raise ValueError(f"start_z: this encoder (input 'image+start') needs the start's z of shape "
                             f"({len(f)}, {n_base}), got {got}")
        return np.concatenate([f, np.asarray(start_z, np.float32)], 1)

    def correctives(self, features: np.ndarray, start_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The corrective heads' z ``(delta_geometry [B, C_g], delta_reflectance [B, C_r])`` (before
        the codec's ``corrective_scale``)."""
        x = self._inputs(features, start_z)
        return x @ self.geometry[0] + self.geometry[1], x @ self.reflectance[0] + self.reflectance[1]

    def flat(self, features: np.ndarray, start_z: np.ndarray | None = None) -> np.ndarray:
        """The encoder's flat head vector ``z [B, total]`` (the codec unpacks it to FaceParams)."""
        x = self._inputs(features, start_z)
        y = x @ self._fused[0] + self._fused[1]
        n_act, n_g = len(self._active), self.geometry[0].shape[1]
        if self.takes_start:  # residuals on the start; the masked outputs are the start's exactly
            base = x[:, self.n_features:].copy()
            base[:, self._active] += y[:, :n_act]
        else:
            base = y[:, :n_act]
        n_id = self.n_identity
        return np.concatenate([base[:, :n_id], y[:, n_act:n_act + n_g], y[:, n_act + n_g:], base[:, n_id:]], 1)

    def base_reflectance(self, features: np.ndarray, start_z: np.ndarray) -> np.ndarray:
        """For heads that :attr:`keeps_geometry`: the base reflectance coefficients [B, m_r] float32
        that :meth:`flat` and :meth:`unpack` give, from the residual columns' product alone (a third
        of the weights :meth:`flat` reads; every other output is :meth:`start_flat`'s)."""
        if not self.keeps_geometry:
            raise ValueError("base_reflectance: these heads move more than the reflectance (keeps_geometry is False)")
        x = self._inputs(features, start_z)
        w, b = self._residual_columns
        lo = self._reflectance_lo
        z = x[:, self.n_features + lo:self.n_features + self.n_identity].copy()
        z[:, self._active - lo] += x @ w + b
        offset, scale = self._maps["reflectance"]
        return offset + z * scale

    def start_flat(self, start_z: np.ndarray) -> np.ndarray:
        """:meth:`flat` with every head output zero: the start's z as the heads pass it on (its
        parts without a residual come out of :meth:`flat` exactly so), zero corrective z."""
        z = np.asarray(start_z, np.float32)
        n_g, n_r = self.geometry[0].shape[1], self.reflectance[0].shape[1]
        n_id = self.n_identity
        return np.concatenate([z[:, :n_id], np.zeros((len(z), n_g + n_r), np.float32), z[:, n_id:]], 1)

    def params(self, features: np.ndarray, start_z: np.ndarray | None = None) -> FaceParams:
        """:meth:`flat` unpacked to float32 :class:`FaceParams`."""
        return self.codec.unpack(torch.from_numpy(self.flat(features, start_z)))

    def start_z(self, params: FaceParams) -> np.ndarray:
        """The start's base z [B, n_base] float32 in numpy: the codec's ``pack_base`` of the float32
        parameters (:func:`fml_taichi.recon.anchored.start_z`, what training feeds), without its
        per-call torch overhead."""
        b = params.batch_size
        out = []
        for name in self._base_parts:
            offset, scale = self._maps[name]
            v = getattr(params, name).detach().numpy().astype(np.float32, copy=False).reshape(b, -1)
            out.append((v - offset) / scale)
        return np.concatenate(out, 1)

    def unpack(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """The codec's ``unpack`` in numpy: flat ``z [B, total]`` -> {FaceParams field: float32 array}."""
        b = len(z)
        out = {name: offset + z[:, sl] * scale if name != "light" else
               offset.reshape(-1, 3) + z[:, sl].reshape(b, -1, 3) * scale
               for name, sl in self._slices.items() for offset, scale in (self._maps[name],)}
        return out


def onnx_available() -> bool:
    """Both ``onnxruntime`` (to run) and ``onnx`` (for torch's exporter) importable."""

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def export_onnx(encoder, multilevel, path: str | os.PathLike | None = None, size: int = 240,
                graph: str = "model") -> bytes:
    """Export one of :data:`GRAPHS` as ONNX (module docstring): ``"model"`` (encoder + multi-level
    model) or ``"features"`` (the encoder's backbone; ``multilevel`` unused); returns the model bytes
    and, with ``path``, writes them there atomically.

    Raises:
        RuntimeError: ``onnx`` is not installed (message names the pip command).
    """
    if graph not in GRAPHS:
        raise ValueError(f"graph: expected one of {tuple(GRAPHS)}, got {graph!r}")
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError(f"exporting to ONNX needs the onnx package: {INSTALL_ONNX}")
    input_name, outputs = GRAPHS[graph]
    if graph == "model":
        module, example = EncoderModelGraph(encoder, multilevel).eval(), torch.rand(1, 3, size, size)
    else:
        module, example = EncoderFeaturesGraph(encoder).eval(), torch.rand(1, size, size, 3)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The model's argument checks turn tensors into Python bools while tracing: harmless here
        # (the checks hold for every input of this shape), but torch warns about each one.
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(module, (example,), buf, dynamo=False, input_names=[input_name],
                              output_names=list(outputs), opset_version=17,
                              dynamic_axes={input_name: {0: "batch"}, **{o: {0: "batch"} for o in outputs}})
    data = buf.getvalue()
    if path is not None:
        write_bytes(path, data)
    return data


def _weights_key(encoder, multilevel, size: int, graph: str = "model") -> str:
    """A content hash of the graph's kind and weights (and what else shapes it): the ONNX cache key."""
    # The "model" key keeps its old form, so caches written before the features graph stay valid.
    tag = f"{torch.__version__}|{size}|{encoder.input_size}" + ("" if graph == "model" else f"|{graph}")
    h = hashlib.sha256(tag.encode())
    modules = (encoder, multilevel) if graph == "model" else (encoder.backbone,)
    for module in modules:
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
        self.heads = EncoderHeads(encoder)
        self._features = EncoderFeaturesGraph(self.encoder)

    @torch.no_grad()
    def __call__(self, crops) -> tuple[FaceParams, torch.Tensor, torch.Tensor]:
        if self.encoder.takes_start:
            raise ValueError("this encoder reads the landmark start (input 'image+start'): use features() + heads")
        x = _network_input(crops)
        params = self.encoder(x)
        out = self.multilevel(params)
        return params, out.final_geometry, out.final_reflectance

    @torch.no_grad()
    def features(self, crops) -> np.ndarray:
        """The backbone's features [B, F] float32 of crops [B, S, S, 3] (module docstring)."""
        return self._features(_crops_input(crops)).numpy()


class OnnxRunner:
    """ONNX Runtime on the exported graph; same call as :class:`TorchRunner`.

    ``threads``: intra-op threads (default 1: at batch 1 a second thread gains little for this small
    network and, on a busy machine, costs a lot: a parallel call waits for its slowest thread;
    ``benchmarks/bench_inference.py`` times both). Threads do not spin between calls, so they do
    not starve torch or Taichi work running in between (ONNX Runtime spins by default).
    """
    name = "onnxruntime"

    def __init__(self, encoder, multilevel, size: int = 240, threads: int | None = None, cache: bool = True,
                 graphs: tuple = ("model",)):
        self.codec = encoder.codec
        self.heads = EncoderHeads(encoder)
        self._encoder, self._multilevel, self._size, self._threads, self._cache = encoder, multilevel, size, threads, cache
        self._sessions, self._lock = {}, threading.Lock()
        self.takes_start = bool(encoder.takes_start)
        for g in graphs:
            self.session_for(g)

    def session_for(self, graph: str):
        """The ONNX Runtime session of one of :data:`GRAPHS` (exported or read from the cache on first use)."""
        with self._lock:
            if graph not in self._sessions:
                self._sessions[graph] = self._load(graph)
            return self._sessions[graph]

    def _load(self, graph: str):
        import onnxruntime as ort

        if graph not in GRAPHS:
            raise ValueError(f"graph: expected one of {tuple(GRAPHS)}, got {graph!r}")
        enc, ml, size, cache = self._encoder, self._multilevel, self._size, self._cache
        data = None
        path = os.path.join(_cache_dir(), _weights_key(enc, ml, size, graph) + ".onnx")
        if cache and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
        if data is None:
            data = export_onnx(enc, ml, path if cache else None, size, graph)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self._threads or 1)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception:  # a damaged cache file (ONNX Runtime raises its own types): re-export once
            if not cache:
                raise
            data = export_onnx(enc, ml, path, size, graph)
            return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    @property
    def session(self):
        """The ``"model"`` graph's session."""
        return self.session_for("model")

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw ``"model"`` graph outputs for network-layout input ``x`` [B, 3, S, S] float32 (for benchmarks)."""
        return self.session.run(list(OUTPUTS), {"images": x})

    def __call__(self, crops) -> tuple[FaceParams, torch.Tensor, torch.Tensor]:
        if self.takes_start:
            raise ValueError("this encoder reads the landmark start (input 'image+start'): use features() + heads")
        x = _network_input(crops).numpy()
        z, geo, refl = self.run_numpy(x)
        return self.codec.unpack(torch.from_numpy(z)), torch.from_numpy(geo), torch.from_numpy(refl)

    def features(self, crops) -> np.ndarray:
        """The backbone's features [B, F] float32 of crops [B, S, S, 3] (module docstring)."""
        x = _crops_input(crops)
        return self.session_for("features").run(None, {"crops": x.numpy()})[0]


def _network_input(crops) -> torch.Tensor:
    t = to_network(crops)
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"crops: expected square crops, got {tuple(t.shape[-2:])}")
    return t


def _crops_input(crops) -> torch.Tensor:
    """Channels-last crops [B, S, S, 3] as a contiguous float32 tensor (no copy when they are one already)."""
    t = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(crops, np.float32))
    if t.ndim != 4 or t.shape[-1] != 3 or t.shape[1] != t.shape[2]:
        raise ValueError(f"crops: expected square channels-last crops (B, S, S, 3), got {tuple(t.shape)}")
    return t.to(torch.float32).contiguous()


def make_runner(encoder, multilevel, runner: str = "auto", size: int = 240, threads: int | None = None,
                graphs: tuple = ("model",)):
    """The fastest available runner (``runner="auto"``), or ``"onnxruntime"`` / ``"torch"`` explicitly;
    ``graphs``: the ONNX graphs to load now (others load on first use).

    Raises:
        RuntimeError: ``"onnxruntime"`` requested but not installed (message names the pip command).
    """
    if runner not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"runner: expected 'auto', 'onnxruntime' or 'torch', got {runner!r}")
    if runner == "torch" or (runner == "auto" and not onnx_available()):
        return TorchRunner(encoder, multilevel)
    if not onnx_available():
        raise RuntimeError(f"the ONNX Runtime runner needs onnxruntime and onnx: {INSTALL_ONNX}")
    return OnnxRunner(encoder, multilevel, size=size, threads=threads, graphs=graphs)
