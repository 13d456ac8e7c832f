"""The static base level of the multi-level model (Sec. 4.1): an affine geometry and reflectance model.

Layout and units (every source is converted to this at load; see ``docs/face_models.md``):

* model space of ``docs/conventions.md``: millimetres, x to image right, y down, z away from the
  camera, origin near the head centre;
* ``mean_geometry`` [N, 3]; ``shape_basis`` [N, 3, m_s]; ``expression_basis`` [N, 3, m_e] (mm per
  coefficient unit). The per-vertex layout means ``basis.view(3N, m)`` is the x0 y0 z0 x1 ... stacking of
  the paper's 3N vectors, and ``basis[landmarks]`` picks landmark rows directly;
* ``mean_reflectance`` [N, 3] in [0, 1] (linear RGB); ``reflectance_basis`` [N, 3, m_r];
* ``*_sigma``: the standard deviation of each coefficient, so that E_std = sum_k (alpha_k / sigma_k)^2
  (Eq. 11). Our builders and converters store bases scaled to one standard deviation per coefficient
  unit, i.e. all sigmas are 1; a model with other sigmas is still valid.
* ``triangles`` [F, 3] int32, counter-clockwise seen from outside (normal (v1-v0)x(v2-v0) points out
  of the head, i.e. toward -z on the front of the face);
* ``neighbour_offsets`` [N+1] / ``neighbour_indices`` [nnz] int32: 1-ring CSR (Eq. 12, 13);
* ``landmarks`` [68] int32 vertex indices in iBUG 300-W order;
* ``contour_offsets`` [18] / ``contour_indices`` int32: CSR of candidate vertices each jaw landmark
  0-16 may slide over (Fig. 2, left), ordered from the face's inside outwards;
* ``skin_mask`` [N] bool: skin without facial-hair regions (Fig. 2, right; Eq. 14).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..common.checks import check_indices, check_tensor

N_LANDMARKS = 68
N_JAW = 17

_FLOAT_FIELDS = (
    "mean_geometry", "shape_basis", "shape_sigma", "expression_basis", "expression_sigma",
    "mean_reflectance", "reflectance_basis", "reflectance_sigma",
)
_INT_FIELDS = ("triangles", "neighbour_offsets", "neighbour_indices", "landmarks", "contour_offsets", "contour_indices")


@dataclass
class FaceModel:
    """Plain container of the base model's tensors (see the module docstring for layouts and units).

    Construct with every field; :meth:`validate` (run by the constructor) raises a ``ValueError``
    naming the field for a wrong shape, dtype, non-finite value or out-of-range index.
    """

    mean_geometry: torch.Tensor
    shape_basis: torch.Tensor
    shape_sigma: torch.Tensor
    expression_basis: torch.Tensor
    expression_sigma: torch.Tensor
    mean_reflectance: torch.Tensor
    reflectance_basis: torch.Tensor
    reflectance_sigma: torch.Tensor
    triangles: torch.Tensor
    neighbour_offsets: torch.Tensor
    neighbour_indices: torch.Tensor
    landmarks: torch.Tensor
    contour_offsets: torch.Tensor
    contour_indices: torch.Tensor
    skin_mask: torch.Tensor

    def __post_init__(self):
        self.validate()

    # ---- sizes ---------------------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return self.mean_geometry.shape[0]

    @property
    def n_triangles(self) -> int:
        return self.triangles.shape[0]

    @property
    def m_shape(self) -> int:
        return self.shape_basis.shape[2]

    @property
    def m_expression(self) -> int:
        return self.expression_basis.shape[2]

    @property
    def m_reflectance(self) -> int:
        return self.reflectance_basis.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.mean_geometry.dtype

    @property
    def device(self) -> torch.device:
        return self.mean_geometry.device

    # ---- checks --------------------------------------------------------------------------------------
    def validate(self) -> "FaceModel":
        """Check every field's type, shape, dtype, finiteness and index range; return ``self``."""
        for name in _FLOAT_FIELDS + _INT_FIELDS + ("skin_mask",):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ValueError(f"{name}: expected a torch.Tensor, got {type(getattr(self, name)).__name__}")
        n = self.mean_geometry.shape[0] if self.mean_geometry.ndim == 2 else -1
        check_tensor("mean_geometry", self.mean_geometry, shape=(None, 3), min_size=3)
        dt = self.mean_geometry.dtype
        for name in ("shape", "expression", "reflectance"):
            basis = getattr(self, f"{name}_basis")
            check_tensor(f"{name}_basis", basis, shape=(n, 3, None), dtypes=(dt,))
            check_tensor(f"{name}_sigma", getattr(self, f"{name}_sigma"), shape=(basis.shape[2],), dtypes=(dt,))
            if not bool((getattr(self, f"{name}_sigma") > 0).all()):
                raise ValueError(f"{name}_sigma: standard deviations must be positive")
        check_tensor("mean_reflectance", self.mean_reflectance, shape=(n, 3), dtypes=(dt,))
        check_indices("triangles", self.triangles, n, shape=(None, 3))
        if self.triangles.shape[0] == 0:
            raise ValueError("triangles: the mesh has no triangles")
        self._validate_csr("neighbour", n + 1, n)
        check_indices("landmarks", self.landmarks, n, shape=(N_LANDMARKS,))
        self._validate_csr("contour", N_JAW + 1, n)
        check_tensor("skin_mask", self.skin_mask, shape=(n,), dtypes=(torch.bool,), finite=False)
        return self

    def _validate_csr(self, prefix: str, n_offsets: int, n: int) -> None:
        offsets, indices = getattr(self, f"{prefix}_offsets"), getattr(self, f"{prefix}_indices")
        check_tensor(f"{prefix}_offsets", offsets, shape=(n_offsets,), dtypes=(torch.int32,), finite=False)
        check_indices(f"{prefix}_indices", indices, n, shape=(None,))
        if int(offsets[0]) != 0 or int(offsets[-1]) != indices.shape[0] or bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError(
                f"{prefix}_offsets: must start at 0, never decrease and end at len({prefix}_indices)="
                f"{indices.shape[0]}, got {offsets[0].item()}..{offsets[-1].item()}"
            )

    # ---- conversion ----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def apply(self, fn) -> "FaceModel":
        """A new model with ``fn`` applied to every tensor (used by ``nn.Module._apply``)."""
        return FaceModel(**{k: fn(v) for k, v in self.tensors().items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "FaceModel":
        """Move to ``device`` and cast the float fields to ``dtype`` (index and mask fields keep theirs)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return self.apply(move)

    # ---- evaluation ----------------------------------------------------------------------------------
    def base(
        self, shape: torch.Tensor, expression: torch.Tensor, reflectance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Base-level geometry and reflectance (Eq. 3, 4) for a batch: ([B, N, 3] mm, [B, N, 3]).

        ``shape`` [B, m_s], ``expression`` [B, m_e], ``reflectance`` [B, m_r]: coefficients of the stored
        bases, whose prior standard deviations are the ``*_sigma`` fields (all 1 for our builders).
        Differentiable with respect to the coefficients (and to the model tensors, if they require it).
        """
        b = check_tensor("shape", shape, shape=(None, self.m_shape), dtypes=(self.dtype,), contiguous=False).shape[0]
        check_tensor("expression", expression, shape=(b, self.m_expression), dtypes=(self.dtype,), contiguous=False)
        check_tensor("reflectance", reflectance, shape=(b, self.m_reflectance), dtypes=(self.dtype,), contiguous=False)
        return self.geometry(shape, expression), self.reflectance(reflectance)

    def geometry(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """``a_g + S alpha_s + E alpha_e`` as [B, N, 3] (no input checks; :meth:`base` checks)."""
        # Dense basis products go through torch matmul (BLAS): measured, Taichi autodiff of a BFM-sized
        # basis product was ~50x slower than its forward and segfaulted, while addmm's backward is
        # just two more GEMMs.
        n3 = 3 * self.n_vertices
        g = torch.addmm(self.mean_geometry.reshape(1, n3), shape, self.shape_basis.reshape(n3, -1).T)
        g = torch.addmm(g, expression, self.expression_basis.reshape(n3, -1).T)
        return g.view(-1, self.n_vertices, 3)

    def reflectance(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``a_r + R beta`` as [B, N, 3] (no input checks; :meth:`base` checks)."""
        n3 = 3 * self.n_vertices
        r = torch.addmm(self.mean_reflectance.reshape(1, n3), coefficients, self.reflectance_basis.reshape(n3, -1).T)
        return r.view(-1, self.n_vertices, 3)

    def contour(self, j: int) -> torch.Tensor:
        """Candidate vertex indices of jaw landmark ``j`` (0-16), from the inside outwards."""
        if not 0 <= j < N_JAW:
            raise ValueError(f"j: jaw landmark index must be in [0, {N_JAW}), got {j}")
        return self.contour_indices[int(self.contour_offsets[j]) : int(self.contour_offsets[j + 1])]

    def __repr__(self) -> str:
        return (
            f"FaceModel(n_vertices={self.n_vertices}, n_triangles={self.n_triangles}, m_shape={self.m_shape}, "
            f"m_expression={self.m_expression}, m_reflectance={self.m_reflectance}, dtype={self.dtype}, "
            f"device={self.device})"
        )
