"""How a training run goes: one small frozen dataclass, saved with every checkpoint and result.

Defaults that depend on the run's length (warm-ups, the dead-latent window) are ``None`` and
resolved against the number of steps, so a short test run and a billion-token run both get
sensible schedules from the same config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import MonosemanticError

B_DEC_INITS = ("geometric_median", "mean", "zeros")

# Fields that change nothing about the trained weights, so a resumed run may change them.
RESUME_FREE = frozenset({"log_every", "checkpoint_every", "wandb_project", "device"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run (every dictionary of a Trainer shares it)."""

    total_tokens: int  # rows to train on; steps = total_tokens // batch_size
    batch_size: int = 4096  # rows per optimizer step (the global batch under torchrun)
    lr: float = 4e-4  # Adam learning rate (Trainer's ``lrs`` overrides it per dictionary)
    lr_warmup_steps: int | None = None  # linear 0 -> lr; None: min(1000, 5% of steps)
    lr_decay_start: float = 0.8  # fraction of the run after which lr decays linearly to 0
    sparsity_warmup_steps: int | None = None  # sparsity coefficient ramps 0 -> 1; None: 5% of steps
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas
    # Each dictionary's gradient is clipped to this global norm (None: off), as dictionary_learning's
    # trainers do. In the normalised space (E||x||^2 = d) the clip acts at practically every step
    # (clipping at 0.1 trained the same FVU), so Adam sees evened-out steps over the whole run;
    # see benchmarks/README.md (recipes.py) for what it gains.
    grad_clip: float | None = 1.0
    b_dec_init: str = "geometric_median"  # decoder bias from the first rows: geometric_median, mean or zeros
    normalize_activations: bool = True  # train on x * sqrt(d)/mean||x||, folded back into saved weights
    resample_every: int | None = None  # steps between dead-latent resamplings (Bricken et al. 2023); None: off
    # Rows without firing that make a latent dead (for AuxK, resampling, metrics); None: auto.
    dead_after_tokens: int | None = None
    log_every: int = 100  # steps between metrics records
    checkpoint_every: int | None = 1000  # steps between checkpoints (with an out_dir); None: only at the end
    seed: int = 0  # data order and resampling
    device: str = "cpu"  # where dictionaries train: cpu, cuda, cuda:1, auto
    wandb_project: str | None = None  # also log to Weights & Biases (needs wandb installed)

    def __post_init__(self) -> None:
        _integer("total_tokens", self.total_tokens, 1)
        _integer("batch_size", self.batch_size, 1)
        if self.total_tokens < self.batch_size:
            raise MonosemanticError(f"train total_tokens={self.total_tokens} is less than one batch "
                                    f"({self.batch_size} rows); raise total_tokens or lower batch_size")
        _number("lr", self.lr, low_open=True)
        _optional_integer("lr_warmup_steps", self.lr_warmup_steps, 0)
        _number("lr_decay_start", self.lr_decay_start, high=1.0)
        _optional_integer("sparsity_warmup_steps", self.sparsity_warmup_steps, 0)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2):
            raise MonosemanticError(f"train betas={self.betas!r} is invalid; expected two numbers, e.g. (0.9, 0.999)")
        for beta in betas:
            _number("betas", beta, high=1.0, high_open=True)
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, low_open=True)
        if self.b_dec_init not in B_DEC_INITS:
            raise MonosemanticError(f"train b_dec_init={self.b_dec_init!r} is unknown; expected one of "
                                    f"{', '.join(B_DEC_INITS)}")
        if not isinstance(self.normalize_activations, bool):
            raise MonosemanticError(f"train normalize_activations={self.normalize_activations!r} is invalid; "
                                    "expected true or false")
        _optional_integer("resample_every", self.resample_every, 2)
        _optional_integer("dead_after_tokens", self.dead_after_tokens, 1)
        _integer("log_every", self.log_every, 1)
        _optional_integer("checkpoint_every", self.checkpoint_every, 1)
        _integer("seed", self.seed, 0)
        for name in ("device", "wandb_project"):
            value = getattr(self, name)
            if not (isinstance(value, str) or (value is None and name == "wandb_project")):
                raise MonosemanticError(f"train {name}={value!r} is invalid; expected a string")

    # ----- values resolved against the run's length ----------------------------------------

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size

    @property
    def warmup_steps(self) -> int:
        if self.lr_warmup_steps is not None:
            return self.lr_warmup_steps
        return min(1000, math.ceil(0.05 * self.total_steps))

    @property
    def sparsity_warmup(self) -> int:
        if self.sparsity_warmup_steps is not None:
            return self.sparsity_warmup_steps
        return math.ceil(0.05 * self.total_steps)

    @property
    def dead_window(self) -> int:
        """Rows without firing after which a latent is dead: the one definition behind AuxK, resampling
        and the logged dead fraction."""
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        # 10M rows is the usual window (Gao et al. 2024); a short run gets a fifth of its length,
        # so that AuxK and the dead fraction act within it.
        window = min(10_000_000, self.total_tokens // 5)
        if self.resample_every is not None:
            # Bricken et al. 2023: silent over the last half of the interval between resamplings.
            window = min(window, self.resample_every // 2 * self.batch_size)
        return max(self.batch_size, window)

    # ----- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "train config") -> TrainConfig:
        if not isinstance(data, dict):
            raise MonosemanticError(f"{where} must be a JSON object; got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MonosemanticError(f"{where} has unknown field(s) {', '.join(unknown)}; expected some of "
                                    f"{', '.join(sorted(names))}; check the spelling")
        if "total_tokens" not in data:
            raise MonosemanticError(f"{where} lacks total_tokens; pass e.g. total_tokens=10_000_000")
        return cls(**data)

    def differences(self, other: TrainConfig) -> list[str]:
        """``name=mine vs other`` for every field that would change the trained weights."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{name}={mine[name]!r} vs {theirs[name]!r}" for name in mine
                if name not in RESUME_FREE and mine[name] != theirs[name]]


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MonosemanticError(f"train {name}={value!r} is invalid; expected an integer >= {low}")


def _optional_integer(name: str, value, low: int) -> None:
    if value is not None:
        _integer(name, value, low)


def _number(name: str, value, *, low_open: bool = False, high: float = math.inf, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < high if high_open else value <= high)
    if not ok:
        bound = ("> 0" if low_open else ">= 0") + ("" if high == math.inf else f" and {'<' if high_open else '<='} "
                                                                              f"{high:g}")
        raise MonosemanticError(f"train {name}={value!r} is invalid; expected a number {bound}")
