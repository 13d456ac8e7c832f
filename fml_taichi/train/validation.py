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
from ..model import ModelOutput
from ..recon.anchored import rotate_camera
from ..recon.corrective_fit import with_fitted_reflectance
from ..recon.reconstructor import reconstruct_as_trained

METRIC_KEYS = harness.SUMMARY_KEYS
#: The mean-face baseline's figures that :func:`final_evaluation` adds (same held-out faces).
MEAN_FACE_KEYS = ("geom_mm_mean_face", "photo_mean_face", "nme_mean_face")


class ModelMethod:
    """A training-time model as an evaluation :class:`~fml_taichi.eval.methods.Method` (eval mode,
    no gradients; the caller restores training mode). With a ``preparer``
    (:class:`~fml_taichi.recon.anchored.EncoderInputPreparer`) the images are aligned and the
    landmark start fitted first, as in training, and the pose returned in the images' camera. With a
    ``reflectance_prior`` the reflectance coefficients are fitted to the image
    (:mod:`fml_taichi.recon.corrective_fit`), as the model was trained."""

    name = "trained"

    def __init__(self, model, preparer=None, reflectance_prior: float | None = None):
        self.model = model
        self.face_model = model.multilevel.face_model
        self.preparer = preparer
        self.reflectance_prior = reflectance_prior

    @torch.no_grad()
    def __call__(self, images, landmarks=None, landmark_conf=None, intrinsics=None) -> Reconstruction:
        self.model.eval()
        if self.preparer is not None and (landmarks is None or intrinsics is None):
            raise ValueError("landmarks and intrinsics: the aligned / landmark-start encoder needs both")
        params, out = reconstruct_as_trained(self.model, images, landmarks, intrinsics, self.preparer,
                                             self.reflectance_prior)
        return Reconstruction(params.detach(), out)


def _summary(records: list[dict]) -> dict:
    s = harness.summarise(records)
    return {k: (float("nan") if s.get(k) is None else s[k]) for k in METRIC_KEYS}


@torch.no_grad()
def validate(model, face_model, batches, intrinsics, preparer=None, reflectance_prior=None) -> dict[str, float]:
    """Metrics of ``model`` on pre-rendered ``batches`` (dicts with ``image``, ``landmarks`` and, when
    known, ``gt_landmarks``, ``gt_vertices``, ``face_mask``). NaN for what cannot be measured."""
    was_training = model.training
    method = ModelMethod(model, preparer, reflectance_prior)
    region = harness.face_region(face_model)
    records: list[dict] = []
    try:
        for b in batches:
            rec = method(b["image"], b["landmarks"], b.get("landmark_conf"), intrinsics)
            target = b.get("gt_landmarks", b["landmarks"])
            weights = None if "gt_landmarks" in b else b.get("landmark_conf")
            recs, _ = harness.score_batch(face_model, rec, b["image"], intrinsics, target, region,
                                          gt_vertices=b.get("gt_vertices"), gt_mask=b.get("face_mask"),
                                          iod_weights=weights)
            records.extend(recs)
    finally:
        model.train(was_training)
    return _summary(records)


#: The terms of E_total that :func:`heldout_loss_terms` reports (each with its own weight, as in training).
LOSS_TERM_KEYS = ("photo_base", "photo_final", "sparse", "sparse_final", "std", "smo", "ref", "glo", "sta", "total")


@torch.no_grad()
def heldout_loss_terms(model, n: int, weights, config=None, preparer=None, batch_size: int = 8,
                       impl: str = "taichi", reflectance_prior: float | None = None) -> dict[str, float]:
    """E_total's terms (:data:`LOSS_TERM_KEYS`, both levels, E_sparse on the final level too) on ``n``
    held-out synthetic faces, each averaged over the faces: the training objective's own view of
    base vs final (``photo_final`` / ``photo_base`` is the photometric term's ratio)."""
    from ..data.synthetic import EVAL_SEED_START, SyntheticRenderer
    from ..losses import total_loss

    fm = model.multilevel.face_model
    renderer = SyntheticRenderer(fm, config)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        for s0 in range(0, n, batch_size):
            seeds = list(range(EVAL_SEED_START + s0, EVAL_SEED_START + min(n, s0 + batch_size)))
            b = renderer.render(seeds)
            if preparer is None:
                images, lms, k, z = b["image"], b["landmarks"], b["intrinsics"][0], None
            else:
                inputs = preparer(b["image"], b["landmarks"], b["intrinsics"][0])
                images, lms, k, z = inputs.images, inputs.landmarks, inputs.intrinsics, inputs.start_z
            params, out = model(images.contiguous(), z)
            if reflectance_prior is not None:
                params, out = with_fitted_reflectance(model.multilevel, params, out, images, k, reflectance_prior)
            terms = total_loss(out, params, fm, images.contiguous(), lms, b["landmark_conf"], k, weights,
                               impl=impl, levels="both", final_landmarks=1.0)
            for key in LOSS_TERM_KEYS:
                sums[key] = sums.get(key, 0.0) + float(terms[key]) * len(seeds)
    finally:
        model.train(was_training)
    return {k: v / n for k, v in sums.items()}


def final_evaluation(model, n: int, config=None, progress: bool = False, preparer=None, weights=None,
                     reflectance_prior: float | None = None) -> dict:
    """The harness's :func:`~fml_taichi.eval.harness.evaluate` on ``n`` held-out synthetic faces, plus
    the baseline every level must beat on the same faces: the model's mean face placed by the
    landmarks (``geom_mm_mean_face``, ``photo_mean_face``, ``nme_mean_face``). With a ``preparer``
    that fits the landmark start, the start alone is scored too (``*_start``: what the encoder adds).
    With the training's loss ``weights``, ``loss_terms`` holds :func:`heldout_loss_terms` on the same faces."""
    was_training = model.training
    try:
        result = harness.evaluate(ModelMethod(model, preparer, reflectance_prior), n=n, config=config, n_examples=0,
                                  progress=progress)
    finally:
        model.train(was_training)
    mean = harness.evaluate(MeanFaceMethod(model.multilevel.face_model), n=n, config=config, n_examples=0,
                            progress=False).summary
    out = {k: result.summary.get(k) for k in METRIC_KEYS}
    out.update({f"{k}_mean_face": mean.get(f"{k}_base") for k in ("geom_mm", "photo", "nme")})
    # The same model on a differently generated held-out set (eval.harness.HELDOUT_SETS).
    was_training = model.training
    try:
        alt = harness.evaluate(ModelMethod(model, preparer, reflectance_prior), n=n, config=config, n_examples=0, progress=False,
                               heldout="heldout_alt").summary
    finally:
        model.train(was_training)
    out["heldout_alt"] = {k: alt.get(k) for k in METRIC_KEYS}
    if preparer is not None and preparer.with_start:
        start = harness.evaluate(StartMethod(model.multilevel.face_model, preparer), n=n, config=config,
                                 n_examples=0, progress=False).summary
        out.update({f"{k}_start": start.get(f"{k}_base") for k in ("geom_mm", "photo", "nme")})
    if weights is not None:
        out["loss_terms"] = heldout_loss_terms(model, n, weights, config, preparer,
                                               reflectance_prior=reflectance_prior)
    return out


class StartMethod:
    """The landmark start alone (landmark + colour fit on the aligned crop, no encoder), in the
    images' camera: the baseline an ``image+start`` encoder must improve on."""

    name = "start"

    def __init__(self, face_model, preparer):
        self.face_model, self.preparer = face_model, preparer

    @torch.no_grad()
    def __call__(self, images, landmarks, landmark_conf, intrinsics) -> Reconstruction:
        inputs = self.preparer(images, landmarks, intrinsics)
        params = rotate_camera(inputs.start, -inputs.angle)
        base_g, base_r = self.face_model.base(params.shape, params.expression, params.reflectance)
        zero = torch.zeros_like(base_g)
        return Reconstruction(params, ModelOutput(base_geometry=base_g, final_geometry=base_g, base_reflectance=base_r,
                                                  final_reflectance=base_r, geometry_corrective=zero,
                                                  reflectance_corrective=zero))
