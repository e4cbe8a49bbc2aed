"""Inference behaviour for a block: what every reader of a model or dictionary wraps its forward passes in.

A dictionary in training mode may act differently (batch top-k picks its own cut-off per batch
instead of its learned threshold), so analysis, evaluation and prompts run it in eval mode and
hand it back as they found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode within the block (batch top-k uses its threshold), restored after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
