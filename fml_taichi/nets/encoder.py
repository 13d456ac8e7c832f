"""The parameter regressor (paper Sec. 3 and 7): a small CNN from a face crop to :class:`FaceParams`.

Why not the paper's AlexNet: the reconstruction target is >= 250 Hz at batch 1 on a 2-core CPU (via
ONNX Runtime). A MobileNetV3-small-class network at 224 px runs in 1.4-3.8 ms there, ResNet-18 in
17 ms; at the ~120 px we use it is well inside the budget and trains at ~40-50 images/s on 2 cores.
The backbone is written here in plain torch (torchvision is not usable in this environment) using
only ONNX-exportable ops: conv, batch norm, hard-swish/sigmoid, average pooling, linear.

Input: ``images [B, 3, H, W]`` float in [0, 1] (networks take channels-first, docs/conventions.md),
usually the 240 x 240 crop. It is downsampled internally to ``input_size`` (an exact integer factor
uses average pooling, which is anti-aliased and cheap; otherwise bilinear).

Output heads and scaling (:class:`ParamCodec`): the network predicts a flat vector ``z`` whose parts
are all of order one, and the codec maps it to physical parameters:

============== ==================== ===============================================================
part           size                  meaning of ``z``
============== ==================== ===============================================================
shape          m_s                   ``alpha_s = z * shape_sigma`` (standard deviations)
expression     m_e                   ``alpha_e = z * expression_sigma``
reflectance    m_r                   ``beta = z * reflectance_sigma``
delta_geometry C_g                   ``delta_g = z * corrective_scale`` (corrective coefficients)
delta_refl.    C_r                   ``delta_r = z * corrective_scale``
rotation       3                     ``(rx, ry, rz) = z * rotation_scale`` radians (Euler, x first)
translation    3                     ``t = (0, 0, 500) + z * translation_scale`` mm
light          27 (9 x 3, SH-major)  ``gamma = gamma_0 + z * light_scale``; ``gamma_0`` is ambient
                                     white light with irradiance ``ambient`` (shading = ambient)
============== ==================== ===============================================================

The flat layout follows :class:`FaceParams`' field order. The three heads are separate linear
layers (base, geometry correctives, reflectance correctives) so that the per-part learning rates of
the paper (Sec. 7) apply to whole modules. Every head starts at zero weight and bias: a fresh
network predicts ``z = 0``, i.e. the mean face, frontal at 0.5 m, lit by ambient light, with no
correctives, which is a sensible render and keeps the first training steps stable.

Two inputs (``EncoderConfig.input``):

* ``"image"`` (the paper): the crop only; the heads read the pooled features.
* ``"image+start"``: the crop *and* a start's base parameters in the codec's z-space
  (``start [B, n_base]``, :meth:`ParamCodec.pack_base`: the landmark + colour fit of
  :mod:`fml_taichi.recon.start`). The heads read ``[features, start]`` and predict **residuals**:
  ``z_base = start + head_base(...)``, the correctives as before. With the zero-initialised heads an
  untrained encoder reproduces the start exactly, so training only has to learn what the fit misses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common.camera import DEFAULT_DISTANCE_MM
from ..model.params import FaceParams

# SH band-0 constant (docs/conventions.md, constants in the shading kernels): shading = sum_b gamma_b
# H_b(n) with H_0 = 1 / (2 sqrt(pi)), so irradiance `a` everywhere needs gamma_0 = a * 2 sqrt(pi).
SH_C0 = 0.28209479177387814
N_SH = 9
#: What the encoder reads (module docstring): the crop, or the crop and a start's base parameters.
INPUTS = ("image", "image+start")
#: What an ``image+start`` encoder's base head corrects: "all" base parameters, the "appearance"
#: (base reflectance and light) or the "reflectance" alone; the rest stays the landmark start's.
RESIDUALS = ("all", "appearance", "reflectance")
_KEPT = {"appearance": ("reflectance", "light"), "reflectance": ("reflectance",)}


@dataclass
class ParamScales:
    """How one unit of the network's output maps to physical parameters (see the module table).

    rotation_scale: radians per unit; translation_scale: mm per unit (x, y, z);
    light_scale: SH coefficient per unit; ambient: the irradiance of the zero-output light;
    corrective_scale: corrective coefficient per unit.
    """

    rotation_scale: float = 0.5
    translation_scale: tuple = (40.0, 40.0, 100.0)
    light_scale: float = 1.0
    ambient: float = 1.0
    corrective_scale: float = 1.0
    distance_mm: float = DEFAULT_DISTANCE_MM


@dataclass
class ParamLayout:
    """The sizes of the flat head, in :class:`FaceParams` field order."""

    n_shape: int
    n_expression: int
    n_reflectance: int
    n_delta_geometry: int
    n_delta_reflectance: int
    sizes: dict = field(init=False)

    def __post_init__(self):
        for name in ("n_shape", "n_expression", "n_reflectance", "n_delta_geometry", "n_delta_reflectance"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"ParamLayout.{name}: expected a non-negative int, got {v!r}")
        self.sizes = {
            "shape": self.n_shape, "expression": self.n_expression, "reflectance": self.n_reflectance,
            "delta_geometry": self.n_delta_geometry, "delta_reflectance": self.n_delta_reflectance,
            "rotation": 3, "translation": 3, "light": 3 * N_SH,
        }

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def n_base(self) -> int:
        """Outputs of the base head: everything but the two corrective parts."""
        return self.total - self.n_delta_geometry - self.n_delta_reflectance

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, n in self.sizes.items():
            out[name] = slice(start, start + n)
            start += n
        return out


class ParamCodec(nn.Module):
    """pack / unpack between the flat head vector ``z [B, total]`` and :class:`FaceParams`.

    The model's sigmas are buffers, so a codec saved in a state dict rebuilds exactly.
    """

    def __init__(self, layout: ParamLayout, shape_sigma, expression_sigma, reflectance_sigma,
                 scales: ParamScales | None = None):
        super().__init__()
        self.layout = layout
        self.scales = scales or ParamScales()
        for name, sigma, n in (("shape_sigma", shape_sigma, layout.n_shape),
                               ("expression_sigma", expression_sigma, layout.n_expression),
                               ("reflectance_sigma", reflectance_sigma, layout.n_reflectance)):
            s = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
            if s.numel() != n:
                raise ValueError(f"{name}: expected {n} values (the layout's size), got {s.numel()}")
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise ValueError(f"{name}: standard deviations must be finite and positive")
            self.register_buffer(name, s.clone())
        sc = self.scales
        self.register_buffer("translation_scale", torch.tensor(sc.translation_scale, dtype=torch.float32))
        self.register_buffer("translation_mean", torch.tensor([0.0, 0.0, sc.distance_mm]))
        light0 = torch.zeros(N_SH, 3)
        light0[0, :] = sc.ambient / SH_C0
        self.register_buffer("light_mean", light0)

    def unpack(self, z: torch.Tensor) -> FaceParams:
        """Flat network output ``z [B, total]`` -> :class:`FaceParams` (differentiable)."""
        if z.ndim != 2 or z.shape[1] != self.layout.total:
            raise ValueError(f"z: expected shape (B, {self.layout.total}), got {tuple(z.shape)}")
        s, sc = self.layout.slices(), self.scales
        b = z.shape[0]
        return FaceParams(
            shape=z[:, s["shape"]] * self.shape_sigma,
            expression=z[:, s["expression"]] * self.expression_sigma,
            reflectance=z[:, s["reflectance"]] * self.reflectance_sigma,
            delta_geometry=z[:, s["delta_geometry"]] * sc.corrective_scale,
            delta_reflectance=z[:, s["delta_reflectance"]] * sc.corrective_scale,
            rotation=z[:, s["rotation"]] * sc.rotation_scale,
            translation=self.translation_mean + z[:, s["translation"]] * self.translation_scale,
            light=self.light_mean + z[:, s["light"]].reshape(b, N_SH, 3) * sc.light_scale,
        )

    def base_indices(self) -> torch.Tensor:
        """Positions of the base head's outputs in the flat vector: identity, then rigid + light."""
        s = self.layout.slices()
        parts = [s[k] for k in ("shape", "expression", "reflectance", "rotation", "translation", "light")]
        return torch.cat([torch.arange(p.start, p.stop) for p in parts])

    def pack_base(self, params: FaceParams) -> torch.Tensor:
        """The base parameters of ``params`` in z-space, ``[B, n_base]`` in the base head's order
        (what an ``image+start`` encoder takes as its start; correctives are not part of it)."""
        return self.pack(params)[:, self.base_indices()]

    def pack(self, params: FaceParams) -> torch.Tensor:
        """The inverse of :meth:`unpack`: :class:`FaceParams` -> ``z [B, total]``."""
        sc = self.scales
        b = params.batch_size
        parts = {
            "shape": params.shape / self.shape_sigma,
            "expression": params.expression / self.expression_sigma,
            "reflectance": params.reflectance / self.reflectance_sigma,
            "delta_geometry": params.delta_geometry / sc.corrective_scale,
            "delta_reflectance": params.delta_reflectance / sc.corrective_scale,
            "rotation": params.rotation / sc.rotation_scale,
            "translation": (params.translation - self.translation_mean) / self.translation_scale,
            "light": ((params.light - self.light_mean) / sc.light_scale).reshape(b, -1),
        }
        for name, n in self.layout.sizes.items():
            if parts[name].shape != (b, n):
                raise ValueError(f"params.{name}: expected shape ({b}, {n}) for this layout, "
                                 f"got {tuple(parts[name].shape)}")
        return torch.cat([parts[name] for name in self.layout.sizes], dim=1)


# ----------------------------------------------------------------------------------------------
# MobileNetV3-small backbone (Howard et al. 2019), plain torch.


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class _SqueezeExcite(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        mid = _make_divisible(ch // 4)
        self.fc1 = nn.Conv2d(ch, mid, 1)
        self.fc2 = nn.Conv2d(mid, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: str | None = "hs") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act == "hs":
        layers.append(nn.Hardswish())
    elif act == "re":
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        layers = []
        if exp != cin:
            layers.append(_conv_bn(cin, exp, 1, 1, act=act))
        layers.append(_conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(_SqueezeExcite(exp))
        layers.append(_conv_bn(exp, cout, 1, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


# (kernel, expansion, out, squeeze-excite, activation, stride): MobileNetV3-small, Table 2 of the paper.
_MNV3_SMALL = [
    (3, 16, 16, True, "re", 2), (3, 72, 24, False, "re", 2), (3, 88, 24, False, "re", 1),
    (5, 96, 40, True, "hs", 2), (5, 240, 40, True, "hs", 1), (5, 240, 40, True, "hs", 1),
    (5, 120, 48, True, "hs", 1), (5, 144, 48, True, "hs", 1), (5, 288, 96, True, "hs", 2),
    (5, 576, 96, True, "hs", 1), (5, 576, 96, True, "hs", 1),
]


class MobileNetV3Small(nn.Module):
    """Feature extractor: images [B, 3, h, w] (already resized, normalised) -> features [B, n_features].

    ``pool``: "avg" (MobileNetV3's global average pooling) or "flatten": a 1x1 conv to
    ``spatial_channels`` then the flattened ``s x s`` map (``s = ceil(input_size / 32)``) feeds the
    fully connected layer, so the features keep *where* things are in the crop. Pose, landmark
    positions and face proportions are spatial quantities; measured here, flattening learned them
    markedly faster than global pooling at the same cost.
    """

    def __init__(self, width: float = 1.0, n_features: int = 1024, pool: str = "avg", input_size: int = 120,
                 spatial_channels: int = 128):
        super().__init__()
        if not (0.1 <= width <= 4.0):
            raise ValueError(f"encoder width multiplier must lie in [0.1, 4], got {width}")
        c = _make_divisible(16 * width)
        layers = [_conv_bn(3, c, 3, 2, act="hs")]
        for k, exp, out, se, act, s in _MNV3_SMALL:
            e, o = _make_divisible(exp * width), _make_divisible(out * width)
            layers.append(_InvertedResidual(c, k, e, o, se, act, s))
            c = o
        last = _make_divisible(576 * width)
        layers.append(_conv_bn(c, last, 1, 1, act="hs"))
        if pool not in ("avg", "flatten"):
            raise ValueError(f"encoder pool must be 'avg' or 'flatten', got {pool!r}")
        self.pool = pool
        if pool == "flatten":
            layers.append(_conv_bn(last, spatial_channels, 1, 1, act="hs"))
            last = spatial_channels * output_size_for(input_size) ** 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(last, n_features), nn.Hardswish())
        self.n_features = n_features
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        if self.pool == "avg":
            x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


@dataclass
class EncoderConfig:
    """Architecture choices (all in the training config's ``encoder:`` section).

    input_size: side (px) the crop is resized to before the backbone; width: channel multiplier;
    n_features: size of the last hidden layer; scales: :class:`ParamScales` fields; input: "image"
    (the paper) or "image+start"; residuals (``image+start`` only): :data:`RESIDUALS`.
    """

    input_size: int = 120
    width: float = 1.0
    n_features: int = 1024
    pool: str = "avg"
    scales: dict = field(default_factory=dict)
    input: str = "image"
    residuals: str = "all"


class FaceEncoder(nn.Module):
    """images [B, 3, H, W] in [0, 1] -> :class:`FaceParams` (see the module docstring).

    Attributes: ``backbone`` (features), ``head_base``, ``head_geometry``, ``head_reflectance``
    (the three zero-initialised output layers), ``codec`` (:class:`ParamCodec`).
    """

    def __init__(self, codec: ParamCodec, input_size: int = 120, width: float = 1.0, n_features: int = 1024,
                 pool: str = "avg", input: str = "image", residuals: str = "all"):
        super().__init__()
        if not isinstance(input_size, int) or not (32 <= input_size <= 512):
            raise ValueError(f"encoder input_size must be an int in [32, 512], got {input_size!r}")
        if input not in INPUTS:
            raise ValueError(f"encoder input must be one of {INPUTS}, got {input!r}")
        self.input_size = input_size
        if residuals not in RESIDUALS:
            raise ValueError(f"encoder residuals must be one of {RESIDUALS}, got {residuals!r}")
        if residuals != "all" and input != "image+start":
            raise ValueError(f"encoder residuals: {residuals!r} needs input 'image+start' (residuals on a start)")
        self.input = input
        self.residuals = residuals
        self.codec = codec
        self.backbone = MobileNetV3Small(width, n_features, pool=pool, input_size=input_size)
        lay = codec.layout
        n_in = n_features + (lay.n_base if self.takes_start else 0)
        self.head_base = nn.Linear(n_in, lay.n_base)
        self.head_geometry = nn.Linear(n_in, lay.n_delta_geometry)
        self.head_reflectance = nn.Linear(n_in, lay.n_delta_reflectance)
        for head in (self.head_base, self.head_geometry, self.head_reflectance):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        # Which base-head outputs are used (1) or held at the start (0); derived from the config, so
        # not saved: checkpoints of either setting share the state-dict keys.
        self.register_buffer("base_mask", self._base_mask(), persistent=False)

    def _base_mask(self) -> torch.Tensor:
        s = self.codec.layout.sizes
        names = ("shape", "expression", "reflectance", "rotation", "translation", "light")  # base head order
        keep = _KEPT.get(self.residuals, names)
        return torch.cat([torch.full((s[n],), float(n in keep)) for n in names])

    @classmethod
    def for_model(cls, face_model, n_correctives_geometry: int, n_correctives_reflectance: int,
                  config: EncoderConfig | None = None) -> "FaceEncoder":
        """An encoder sized for ``face_model`` (reads ``m_shape``/``*_sigma``) and the corrective sizes."""
        cfg = config or EncoderConfig()
        layout = ParamLayout(int(face_model.m_shape), int(face_model.m_expression), int(face_model.m_reflectance),
                             int(n_correctives_geometry), int(n_correctives_reflectance))
        try:
            scales = ParamScales(**cfg.scales)
        except TypeError as e:
            raise ValueError(f"encoder.scales: {e}") from e
        codec = ParamCodec(layout, face_model.shape_sigma, face_model.expression_sigma,
                           face_model.reflectance_sigma, scales)
        return cls(codec, cfg.input_size, cfg.width, cfg.n_features, cfg.pool, cfg.input, cfg.residuals)

    @property
    def takes_start(self) -> bool:
        """True for ``input="image+start"``: :meth:`forward` needs the start's z (``pack_base``)."""
        return self.input == "image+start"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize [B, 3, H, W] to the input size and centre the values (BN handles the rest)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected shape (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        s = self.input_size
        if (h, w) != (s, s):
            if h == w and h % s == 0:
                images = F.avg_pool2d(images, h // s)
            else:
                images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False)
        return (images - 0.5) * 4.0

    def forward_flat(self, images: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """The flat head vector ``z [B, total]`` (the ONNX-exportable part); ``start [B, n_base]``
        (z-space, :meth:`ParamCodec.pack_base`) is required exactly when :attr:`takes_start`."""
        f = self.backbone(self.preprocess(images))
        lay = self.codec.layout
        if self.takes_start:
            if start is None or start.ndim != 2 or start.shape != (f.shape[0], lay.n_base):
                got = None if start is None else tuple(start.shape)
                raise ValueError(f"start: this encoder (input 'image+start') needs the start's z of shape "
                                 f"({f.shape[0]}, {lay.n_base}), got {got}")
            start = start.to(f.dtype)
            f = torch.cat([f, start], 1)
        elif start is not None:
            raise ValueError("start: this encoder reads the image only (input 'image'); pass no start")
        base = self.head_base(f)
        if self.takes_start:
            base = base * self.base_mask + start  # residuals on the start
        n_id = lay.n_shape + lay.n_expression + lay.n_reflectance
        # Reassemble FaceParams order: [identity, delta_g, delta_r, rigid + light].
        return torch.cat([base[:, :n_id], self.head_geometry(f), self.head_reflectance(f), base[:, n_id:]], 1)

    def forward(self, images: torch.Tensor, start: torch.Tensor | None = None) -> FaceParams:
        return self.codec.unpack(self.forward_flat(images, start))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per part: ``base`` (backbone + base head), ``geometry``, ``reflectance`` (heads)."""
        return {
            "base": list(self.backbone.parameters()) + list(self.head_base.parameters()),
            "geometry": list(self.head_geometry.parameters()),
            "reflectance": list(self.head_reflectance.parameters()),
        }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def output_size_for(input_size: int) -> int:
    """Spatial size of the last feature map (stride 32), for documentation and tests."""
    return math.ceil(input_size / 32)
