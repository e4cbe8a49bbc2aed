"""Learning-rate and sparsity schedules as pure functions of the step.

Being functions of the step alone, they need no state in a checkpoint: a resumed run gets
exactly the values an uninterrupted one would.
"""

from __future__ import annotations

from .config import TrainConfig


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base lr for the update made at ``step`` (0-based).

    Linear warm-up over ``warmup_steps``, constant, then linear decay that reaches 0 just after
    the last step (so that the final updates are small and the end weights are settled).
    """
    total, warmup = config.total_steps, config.warmup_steps
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    decay_start = int(config.lr_decay_start * total)
    if step >= decay_start and total > decay_start:
        factor = min(factor, (total - step) / (total - decay_start))
    return factor


def sparsity_scale(step: int, config: TrainConfig) -> float:
    """The sparsity coefficient's warm-up multiplier in [0, 1] (Conerly et al. 2024)."""
    warmup = config.sparsity_warmup
    return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)
