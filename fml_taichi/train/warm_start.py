"""Data-driven warm start of the reflectance corrective (between stage 1 and stage 2).

Why: stage 2 starts the corrective basis Theta_r as small random noise and the corrective heads at
zero. On a long GPU run both are learned from scratch as in the paper; in a few CPU minutes they
barely move before the budget ends (measured: the final level's photometric error stays at the
base level's). The warm start replaces the noise with directions the training images actually need:

1. Run the stage-1 encoder over ``n`` training images (no gradients). For every visible vertex the
   image formation model (Eq. 5) says ``I(u_i) = r_i * s_i`` (reflectance times SH shading), so the
   reflectance the image asks for is ``r*_i = I(u_i) / s_i``, and ``r*_i - r^b_i`` is what the base
   level could not explain. Invisible or badly lit vertices (shading < 0.05) contribute 0.
2. The residuals are projected off the span of SH shading on the mean face (:func:`shading_span`:
   shading is the light's job, not the reflectance's). The principal components (uncentred SVD) of
   these per-image residual fields [n, 3N] become
   Theta_r's C columns, scaled so that their coefficients have unit variance over the images.
3. The reflectance corrective head starts at the ridge-regression map from the encoder's features
   to those coefficients (regularisation chosen by generalised cross-validation on the same images).

Everything is computed from training images and the model's own predictions with the same image
formation the loss uses: no ground truth, so training stays self-supervised. Stage 2 then trains
Theta_r and the head with the full E_total as usual.
"""
from __future__ import annotations

import torch

from ..model import mesh as mesh_utils
from ..recon.corrective_fit import reflectance_residuals as _level_residuals
from ..reference.image_formation import sh_basis


#: ``model.reflectance_shading_span`` values: none, or the span :func:`shading_span` builds.
SHADING_SPANS = ("none", "grey", "rgb")


@torch.no_grad()
def reflectance_residuals(model, face_model, images: torch.Tensor, intrinsics, start=None):
    """Per-vertex reflectance residuals [B, N, 3] of the base level and what the heads read [B, F]
    (the encoder features, and the start's z beside them; ``start``: the start's z for an ``image+start`` encoder)."""
    enc = model.encoder
    feats = enc.backbone(enc.preprocess(images.permute(0, 3, 1, 2)))
    if enc.takes_start:  # the heads read the start's z beside the image features
        feats = torch.cat([feats, start.to(feats.dtype)], 1)
    params, out = model(images, start)
    resid, _ = _level_residuals(face_model, out.base_geometry, out.base_reflectance, params, images, intrinsics)
    return resid, feats


def principal_basis(x: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncentred PCA of rows ``x`` [n, D]: (basis [D, c], coefficients [n, c] with unit mean square).

    ``x ~= coefficients @ basis.T``; fewer than ``c`` informative rows leave the extra columns 0.
    """
    n = x.shape[0]
    u, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    k = min(c, s.shape[0])
    basis = torch.zeros(x.shape[1], c, dtype=torch.float64)
    coef = torch.zeros(n, c, dtype=torch.float64)
    basis[:, :k] = vh[:k].T * (s[:k] / n ** 0.5)
    coef[:, :k] = u[:, :k] * n ** 0.5
    return basis.float(), coef.float()


def ridge_gcv(features: torch.Tensor, targets: torch.Tensor, lambdas=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ridge regression ``targets ~ features @ W + b`` with lambda picked by generalised
    cross-validation; returns (W [F, c], b [c], lambda)."""
    f = features.double()
    y = targets.double()
    mu, ym = f.mean(0), y.mean(0)
    fc, yc = f - mu, y - ym
    u, s, vh = torch.linalg.svd(fc, full_matrices=False)
    uty = u.T @ yc
    n = f.shape[0]
    scale = float((s ** 2).mean()) if s.numel() else 1.0
    lambdas = lambdas or [scale * 10.0 ** e for e in range(-4, 3)]
    best = None
    for lam in lambdas:
        shrink = s ** 2 / (s ** 2 + lam)
        fit = u @ (shrink[:, None] * uty)
        dof = float(shrink.sum())
        gcv = float(((yc - fit) ** 2).sum()) / max(n - dof, 1e-9) ** 2
        if best is None or gcv < best[0]:
            best = (gcv, lam)
    lam = best[1]
    w = vh.T @ ((s / (s ** 2 + lam))[:, None] * uty)
    b = ym - mu @ w
    return w.float(), b.float(), float(lam)


def shading_span(face_model, colours: str = "rgb") -> torch.Tensor:
    """An orthonormal basis of the fields SH shading paints on the mean face: the 9 SH basis functions
    of its vertex normals, in each colour channel (``colours="rgb"``: [3N, 27], light of any colour) or
    in all channels alike (``"grey"``: [3N, 9], white light).

    A residual ``I / s - r^b`` holds shading wherever the light or the geometry is off; principal
    components taken as they come would bake it into Theta_r (a "reflectance" mode darkening the nose
    side and brightening the forehead, which the light should explain). Residuals are projected off
    this span first, so the reflectance corrective holds colour, not light."""
    if colours not in SHADING_SPANS[1:]:
        raise ValueError(f"colours: expected one of {SHADING_SPANS[1:]}, got {colours!r}")
    v = face_model.mean_geometry.detach().double().cpu().numpy()
    normals = torch.as_tensor(mesh_utils.vertex_normals(v, face_model.triangles.long().cpu().numpy()))
    y = sh_basis(normals.unsqueeze(0))[0].double()  # [N, 9]
    n = y.shape[0]
    if colours == "grey":
        fields = y.unsqueeze(1).expand(n, 3, 9)
    else:
        fields = torch.zeros(n, 3, 9, 3, dtype=torch.float64)
        for c in range(3):
            fields[:, c, :, c] = y
    q, _ = torch.linalg.qr(fields.reshape(3 * n, -1))
    return q


@torch.no_grad()
def warm_start_reflectance(model, face_model, source, n: int, intrinsics, batch_size: int = 16) -> dict:
    """Set Theta_r and the reflectance head from ``n`` items of ``source`` (see the module docstring).

    ``source``: an :class:`~fml_taichi.train.batches.ImagePool` / ``DatasetSource`` (first ``n`` items;
    aligned items bring their cameras and starts).
    Returns a small report (explained fraction, chosen lambda) for the logs.
    """
    corr = model.multilevel.reflectance_corrective
    if not hasattr(corr, "theta"):
        raise ValueError("reflectance warm start needs a linear reflectance corrective (model.kind 'linear')")
    was_training = model.training
    model.eval()
    try:
        n = min(int(n), len(source))
        resid, feats = [], []
        for start in range(0, n, batch_size):
            batch = source.batch(torch.arange(start, min(start + batch_size, n)))
            k = batch.get("intrinsics", intrinsics)  # aligned crops carry their own cameras
            r, f = reflectance_residuals(model, face_model, batch["image"], k, batch.get("start"))
            resid.append(r.reshape(r.shape[0], -1))
            feats.append(f)
        x, feats = torch.cat(resid), torch.cat(feats)
        q = shading_span(face_model).to(x.dtype)
        x = x - (x @ q) @ q.T
        c = corr.n_components
        basis, coef = principal_basis(x, c)
        w, b, lam = ridge_gcv(feats, coef)
        corr.theta.data.copy_(basis.to(corr.theta))
        head = model.encoder.head_reflectance
        scale = model.encoder.codec.scales.corrective_scale
        head.weight.data.copy_((w.T / scale).to(head.weight))
        head.bias.data.copy_((b / scale).to(head.bias))
        total = float((x.double() ** 2).sum())
        explained = float(((coef @ basis.T).double() ** 2).sum()) / total if total > 0 else 0.0
    finally:
        model.train(was_training)
    return {"warm_start_images": n, "warm_start_explained": explained, "warm_start_lambda": lam}


# ---- geometry (synthetic 3D supervision, ``stage2.geometry_warm_start``) ----------------------------


@torch.no_grad()
def head_features(model, images: torch.Tensor, start=None) -> torch.Tensor:
    """What the corrective heads read [B, F]: the encoder features, and the start's z beside them."""
    enc = model.encoder
    feats = enc.backbone(enc.preprocess(images.permute(0, 3, 1, 2)))
    if enc.takes_start:
        feats = torch.cat([feats, start.to(feats.dtype)], 1)
    return feats


@torch.no_grad()
def true_geometry_residuals(geometry: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """[B, N, 3]: the true mesh mapped into each predicted mesh's frame (similarity over ``region``, as the
    evaluation aligns) minus the prediction; 0 outside ``region`` (ears, neck: unscored, unconstrained)."""
    from ..losses.teacher import similarity_to

    region = torch.as_tensor(region, dtype=torch.bool)
    g, t = geometry.double(), truth.double()
    s, rot, tr = similarity_to(t[:, region], g[:, region])
    aligned = s[:, None, None] * (t @ rot.transpose(1, 2)) + tr[:, None, :]
    return ((aligned - g) * region[None, :, None]).to(geometry.dtype)


@torch.no_grad()
def warm_start_geometry(model, face_model, source, n: int, region, batch_size: int = 16) -> dict:
    """Set Theta_g and the geometry head from the true geometry of ``n`` items of ``source`` (a pool
    built with ``truth=True``): synthetic 3D supervision, not the paper's self-supervision.

    Like :func:`warm_start_reflectance` with the residual the ground truth gives: ``truth - base``
    (:func:`true_geometry_residuals`, the stage-1 model's base level). For a smooth corrective
    (``Theta_g = E W``) the residuals are first fitted in the K smooth functions by least squares over
    the region, and W is their principal components; for a free one Theta_g is the principal
    components of the region's residuals. The head starts at the ridge map from the features to the
    coefficients. Returns a report (explained fraction of the residual energy in the span, lambda)."""
    corr = model.multilevel.geometry_corrective
    region = torch.as_tensor(region, dtype=torch.bool)
    smooth = hasattr(corr, "basis")
    if not (smooth or hasattr(corr, "theta")):
        raise ValueError("geometry warm start needs a linear geometry corrective (model.kind 'linear')")
    was_training = model.training
    model.eval()
    try:
        n = min(int(n), len(source))
        rows, feats, energy = [], [], 0.0
        if smooth:
            e_region = corr.basis[region].double()
            solve = torch.linalg.pinv(e_region)  # [K, R]: least squares in the smooth span
        for s0 in range(0, n, batch_size):
            batch = source.batch(torch.arange(s0, min(s0 + batch_size, n)))
            if "gt_vertices" not in batch:
                raise ValueError("geometry warm start: the training source holds no true geometry "
                                 "(a synthetic pool built with truth=True)")
            _, out = model(batch["image"], batch.get("start"))
            r = true_geometry_residuals(out.base_geometry, batch["gt_vertices"], region).double()
            energy += float(r.square().sum())
            rows.append((solve @ r[:, region]).reshape(r.shape[0], -1) if smooth else r.reshape(r.shape[0], -1))
            feats.append(head_features(model, batch["image"], batch.get("start")))
        x, feats = torch.cat(rows), torch.cat(feats)
        c = corr.n_components
        basis, coef = principal_basis(x, c)
        w, b, lam = ridge_gcv(feats, coef)
        if smooth:
            corr.weight.data.copy_(basis.reshape(corr.weight.shape).to(corr.weight))
            fitted = torch.einsum("rk,bkj->brj", e_region, (coef.double() @ basis.double().T).reshape(n, -1, 3))
        else:
            corr.theta.data.copy_(basis.to(corr.theta))
            fitted = (coef.double() @ basis.double().T).reshape(n, -1, 3)[:, region]
        head = model.encoder.head_geometry
        scale = model.encoder.codec.scales.corrective_scale
        head.weight.data.copy_((w.T / scale).to(head.weight))
        head.bias.data.copy_((b / scale).to(head.bias))
        explained = float(fitted.square().sum()) / energy if energy > 0 else 0.0
    finally:
        model.train(was_training)
    return {"geometry_warm_start_images": n, "geometry_warm_start_explained": explained,
            "geometry_warm_start_lambda": lam}
