"""Validation during training and the final evaluation, through the evaluation harness.

Both score the model exactly as ``fml-taichi eval --checkpoint`` does
(:mod:`fml_taichi.eval.harness`): geometric error (mm, face region, similarity-aligned, synthetic
only), photometric error (rendered reconstruction vs input over the face) and landmark NME, for the
base and the final level. Validation reuses a fixed set of held-out items rendered once; the final
evaluation renders ``eval.n`` held-out synthetic faces (seeds disjoint from training's).

Ground truth is read here only; the training losses never see it.
"""
from __future__ import annotations

import torch

from ..eval import harness
from ..eval.methods import MeanFaceMethod, Reconstruction

METRIC_KEYS = harness.SUMMARY_KEYS
#: The mean-face baseline's figures that :func:`final_evaluation` adds (same held-out faces).
MEAN_FACE_KEYS = ("geom_mm_mean_face", "photo_mean_face", "nme_mean_face")


class ModelMethod:
    """A training-time model as an evaluation :class:`~fml_taichi.eval.methods.Method` (eval mode,
    no gradients; the caller restores training mode)."""

    name = "trained"

    def __init__(self, model):
        self.model = model
        self.face_model = model.multilevel.face_model

    @torch.no_grad()
    def __call__(self, images, landmarks=None, landmark_conf=None, intrinsics=None) -> Reconstruction:
        self.model.eval()
        params, out = self.model(images)
        return Reconstruction(params.detach(), out)


def _summary(records: list[dict]) -> dict:
    s = harness.summarise(records)
    return {k: (float("nan") if s.get(k) is None else s[k]) for k in METRIC_KEYS}


@torch.no_grad()
def validate(model, face_model, batches, intrinsics) -> dict[str, float]:
    """Metrics of ``model`` on pre-rendered ``batches`` (dicts with ``image``, ``landmarks`` and, when
    known, ``gt_landmarks``, ``gt_vertices``, ``face_mask``). NaN for what cannot be measured."""
    was_training = model.training
    method = ModelMethod(model)
    region = harness.face_region(face_model)
    records: list[dict] = []
    try:
        for b in batches:
            rec = method(b["image"])
            target = b.get("gt_landmarks", b["landmarks"])
            weights = None if "gt_landmarks" in b else b.get("landmark_conf")
            recs, _ = harness.score_batch(face_model, rec, b["image"], intrinsics, target, region,
                                          gt_vertices=b.get("gt_vertices"), gt_mask=b.get("face_mask"),
                                          iod_weights=weights)
            records.extend(recs)
    finally:
        model.train(was_training)
    return _summary(records)


def final_evaluation(model, n: int, config=None, progress: bool = False) -> dict:
    """The harness's :func:`~fml_taichi.eval.harness.evaluate` on ``n`` held-out synthetic faces, plus
    the baseline every level must beat on the same faces: the model's mean face placed by the
    landmarks (``geom_mm_mean_face``, ``photo_mean_face``, ``nme_mean_face``)."""
    was_training = model.training
    try:
        result = harness.evaluate(ModelMethod(model), n=n, config=config, n_examples=0, progress=progress)
    finally:
        model.train(was_training)
    mean = harness.evaluate(MeanFaceMethod(model.multilevel.face_model), n=n, config=config, n_examples=0,
                            progress=False).summary
    out = {k: result.summary.get(k) for k in METRIC_KEYS}
    out.update({f"{k}_mean_face": mean.get(f"{k}_base") for k in ("geom_mm", "photo", "nme")})
    # The same model on a differently generated held-out set (eval.harness.HELDOUT_SETS).
    was_training = model.training
    try:
        alt = harness.evaluate(ModelMethod(model), n=n, config=config, n_examples=0, progress=False,
                               heldout="heldout_alt").summary
    finally:
        model.train(was_training)
    out["heldout_alt"] = {k: alt.get(k) for k in METRIC_KEYS}
    return out
