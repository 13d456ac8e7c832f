"""The two-stage self-supervised training loop (paper Sec. 6-7).

Stage 1 trains the encoder on the base level (correctives frozen at zero); stage 2 fine-tunes the
encoder, the corrective heads and the corrective bases Theta_g, Theta_r with the full E_total, with
one learning rate per part (paper: 0.001 base, 0.005 geometry, 0.01 reflectance correctives).

Reproducibility: the run is a function of its config (``seed`` included). Network initialisation,
Theta, the synthetic images and the sample order all come from seeded generators; a checkpoint
stores the weights, the optimizer state, the step, the sample cursor and the torch RNG state, and
``resume`` continues with exactly the batches and updates the uninterrupted run would have made.

Outputs in the run folder: ``config.yaml`` (the resolved config), ``checkpoint.pt`` (latest),
``checkpoint_stage1.pt`` (the pretrained base level), the logs and curves of :mod:`.logs`, and
``metrics.json`` (held-out evaluation, the evaluation issue's keys) at the end.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import torch
import yaml
from tqdm import tqdm

from ..common import runtime
from ..common.atomic import write_text
from ..common.camera import default_intrinsics
from ..data.cached_dataset import CachedCropDataset
from ..data.synthetic import SyntheticFaces
from ..eval.harness import face_region
from ..losses import LossWeights, default_weights
from ..nets.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..nets.config import ConfigError, TrainConfig, from_dict, synthetic_config
from ..recon.anchored import EncoderInputPreparer
from ..recon.corrective_fit import reflectance_prior_of, with_fitted_reflectance
from ..nets.models import (
    FaceAutoencoder,
    build_networks,
    face_model_from_spec,
    face_model_spec,
)
from . import distributed as D
from .batches import DatasetSource, ImagePool, SampleOrder
from .logs import History, write_logs
from .objective import stage_loss
from .run_folder import CHECKPOINT, STAGE1_CHECKPOINT, remove_stale_temps
from .validation import final_evaluation, validate
from .warm_start import shading_span, warm_start_geometry, warm_start_reflectance

# Short names for the progress bar (the logs keep the full names).
_BAR_KEYS = {"total": "E", "photo_base": "ph_b", "photo_final": "ph_f", "sparse": "sp", "std": "std",
             "ref": "ref", "glo": "glo", "smo": "smo", "teacher": "tch"}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf; the message says at which step and which term."""


@dataclass
class RunState:
    """What changes while training (and what a checkpoint restores)."""

    step: int = 0  # global optimisation steps done (stage 1 + stage 2)
    cursor: int = 0  # samples consumed from the endless training stream (all ranks together)


def make_optimizer(stage_cfg, model: FaceAutoencoder) -> torch.optim.Optimizer:
    """One parameter group per part with its learning rate; parts without a rate are frozen."""
    groups = model.parameter_groups()
    param_groups = []
    for part, params in groups.items():
        lr = stage_cfg.lr.get(part)
        for p in params:
            p.requires_grad_(lr is not None)
        if lr is not None:
            param_groups.append({"params": params, "lr": float(lr), "base_lr": float(lr), "name": part})
    if stage_cfg.optimizer == "adadelta":
        # Caffe's AdaDelta (the paper's solver) uses momentum 0.95 and delta 1e-6.
        return torch.optim.Adadelta(param_groups, rho=0.95, eps=1e-6)
    if stage_cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups)
    return torch.optim.SGD(param_groups, momentum=0.9)


def lr_factor(stage_cfg, step_in_stage: int) -> float:
    """Learning-rate multiplier at ``step_in_stage`` (0-based) of a stage (see StageConfig.schedule)."""
    w = stage_cfg.warmup_steps
    if w and step_in_stage < w:
        return (step_in_stage + 1) / w
    if stage_cfg.schedule == "cosine":
        span = max(stage_cfg.steps - w, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step_in_stage - w, span) / span))
    return 1.0


class Trainer:
    """Builds everything from a config and runs (or resumes) the two stages.

    Args:
        cfg: the :class:`TrainConfig`.
        out_dir: the run folder (created).
        progress: show tqdm bars (rank 0 only).
        dist_info: this process's rank (``distributed.setup()``); single process by default.
    """
    def __init__(self, cfg: TrainConfig, out_dir: str, progress: bool = True, dist_info: D.DistInfo | None = None):
        self.cfg = cfg
        self.out_dir = out_dir
        self.dist = dist_info or D.DistInfo()
        self.progress = progress and cfg.log.progress and self.dist.is_main
        runtime.init()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.spec = face_model_spec(cfg.model)
        self.face_model = face_model_from_spec(self.spec)
        multilevel, encoder = build_networks(cfg, self.face_model)
        self.model = FaceAutoencoder(encoder, multilevel)
        self.weights = self._loss_weights()
        self.intrinsics = default_intrinsics(cfg.data.image_size)
        self.state = RunState()
        self.history = History()
        self.timings: dict[str, float] = {}
        self.source = None  # built lazily: resuming a finished run renders nothing
        self.val_batches = None
        # Aligned crops and the landmark start, as at inference (None: the paper's plain crops).
        self.preparer = EncoderInputPreparer.for_encoder(self.face_model, encoder, cfg.data.align, cfg.data.image_size)
        self.reflectance_prior = reflectance_prior_of(cfg)
        # Synthetic 3D supervision of the geometry (losses.geometry_teacher, stage2.geometry_warm_start):
        # the pool then keeps the true meshes, scored on the evaluation's face region.
        self.uses_truth = cfg.losses.geometry_teacher > 0 or cfg.stage2.geometry_warm_start > 0
        self.region = torch.as_tensor(face_region(self.face_model)) if self.uses_truth else None
        self.optimizer = None
        self.opt_stage = 0
        self.ddp = None

    # ---- construction ------------------------------------------------------------------------------
    def _loss_weights(self) -> LossWeights:
        path = self.cfg.losses.weights
        w = LossWeights.from_yaml(path) if path else default_weights()
        try:
            return w.replace(**self.cfg.losses.overrides) if self.cfg.losses.overrides else w
        except TypeError as e:
            raise ValueError(f"losses.overrides: {e}") from e

    def _synthetic_config(self):
        return synthetic_config(self.cfg)

    def _synthetic(self, length: int, split: str):
        return SyntheticFaces(length, split=split, face_model=self.face_model, config=self._synthetic_config())

    def _build_data(self) -> None:
        d = self.cfg.data
        t0 = time.perf_counter()
        if d.kind == "synthetic":
            train = self._synthetic(max(d.n_train, 1), "train")
            val = self._synthetic(d.n_val, "eval")
            val_items = [val[i] for i in range(len(val))]
        else:
            full = CachedCropDataset(d.root, image_size=d.image_size)
            if len(full) <= d.n_val:
                raise ValueError(f"data.root {d.root!r} has {len(full)} crops; need more than data.n_val={d.n_val}")
            n_train = d.n_train or len(full) - d.n_val
            n_train = min(n_train, len(full) - d.n_val)
            train = CachedCropDataset(d.root, image_size=d.image_size, indices=range(n_train))
            val_items = [full[i] for i in range(len(full) - d.n_val, len(full))]
        prepare = self.preparer
        desc = "pre-render training pool" + (" (aligned crops, landmark start)" if prepare is not None else "")
        self.source = (ImagePool.from_dataset(train, progress=self.progress, desc=desc, prepare=prepare,
                                              truth=self.uses_truth)
                       if d.pool else DatasetSource(train, prepare))
        self.order = SampleOrder(len(self.source), self.cfg.seed)
        self.val_batches = _batches(val_items, 8)
        self.timings["data_s"] = time.perf_counter() - t0

    # ---- checkpoints -------------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            config=self.cfg.to_dict(), face_model_spec=self.spec,
            encoder=self.model.encoder.state_dict(), multilevel=self.model.multilevel.state_dict(),
            optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
            stage=self.opt_stage or 1, step=self.state.step,
            rng={"torch": torch.get_rng_state()},
            extra={"cursor": self.state.cursor, "history": self.history.to_dict(), "timings": dict(self.timings)},
        )

    def save(self, name: str = CHECKPOINT) -> None:
        """Write a checkpoint (rank 0). Collective in distributed runs: every rank must call it."""
        D.broadcast_buffers(self.model, self.dist)
        if self.dist.is_main:
            save_checkpoint(os.path.join(self.out_dir, name), self.checkpoint())

    def restore(self, ck: Checkpoint) -> None:
        """Load weights, optimizer, step, cursor, RNG and history from a checkpoint of this config."""
        if ck.face_model_spec != self.spec:
            raise ValueError(f"checkpoint face model {ck.face_model_spec} differs from the config's {self.spec}")
        try:
            self.model.encoder.load_state_dict(ck.encoder)
            self.model.multilevel.load_state_dict(ck.multilevel)
        except RuntimeError as e:
            raise ValueError(f"checkpoint weights do not match its config: {str(e).splitlines()[0]}") from e
        self.state = RunState(step=ck.step, cursor=int(ck.extra.get("cursor", 0)))
        self.history = History.from_dict(ck.extra.get("history"))
        self.history.truncate(ck.step)
        self.timings.update(ck.extra.get("timings", {}))
        if "torch" in ck.rng:
            torch.set_rng_state(ck.rng["torch"])
        stage = self.stage_at(ck.step)
        if ck.optimizer is not None and ck.stage == stage:
            self._start_stage(stage)
            self.optimizer.load_state_dict(ck.optimizer)

    # ---- the loop ----------------------------------------------------------------------------------
    def stage_at(self, step: int) -> int:
        return 1 if step < self.cfg.stage1.steps else 2

    def _start_stage(self, stage: int) -> None:
        scfg = self.cfg.stage1 if stage == 1 else self.cfg.stage2
        self.optimizer = make_optimizer(scfg, self.model)
        self.opt_stage = stage
        if self.dist.enabled:
            # Built per stage: DDP registers only the parameters that require grad at construction.
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, broadcast_buffers=True)
        else:
            self.ddp = self.model

    def run(self, stop_at: int | None = None) -> dict:
        """Train until the end (or ``stop_at`` global steps, for tests), validate, checkpoint, evaluate.

        Returns the final metrics (held-out evaluation) when the run completes, else ``{}``.
        """
        if self.dist.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            remove_stale_temps(self.out_dir)  # left by a killed run; this process owns the folder now
        if self.state.step == 0:
            # First of all files: from here on the folder always holds a checkpoint to resume from.
            self.save()
        if self.dist.is_main:
            write_text(os.path.join(self.out_dir, "config.yaml"), yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        total = self.cfg.total_steps
        end = total if stop_at is None else min(stop_at, total)
        if self.state.step < end and self.source is None:
            self._build_data()
        self.model.train()
        for stage, scfg in ((1, self.cfg.stage1), (2, self.cfg.stage2)):
            first = 0 if stage == 1 else self.cfg.stage1.steps
            last = min(first + scfg.steps, end)
            if self.state.step >= last:
                continue
            if self.opt_stage != stage:
                if stage == 2 and self.state.step == first and scfg.warm_start:
                    self._warm_start(scfg.warm_start)
                if stage == 2 and self.state.step == first and scfg.geometry_warm_start:
                    self._warm_start_geometry(scfg.geometry_warm_start)
                self._start_stage(stage)
            self._run_stage(stage, scfg, last)
            if self.state.step == first + scfg.steps:
                # The stage-1 file first: a kill between the two writes then leaves checkpoint.pt
                # before the end of stage 1, so a resume redoes the end of stage 1 and writes both.
                if stage == 1:
                    self.save(STAGE1_CHECKPOINT)
                self.save()
        if self.state.step < total:
            return {}
        return self._finish()

    def _warm_start(self, n: int) -> None:
        """Data-driven start of Theta_r and the reflectance head (fml_taichi.train.warm_start)."""
        t0 = time.perf_counter()
        report = warm_start_reflectance(self.model, self.face_model, self.source, n, self.intrinsics)
        # Every rank computed the same thing from the same items; make it bitwise identical anyway.
        for p in self.model.parameters():
            D.broadcast_tensor(p.data, self.dist)
        self.timings["warm_start_s"] = time.perf_counter() - t0
        self.timings.update({k: v for k, v in report.items()})
        self._validate(2)

    def _warm_start_geometry(self, n: int) -> None:
        """Theta_g and the geometry head from the pool's true geometry (fml_taichi.train.warm_start)."""
        t0 = time.perf_counter()
        report = warm_start_geometry(self.model, self.face_model, self.source, n, self.region)
        for p in self.model.parameters():
            D.broadcast_tensor(p.data, self.dist)
        self.timings["geometry_warm_start_s"] = time.perf_counter() - t0
        self.timings.update(report)
        self._validate(2)

    def _run_stage(self, stage: int, scfg, last: int) -> None:
        first = 0 if stage == 1 else self.cfg.stage1.steps
        bar = tqdm(total=last - first, initial=self.state.step - first, desc=f"stage {stage}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        t_stage, imgs = time.perf_counter(), 0
        log = self.cfg.log
        while self.state.step < last:
            terms = self._train_step(stage, scfg)
            imgs += scfg.batch_size * self.dist.world
            self.state.step += 1
            bar.update(1)
            rate = imgs / max(time.perf_counter() - t_stage, 1e-9)
            if self.state.step % log.every == 0 or self.state.step == last:
                terms = D.mean_over_ranks(terms, self.dist)
                self.history.train.append({"step": self.state.step, "stage": stage, "images_per_s": rate, **terms})
                bar.set_postfix_str(" ".join(f"{_BAR_KEYS[k]}={terms[k]:.3g}" for k in _BAR_KEYS if k in terms)
                                    + f" {rate:.1f}img/s")
            if self.state.step % log.val_every == 0 or self.state.step == last:
                self._validate(stage)
            if self.state.step % log.checkpoint_every == 0 and self.state.step != first + scfg.steps:
                self.save()  # the stage's last step is saved by run(), stage-1 file first
            if self.dist.is_main and (self.state.step % log.every == 0 or self.state.step == last):
                write_logs(self.out_dir, self.history)
        bar.close()
        key = f"stage{stage}_images_per_s"
        self.timings[key] = rate
        self.timings[f"stage{stage}_s"] = self.timings.get(f"stage{stage}_s", 0.0) + time.perf_counter() - t_stage

    def _train_step(self, stage: int, scfg) -> dict[str, float]:
        idx = self.order.batch_indices(self.state.cursor, scfg.batch_size, self.dist.rank, self.dist.world)
        batch = self.source.batch(idx)
        self.state.cursor += scfg.batch_size * self.dist.world
        params, out = self.ddp(batch["image"], batch.get("start"))
        # Aligned crops carry their own exact cameras; plain crops share the training camera.
        intrinsics = batch.get("intrinsics", self.intrinsics)
        if stage == 2 and self.reflectance_prior is not None:
            # delta_r fitted to the image (recon.corrective_fit); Theta_r still learns through E_photo.
            params, out = with_fitted_reflectance(self.model.multilevel, params, out, batch["image"], intrinsics,
                                                  self.reflectance_prior)
        losses = stage_loss(stage, out, params, self.face_model, batch, intrinsics, self.weights,
                            self.cfg.losses.impl, self.cfg.losses.final_landmarks,
                            self.cfg.losses.geometry_teacher, self.region)
        total = losses["total"]
        if not bool(torch.isfinite(total)):
            bad = [k for k, v in losses.items() if not bool(torch.isfinite(v))]
            raise TrainingDiverged(f"step {self.state.step + 1} (stage {stage}): loss is not finite "
                                   f"(terms: {', '.join(bad)}); lower the learning rates in stage{stage}.lr")
        first = 0 if stage == 1 else self.cfg.stage1.steps
        factor = lr_factor(scfg, self.state.step - first)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if scfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           scfg.grad_clip)
        self.optimizer.step()
        if stage == 2 and self.cfg.model.reflectance_shading_span != "none":
            self._project_reflectance_off_shading()
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def _project_reflectance_off_shading(self) -> None:
        """Theta_r minus its part in the mean face's SH shading span (``model.reflectance_shading_span``):
        E_photo would otherwise pull shading back into the modes that the warm start projected it out of."""
        theta = self.model.multilevel.reflectance_corrective.theta
        if getattr(self, "_shading_q", None) is None:
            self._shading_q = shading_span(self.face_model, self.cfg.model.reflectance_shading_span).to(theta)
        q = self._shading_q
        theta.sub_(q @ (q.T @ theta))

    def _validate(self, stage: int) -> None:
        D.broadcast_buffers(self.model, self.dist)  # rank 0 validates; keep every rank's BN statistics equal
        if self.dist.is_main:
            t0 = time.perf_counter()
            metrics = validate(self.model, self.face_model, self.val_batches, self.intrinsics, self.preparer,
                               self.reflectance_prior)
            self.timings["validation_s"] = self.timings.get("validation_s", 0.0) + time.perf_counter() - t0
            self.history.val.append({"step": self.state.step, "stage": stage, **metrics})
        D.barrier(self.dist)

    def _finish(self) -> dict:
        """Held-out evaluation into ``metrics.json`` (rank 0), consistency check across ranks."""
        D.broadcast_buffers(self.model, self.dist)
        digests = D.gather_digests(self.model, self.dist)
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
        metrics: dict = {}
        if self.dist.is_main:
            if self.cfg.eval.at_end and self.cfg.eval.n > 0:
                t0 = time.perf_counter()
                metrics = self.final_evaluation()
                self.timings["evaluation_s"] = time.perf_counter() - t0
                write_text(os.path.join(self.out_dir, "metrics.json"), json.dumps(_clean(metrics), indent=1) + "\n")
            info = {"world_size": self.dist.world, "rank_digests": digests, "steps": self.state.step,
                    "timings": self.timings}
            write_text(os.path.join(self.out_dir, "run_info.json"), json.dumps(_clean(info), indent=1) + "\n")
            write_logs(self.out_dir, self.history)
        D.barrier(self.dist)
        return metrics

    def final_evaluation(self) -> dict:
        """The evaluation issue's metrics on ``eval.n`` held-out synthetic faces (disjoint seeds)."""
        return final_evaluation(self.model, self.cfg.eval.n, self._synthetic_config(), progress=self.progress,
                                preparer=self.preparer, weights=self.weights,
                                reflectance_prior=self.reflectance_prior)


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_clean(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d


def _stack(items: list[dict]) -> dict:
    keys = [k for k, v in items[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.stack([it[k] for it in items]).contiguous() for k in keys}


def _batches(items: list[dict], size: int) -> list[dict]:
    return [_stack(items[i:i + size]) for i in range(0, len(items), size)]


def trainer_from_checkpoint(path: str, out_dir: str, progress: bool = True,
                            dist_info: D.DistInfo | None = None) -> Trainer:
    """A trainer rebuilt from a checkpoint's own config, restored to its state (for ``--resume``)."""
    ck = load_checkpoint(path)
    try:
        cfg = from_dict(ck.config)
    except ConfigError as e:
        raise ConfigError(f"checkpoint {os.fspath(path)!r}: its training config: {e}") from None
    trainer = Trainer(cfg, out_dir, progress=progress, dist_info=dist_info)
    try:
        trainer.restore(ck)
    except (ValueError, KeyError) as e:  # weights/optimizer state that do not fit the config
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: {e}") from e
    return trainer
