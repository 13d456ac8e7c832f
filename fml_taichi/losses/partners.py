"""Random partner pairs for the global reflectance constancy term E_glo (Eq. 14)."""
from __future__ import annotations

import torch

from ..common.checks import check_tensor


def draw_partners(mask: torch.Tensor, count: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """For every masked point, ``count`` partners drawn uniformly (with replacement) from the mask.

    The draw uses its own ``torch.Generator`` seeded with ``seed``, so the same mask and seed always
    give the same pairs: the set G_i of Eq. 14 is fixed per model, not redrawn per step. A point may
    draw itself; that pair contributes 0 to E_glo.

    Args:
        mask: (N,) bool, the skin region M.
        count: partners per masked point (the paper uses 6).
        seed: generator seed.

    Returns:
        ``(src, dst)``: (|M| * count,) int32 each; ``src`` repeats each masked index ``count`` times.

    Raises:
        ValueError: ``mask`` not a 1-D bool tensor, empty mask, or ``count < 1``.
    """
    check_tensor("mask", mask, shape=(None,), dtypes=(torch.bool,), finite=False, contiguous=False)
    if int(count) != count or count < 1:
        raise ValueError(f"count: expected a positive integer, got {count}")
    members = torch.nonzero(mask.cpu()).flatten()
    if members.numel() == 0:
        raise ValueError("mask: selects no points (E_glo needs a non-empty skin mask)")
    gen = torch.Generator().manual_seed(int(seed))
    pick = torch.randint(0, members.numel(), (members.numel() * int(count),), generator=gen)
    src = members.repeat_interleave(int(count))
    dst = members[pick]
    return src.to(torch.int32).to(mask.device), dst.to(torch.int32).to(mask.device)
