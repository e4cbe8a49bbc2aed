"""Hand-written CPU training kernels, beside the plain autograd computation they replace.

Every kernel here gives the values and gradients of the plain computation in the dictionary
modules (tests pin them against it); they exist because on a 2-core CPU they are 2-4x faster.
Architectures ask :func:`serves` once per step and otherwise run plain autograd, which stays
the reference:

- ``topk``: one dense encoder GEMM, then everything over the selected latents (k per row, or
  BatchTopK's k * rows of the whole batch);
- ``relu``: the ReLU autoencoder with a sparse path once few codes are active;
- ``jumprelu``: the same with per-latent thresholds and their straight-through gradients;
- ``sparse``: the sums and sampled products over active entries both use;
- ``scratch``: a reuse pool for the large per-step buffers;
- ``adam``: Adam over contiguous aliases of F-major parameters (see :func:`f_major`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["f_major", "serves"]


def serves(x: Tensor, enabled: bool = True) -> bool:
    """Whether the kernels handle a step on ``x``: CPU float32/float64 (written and measured there)."""
    return enabled and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def f_major(W_DF: Tensor) -> Tensor:
    """A copy of ``W_DF [D, F]`` stored F-major (stride ``(1, D)``): the transpose of a contiguous ``[F, D]``.

    The encoder is kept in this layout on purpose: the encoder GEMM and top-k's sparse ``dW_enc``
    then need no transposed copies, and :class:`.adam.Adam` updates it through its contiguous
    transpose.
    """
    return W_DF.T.clone(memory_format=torch.contiguous_format).T  # a copy even when already F-major
