"""The geometric median, a robust centre used to initialise the decoder bias (Bricken et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points_ND: Tensor, iters: int = 50, tol: float = 1e-6) -> Tensor:
    """The point minimising the summed Euclidean distance to ``points``, by Weiszfeld iterations.

    Starts at the mean; each step is the mean weighted by inverse distance. A few dozen steps
    suffice for initialisation; it stops early once a step moves less than ``tol`` (relative).
    """
    points_ND = points_ND.float()
    median_D = points_ND.mean(0)
    for _ in range(iters):
        # The floor keeps a point that coincides with the estimate from getting infinite weight.
        weights_N = 1.0 / (points_ND - median_D).norm(dim=1).clamp_min(1e-8)
        new_D = (weights_N[:, None] * points_ND).sum(0) / weights_N.sum()
        moved = (new_D - median_D).norm()
        median_D = new_D
        if moved <= tol * max(1.0, float(median_D.norm())):
            break
    return median_D
