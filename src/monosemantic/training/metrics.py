"""Training metrics: what is recorded every ``log_every`` steps, and where it goes.

One record per dictionary per log step, in ``metrics.jsonl`` (and Weights & Biases when asked):

- ``step``, ``tokens``: updates and rows done, this one included
- ``name``: the dictionary
- ``loss`` and every named term of the architecture's loss (``mse``, ``sparsity``, ``aux``, ...):
  this step's values, before its update, in the training (normalised) space
- ``fvu``: fraction of variance unexplained, mse / the batch's target variance (scale-free)
- ``l0``: mean number of active latents per row
- ``dead_fraction``: share of latents that have not fired for ``dead_window`` rows
- ``lr``, ``sparsity_scale``: the schedules' values at this step

Sums are gathered first and divided last, so under data parallelism the numbers are the
global batch's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..dictionaries import LossOutput
from ..errors import MonosemanticError

METRICS_NAME = "metrics.jsonl"


class BatchSums(NamedTuple):
    """Sums over a batch's rows that add up across processes; ``names`` label the loss terms."""

    names: tuple[str, ...]  # "loss", then the loss's terms in sorted order
    sums: Tensor  # float64 [len(names) + 3 + D]: rows, one per name, l0, sum ||t||^2, then sum t [D]


def batch_sums(out: LossOutput, target: Tensor) -> BatchSums:
    """The step's loss terms, active latents and target moments, summed over rows."""
    with torch.no_grad():
        rows = target.shape[0]
        t_ND = target.reshape(rows, -1).double()
        names = ("loss", *sorted(out.terms))
        terms = torch.stack([out.loss, *(out.terms[n] for n in names[1:])]).detach().double() * rows
        head = torch.cat([t_ND.new_tensor([rows]), terms, out.active_count().double()[None], t_ND.pow(2).sum()[None]])
        return BatchSums(names, torch.cat([head, t_ND.sum(dim=0)]))


def summarize(batch: BatchSums, **fields) -> dict:
    """A metrics record from (globally summed) :func:`batch_sums` plus the given fields."""
    sums, n = batch.sums.cpu(), len(batch.names)
    rows = float(sums[0])
    values = {name: float(v) / rows for name, v in zip(batch.names, sums[1:1 + n])}
    l0 = float(sums[1 + n]) / rows
    mean_D = sums[3 + n:] / rows
    variance = float(sums[2 + n]) / rows - float(mean_D.pow(2).sum())
    fvu = values["mse"] / variance if variance > 0 else math.nan
    return {**fields, **values, "fvu": fvu, "l0": l0}


class MetricsLog:
    """Appends records to ``out_dir/metrics.jsonl`` and, optionally, to a wandb run."""

    def __init__(self, out_dir: Path | None, wandb_project: str | None, run_config: dict):
        self.path = None if out_dir is None else Path(out_dir) / METRICS_NAME
        self.wandb = _start_wandb(wandb_project, out_dir, run_config) if wandb_project else None

    def keep_until(self, step: int) -> None:
        """Drop records past ``step``: a resumed run rewrites what the crashed one logged after it."""
        if self.path is None or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass  # a line torn by a crash
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        if self.wandb is not None:
            flat = {f"{r['name']}/{k}": v for r in records for k, v in r.items() if k not in ("name", "step")}
            self.wandb.log(flat, step=records[0]["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(project: str, out_dir: Path | None, run_config: dict):
    try:
        # Optional and not a dependency: whoever logs to wandb installs it (unresolvable otherwise).
        import wandb  # pyright: ignore[reportMissingImports]
    except ImportError:
        raise MonosemanticError(f"wandb_project={project!r} was given but wandb is not installed; "
                                "pip install wandb or leave wandb_project unset") from None
    name = None if out_dir is None else Path(out_dir).name
    return wandb.init(project=project, name=name, config=run_config)


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The records of ``out_dir/metrics.jsonl``, in order."""
    path = Path(out_dir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
