"""Dense bases truncated to a sparse budget, for the sparsity-reconstruction frontier.

Neurons, PCA and ICA reconstruct exactly with every coordinate, so their FVU is 0 at an L0
of the full width: no comparison with a dictionary at L0 32. Kept to the ``k`` largest
coordinates of each row (by magnitude, the rest zeroed, then decoded), they trace a curve of
FVU against L0 on which a dictionary's point can be read: below it, the dictionary
reconstructs better than the basis does with as many active coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..models import eval_mode


@torch.inference_mode()
def truncated_curve(basis: Dictionary, acts_ND: Tensor, l0s, *, batch_size: int = 4096
                    ) -> tuple[tuple[int, float], ...]:
    """``((l0, fvu), ...)``: FVU of ``basis`` keeping each row's ``l0`` largest-magnitude codes."""
    kept = sorted({int(k) for k in l0s if 1 <= int(k) <= basis.d_sae})
    errors = {k: 0.0 for k in kept}
    mean_D = acts_ND.double().mean(0)
    total = float(((acts_ND.double() - mean_D) ** 2).sum())
    device = basis.W_dec.device
    with eval_mode(basis):
        for start in range(0, acts_ND.shape[0], batch_size):
            x_BD = acts_ND[start:start + batch_size].to(device, basis.W_dec.dtype)
            codes_BF = basis.encode(x_BD)
            order_BF = codes_BF.abs().argsort(dim=1, descending=True)
            for k in kept:
                sparse_BF = torch.zeros_like(codes_BF).scatter_(1, order_BF[:, :k], codes_BF.gather(1, order_BF[:, :k]))
                errors[k] += float(((basis.decode(sparse_BF) - x_BD).double() ** 2).sum())
    return tuple((k, errors[k] / total if total > 0 else float("nan")) for k in kept)


def budgets(width: int) -> list[int]:
    """Powers of two from 1 up to ``width`` (and ``width`` itself)."""
    out, k = [], 1
    while k < width:
        out.append(k)
        k *= 2
    return out + [width]
