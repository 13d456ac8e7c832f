"""Learnable corrective spaces F(delta | Theta): R^C -> R^{3N} (Sec. 4.2), as ``nn.Module``s.

Both map ``delta`` [B, C] to per-vertex offsets [B, N, 3] and satisfy F(0) = 0, so the final level
equals the base level when the corrective coefficients are zero. Theta is the module's parameters; it
is trained jointly with the encoder and saved in checkpoints (``state_dict``), never in the base model.

Initialisation: small random Theta (std ``init_std``). All-zero Theta would give delta no gradient
(dF/ddelta = Theta) while delta ~ 0 gives Theta almost none (dF/dTheta = delta): a saddle that slows
the start. With a small random Theta both get gradient from the first step, and the corrections
start negligible (offset std = init_std * sqrt(C) * std(delta), e.g. 0.2 mm for the defaults).
"""
from __future__ import annotations

import torch
from torch import nn

from ..common.checks import check_tensor


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


class LinearCorrective(nn.Module):
    """Linear corrective: offsets = Theta delta, Theta [3N, C] (x0 y0 z0 x1 ... rows), as in the paper.

    The paper found the linear space best (Fig. 5) and uses C = 500.
    """

    def __init__(self, n_vertices: int, n_components: int = 500, init_std: float = 1e-2, seed: int | None = 0):
        super().__init__()
        if n_vertices < 1 or n_components < 1:
            raise ValueError(f"n_vertices and n_components must be positive, got {n_vertices}, {n_components}")
        self.n_vertices = int(n_vertices)
        self.n_components = int(n_components)
        theta = torch.randn(3 * n_vertices, n_components, generator=_generator(seed)) * init_std
        self.theta = nn.Parameter(theta)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` [B, C] -> offsets [B, N, 3] (differentiable in delta and Theta)."""
        check_tensor("delta", delta, shape=(None, self.n_components), dtypes=(self.theta.dtype,), contiguous=False)
        return (delta @ self.theta.T).view(-1, self.n_vertices, 3)

    def extra_repr(self) -> str:
        return f"n_vertices={self.n_vertices}, n_components={self.n_components}"


class MLPCorrective(nn.Module):
    """Non-linear corrective (the Fig. 5 option): a small bias-free MLP delta -> offsets.

    ``delta`` [B, C] -> Linear(C, h1) -> ELU -> ... -> Linear(h_last, 3N). No biases and an activation
    with act(0) = 0 keep F(0) = 0 exactly. The output layer (the big [3N, h_last] matrix, the analogue
    of the linear Theta) starts small (std ``init_std``); hidden layers use PyTorch's default init.
    """

    def __init__(
        self,
        n_vertices: int,
        n_components: int = 500,
        hidden: tuple[int, ...] = (256,),
        init_std: float = 1e-2,
        seed: int | None = 0,
    ):
        super().__init__()
        if n_vertices < 1 or n_components < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"sizes must be positive, got n_vertices={n_vertices}, C={n_components}, hidden={hidden}")
        self.n_vertices = int(n_vertices)
        self.n_components = int(n_components)
        g = _generator(seed)
        layers: list[nn.Module] = []
        width = n_components
        for h in hidden:
            lin = nn.Linear(width, h, bias=False)
            bound = 1.0 / width**0.5  # PyTorch's default range, drawn from our seeded generator
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=g)
            layers += [lin, nn.ELU()]
            width = h
        out = nn.Linear(width, 3 * n_vertices, bias=False)
        with torch.no_grad():
            out.weight.normal_(0.0, init_std, generator=g)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` [B, C] -> offsets [B, N, 3]."""
        check_tensor("delta", delta, shape=(None, self.n_components), dtypes=(self.net[0].weight.dtype,), contiguous=False)
        return self.net(delta).view(-1, self.n_vertices, 3)

    def extra_repr(self) -> str:
        return f"n_vertices={self.n_vertices}, n_components={self.n_components}"
