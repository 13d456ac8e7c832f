"""Principal directions of a learned corrective space (paper Sec. 4.2), for viewing and figures.

A linear corrective maps coefficients to per-vertex offsets, ``F(delta | Theta) = Theta delta`` with
``Theta`` a ``[3N, C]`` matrix (rows in the x0 y0 z0 x1 ... vertex-major order of the face model's
bases). Its C columns are learned jointly with the regressor, so they are neither orthogonal nor
ordered: column 17 may be a near-copy of column 3 and most of the variation may live in a few
directions. To show what the space can do we use its singular value decomposition

    Theta = U S V^T,   U [3N, K] orthonormal, S [K] descending, V [C, K] orthonormal, K = min(3N, C).

**Mode k** is ``U[:, k] * S[k]``: the offset produced by a unit step of the corrective coefficients
along ``V[:, k]`` (``Theta V[:, k] = U[:, k] S[k]``). Modes are orthogonal in offset space, and
``delta = sum_k c_k V[:, k]`` reaches every offset the corrective can produce.

**Sigma of mode k** (how far one "standard deviation" moves along it), with a set of regressed faces
(corrective coefficients ``deltas`` [M, C] predicted for M images): the standard deviation of the
deltas projected on ``V[:, k]``. Without one we assume unit-variance, uncorrelated deltas, so sigma is 1
and the one-sigma offset of mode k has norm ``S[k]`` (the singular value).

**Order**: by the norm of the one-sigma offset, ``S[k] * sigma[k]``, i.e. by the variance each mode
contributes over the regressed faces (by singular value when no faces are given). A direction the
regressor never uses therefore sinks to the end however large its singular value.

Everything here is plain torch (no Taichi, no display): the viewer and the headless strips call it,
and it is tested on matrices whose SVD is known.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.checks import check_tensor

#: How ``sigma`` was obtained: from regressed faces, or assumed (unit-variance deltas).
SIGMA_FROM_FACES = "std of regressed deltas along V[:, k]"
SIGMA_ASSUMED = "1 (unit-variance deltas assumed; offset norm = singular value)"


@dataclass
class CorrectiveModes:
    """The principal directions of one corrective space, most important first.

    modes [K, N, 3]: offset per unit coefficient step along ``coefficient_directions[:, k]``
        (``U[:, k] * S[k]`` reshaped per vertex; mm for geometry, reflectance units for reflectance).
    coefficient_directions [C, K]: the unit vectors ``V[:, k]`` in corrective-coefficient space.
    singular_values [K]: ``S[k]`` (norm of ``modes[k]``).
    sigma [K]: standard deviation of the coefficients along ``V[:, k]`` (see the module docstring).
    mean [C]: mean regressed coefficient vector (zeros without faces); offsets are shown around it
        only if the caller adds it (the viewer starts from a reconstruction's own delta instead).
    sigma_source: ``SIGMA_FROM_FACES`` or ``SIGMA_ASSUMED``.
    """

    modes: torch.Tensor
    coefficient_directions: torch.Tensor
    singular_values: torch.Tensor
    sigma: torch.Tensor
    mean: torch.Tensor
    sigma_source: str

    @property
    def count(self) -> int:
        """Number of modes K."""
        return self.modes.shape[0]

    @property
    def one_sigma_norm(self) -> torch.Tensor:
        """[K] norm of the offset at +1 sigma along each mode: the ordering key."""
        return self.singular_values * self.sigma

    def coefficients(self, k: int, sigmas: float) -> torch.Tensor:
        """[C] corrective coefficients that move ``sigmas`` standard deviations along mode ``k``."""
        self._check_index(k)
        return self.coefficient_directions[:, k] * (float(sigmas) * self.sigma[k])

    def combine(self, sigmas: torch.Tensor) -> torch.Tensor:
        """[C] coefficients for per-mode amounts ``sigmas`` [k <= K] (in sigma units) added together."""
        check_tensor("sigmas", sigmas, shape=(None,), contiguous=False)
        if sigmas.shape[0] > self.count:
            raise ValueError(f"sigmas: {sigmas.shape[0]} values for only {self.count} modes")
        k = sigmas.shape[0]
        scaled = sigmas.to(self.sigma.dtype) * self.sigma[:k]
        return self.coefficient_directions[:, :k] @ scaled

    def offset(self, k: int, sigmas: float) -> torch.Tensor:
        """[N, 3] offset at ``sigmas`` standard deviations along mode ``k`` (``Theta`` times coefficients)."""
        self._check_index(k)
        return self.modes[k] * (float(sigmas) * self.sigma[k])

    def _check_index(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.count:
            raise ValueError(f"k: mode index must be an int in [0, {self.count}), got {k!r}")


def principal_modes(theta: torch.Tensor, deltas: torch.Tensor | None = None, rtol: float = 1e-6,
                    sign_reference: torch.Tensor | None = None) -> CorrectiveModes:
    """SVD analysis of a linear corrective ``Theta`` [3N, C] (see the module docstring).

    Args:
        theta: [3N, C] float matrix, rows vertex-major (x0 y0 z0 x1 ...). An all-zero matrix (an
            untrained or absent corrective) is allowed and gives zero modes with sigma 0.
        deltas: optional [M, C] corrective coefficients regressed for M >= 2 faces; their spread
            along each ``V[:, k]`` is that mode's sigma. ``None``: sigma = 1 for every mode.
        rtol: singular values below ``rtol * S[0]`` are numerically zero: those modes are kept (so K
            is predictable) but get sigma 0 and sort last.
        sign_reference: optional [3N] (or [N, 3]) direction fixing each mode's arbitrary SVD sign:
            mode k is flipped so that ``<mode k, sign_reference> >= 0`` (e.g. outward vertex normals:
            "+sigma pushes the surface out on average"; all ones: "+sigma is brighter"). Without it,
            or where the product is ~0, the largest-magnitude entry of each mode is made positive.

    Returns:
        :class:`CorrectiveModes` with ``K = min(3N, C)`` modes, most important first. Computed in
        float64 and returned in ``theta``'s dtype. Mode signs follow ``sign_reference`` (SVD signs are
        arbitrary; fixing them keeps figures stable and readable).

    Raises:
        ValueError naming the argument for wrong shapes, non-finite values, a row count that is not a
        multiple of 3, or fewer than 2 regressed faces.
    """
    check_tensor("theta", theta, shape=(None, None), contiguous=False)
    rows, c = theta.shape
    if rows == 0 or c == 0 or rows % 3:
        raise ValueError(f"theta: expected shape (3N, C) with N, C >= 1, got {tuple(theta.shape)}")
    th = theta.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(th, full_matrices=False)
    v = vh.T
    u, v = _fix_signs(u, v, _reference(sign_reference, rows))

    alive = s > rtol * s[0] if bool(s[0] > 0) else torch.zeros_like(s, dtype=torch.bool)
    if deltas is None:
        sigma = alive.to(torch.float64)
        mean = torch.zeros(c, dtype=torch.float64)
        source = SIGMA_ASSUMED
    else:
        check_tensor("deltas", deltas, shape=(None, c), contiguous=False)
        if deltas.shape[0] < 2:
            raise ValueError(f"deltas: need at least 2 regressed faces to measure a spread, got {deltas.shape[0]}")
        d = deltas.detach().to(torch.float64)
        mean = d.mean(dim=0)
        sigma = ((d - mean) @ v).std(dim=0) * alive
        source = SIGMA_FROM_FACES

    # Stable sort: ties (e.g. unit sigmas and equal singular values) keep the SVD's order.
    order = torch.sort(s * sigma, descending=True, stable=True).indices
    u, s, v, sigma = u[:, order], s[order], v[:, order], sigma[order]
    modes = (u * s).T.reshape(-1, rows // 3, 3)
    dt = theta.dtype
    return CorrectiveModes(modes=modes.to(dt).contiguous(), coefficient_directions=v.to(dt).contiguous(),
                           singular_values=s.to(dt), sigma=sigma.to(dt), mean=mean.to(dt), sigma_source=source)


def _reference(ref: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    if ref is None:
        return None
    check_tensor("sign_reference", ref, contiguous=False)
    if ref.numel() != rows:
        raise ValueError(f"sign_reference: expected {rows} values (3N), got shape {tuple(ref.shape)}")
    return ref.detach().reshape(rows).to(torch.float64)


def _fix_signs(u: torch.Tensor, v: torch.Tensor, ref: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip (U[:, k], V[:, k]) pairs: ``<U[:, k], ref> > 0``, or where that is ~0 (or no ``ref``), the
    largest-magnitude entry of U[:, k] positive."""
    idx = u.abs().argmax(dim=0)
    sign = torch.sign(u[idx, torch.arange(u.shape[1])])
    if ref is not None:
        dots = ref @ u
        decided = dots.abs() > 1e-6 * ref.norm()
        sign = torch.where(decided, torch.sign(dots), sign)
    sign[sign == 0] = 1.0
    return u * sign, v * sign


def corrective_matrix(corrective, n_coefficients: int, n_vertices: int, dtype=torch.float32) -> torch.Tensor:
    """The ``[3N, C]`` matrix of a corrective map, measured by evaluating it on unit coefficients.

    ``corrective`` is any callable taking coefficients [B, C] and returning offsets [B, N, 3] (or
    [B, 3N]). Column j is ``F(e_j) - F(0)``: exactly ``Theta`` for the paper's linear corrective (an
    affine bias cancels), and the secant linearisation at 0 of a non-linear one. Measuring instead of
    reading a state-dict key keeps the viewer independent of how the model stores ``Theta``.
    Evaluated in ``dtype``, in chunks so a C = 500, N = 30k model needs no more than ~100 MB at once;
    the differences are taken in float64 and the result is returned in ``dtype``.
    """
    if n_coefficients <= 0:
        raise ValueError(f"n_coefficients: expected a positive int, got {n_coefficients!r}")
    rows = 3 * n_vertices
    cols = []
    with torch.no_grad():
        zero = _as_rows(corrective(torch.zeros(1, n_coefficients, dtype=dtype)), rows, "corrective(0)")
        chunk = max(1, min(n_coefficients, 25_000_000 // max(rows, 1)))
        for start in range(0, n_coefficients, chunk):
            eye = torch.eye(n_coefficients, dtype=dtype)[start:start + chunk]
            cols.append((_as_rows(corrective(eye), rows, "corrective(e_j)") - zero).T)
    return torch.cat(cols, dim=1).to(dtype).contiguous()


def _as_rows(out: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.numel() != out.shape[0] * rows:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name}: expected [B, N, 3] or [B, 3N] offsets with 3N = {rows}, got {shape}")
    return out.reshape(out.shape[0], rows).to(torch.float64)


# ---- Mode metrics: does a geometry mode move the face, does a reflectance mode bake in shading ----
def geometry_mode_rms(modes: CorrectiveModes, region: torch.Tensor, sigmas: float = 3.0) -> torch.Tensor:
    """[K] RMS per-vertex displacement (mm) over ``region`` [N] bool of each mode at ``sigmas`` SDs
    (the same at + and -, the offset being linear)."""
    disp = torch.stack([modes.offset(k, sigmas) for k in range(modes.count)])  # [K, N, 3]
    return disp[:, region].double().norm(dim=-1).pow(2).mean(dim=1).sqrt()


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luminance of linear RGB [..., 3]."""
    return rgb.double() @ torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)


def shading_correlation(modes: CorrectiveModes, shading: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """[K] Pearson correlation, over ``region`` (default all vertices), of each reflectance mode's
    per-vertex luminance with ``shading`` [N] (the mean face's irradiance luminance under the default
    light): near +-1 means the mode paints shading into the albedo."""
    lum = luminance(modes.modes)  # [K, N]
    s = shading.double()
    if region is not None:
        lum, s = lum[:, region], s[region]
    lum = lum - lum.mean(dim=1, keepdim=True)
    s = s - s.mean()
    return (lum @ s) / (lum.norm(dim=1) * s.norm()).clamp_min(1e-12)
