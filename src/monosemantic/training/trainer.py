"""The training loop: one pass over a source, each batch fed to every dictionary.

Each dictionary has its own Adam optimizer and learning rate; a step for each is::

    loss(x, target, StepInput(sparsity_scale, dead_F, reduce, progress)) -> backward
    -> (average grads across ranks) -> project_decoder_grad_ -> optimizer.step
    -> normalize_decoder_ -> firing count of the step's codes (global across ranks)

The trainer owns the run's state (schedules, which latents are dead, the process group) and
passes it in; dictionaries keep none of it.

With an ``out_dir`` the trainer logs ``metrics.jsonl``, writes checkpoints, resumes from one
exactly (same final weights, bit for bit on CPU, as a run never interrupted), and at the end
saves every dictionary, folded to act on raw activations, to ``out_dir/{name}/`` beside a
``training.json``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from ..activations.manifest import MANIFEST_NAME
from ..dictionaries import Dictionary, StepInput, save_dictionary
from ..errors import MonosemanticError
from ..kernels.adam import Adam
from ..locks import folder_lock
from ..models.loading import resolve_device
from ..processes import join_processes
from .checkpoint import (
    CHECKPOINT_NAME,
    Saved,
    check_same_run,
    load_state,
    load_weights_,
    read_run,
    recover,
    restore_rng,
    rng_states,
    save_checkpoint,
)
from .config import TrainConfig
from .firing import Firing
from .layout import Batch, check_batch, check_fits
from .metrics import METRICS_NAME, BatchSums, MetricsLog, batch_sums, summarize
from .normalize import SAMPLE_ROWS, UNIT, Scales, estimate_scales, folded_copy
from .resample import check_resamplable, resample_dead_
from .schedules import lr_factor, sparsity_scale
from .seeds import generator
from .sources import BatchSource

RESULT_NAME = "training.json"
DEFAULT_NAME = "dictionary"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")
_RESERVED = {CHECKPOINT_NAME, METRICS_NAME, RESULT_NAME}


class TrainResult(NamedTuple):
    """What ``Trainer.fit`` returns."""

    dictionaries: dict[str, Dictionary]  # trained, folded to act on raw activations, in eval mode
    steps: int  # optimizer steps done in the whole run (before a resume included)
    tokens: int  # rows trained on: steps * batch_size
    metrics: dict[str, dict]  # name -> its last metrics record (see metrics.py)


@dataclass
class _Slot:
    """One dictionary in training."""

    name: str
    dictionary: Dictionary
    optimizer: Adam
    lr: float
    firing: Firing


class Trainer:
    """Trains one or many dictionaries on the same batches (``fit``)."""

    def __init__(self, dictionaries: Dictionary | Mapping[str, Dictionary], config: TrainConfig,
                 out_dir: str | Path | None = None, lrs: Mapping[str, float] | None = None):
        if not isinstance(config, TrainConfig):
            raise MonosemanticError(f"config must be a TrainConfig; got {type(config).__name__}")
        self.dictionaries = _named(dictionaries)
        self.config = config
        self.out_dir = None if out_dir is None else Path(out_dir).expanduser()
        self.lrs = _learning_rates(self.dictionaries, config, lrs)

    # ----- the run -------------------------------------------------------------------------

    def fit(self, source: BatchSource, *, progress: bool = True) -> TrainResult:
        """Train to ``config.total_steps``, resuming from ``out_dir``'s checkpoint when there is one.

        Holds ``out_dir``'s writer lock throughout (see locks): a second run into the same folder
        stops with a one-line error instead of interleaving its metrics and replacing the results.
        """
        if self.out_dir is None:
            return self._fit(source, progress)
        if (self.out_dir / MANIFEST_NAME).is_file():
            raise MonosemanticError(f"{self.out_dir} is an activation store ({MANIFEST_NAME}); a training run needs "
                                    "its own folder; choose another --out")
        with folder_lock(self.out_dir):
            return self._fit(source, progress)

    def _fit(self, source: BatchSource, progress: bool) -> TrainResult:
        for name, dictionary in self.dictionaries.items():
            check_fits(name, dictionary, source.layout)
            if self.config.resample_every is not None:
                check_resamplable(name, dictionary)
        self.device = resolve_device(self.config.device)
        describe = getattr(source, "describe", None)
        self.data = describe() if describe is not None else None
        self.replicas = join_processes(self.device)
        try:
            slots = self._slots()
            saved, resumed = self._start(source, slots)
            log = self._open_log(saved.step)
            try:
                saved = self._loop(source, slots, saved, log, progress and self.replicas.is_main)
            finally:
                if log is not None:
                    log.close()
            return self._finish(slots, saved, final_checkpoint=resumed != saved.step)
        finally:
            self.replicas.close()

    def _slots(self) -> list[_Slot]:
        slots = []
        for name, dictionary in self.dictionaries.items():
            dictionary.to(self.device).train()
            # The fused kernel updates all parameters in one pass (~5x faster than the default
            # on CPU); it exists for floating-point parameters on CPU and CUDA.
            optimizer = Adam(_param_groups(dictionary), lr=self.lrs[name], betas=self.config.betas,
                             fused=self.device.type in ("cpu", "cuda"))
            slots.append(_Slot(name, dictionary, optimizer, self.lrs[name], Firing(dictionary, self.device)))
        return slots

    def _loop(self, source: BatchSource, slots: list[_Slot], saved: Saved, log, progress: bool) -> Saved:
        config, total = self.config, self.config.total_steps
        step, scales, metrics = saved
        bar = tqdm(total=total, initial=step, unit="step", desc="train", disable=not progress, dynamic_ncols=True)
        batches = self._local_batches(source, step)
        try:
            while step < total:
                local = _to_device(scales.apply(next(batches)), self.device)
                logging = (step + 1) % config.log_every == 0 or step + 1 == total
                sums = {slot.name: self._update(slot, local, step, logging) for slot in slots}
                step += 1
                if _due(step, config.resample_every) and step < total:
                    self._resample(slots, local, step)
                if logging:
                    metrics = self._record(slots, sums, step, log, bar)
                if self.out_dir is not None and _due(step, config.checkpoint_every) and step < total:
                    self._checkpoint(slots, Saved(step, scales, metrics))
                bar.update(1)
        finally:
            bar.close()
        return Saved(step, scales, metrics)

    def _update(self, slot: _Slot, batch: Batch, step: int, logging: bool) -> BatchSums | None:
        """One optimizer step of one dictionary; the metric sums of the batch when ``logging``."""
        dictionary, optimizer = slot.dictionary, slot.optimizer
        for group in optimizer.param_groups:
            group["lr"] = slot.lr * lr_factor(step, self.config) * group["lr_scale"]
        optimizer.zero_grad(set_to_none=True)
        # Dense [N, F] codes are not needed here: firing and L0 are read from sparse codes where given.
        run_state = StepInput(sparsity_scale=sparsity_scale(step, self.config),
                              dead_F=slot.firing.dead(self.config.dead_window), reduce=self.replicas,
                              progress=step / self.config.total_steps, dense_codes=False)
        out = dictionary.loss(batch.x, batch.target, run_state)
        out.loss.backward()
        self.replicas.average_grads_(dictionary)
        dictionary.project_decoder_grad_()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(dictionary.parameters(), self.config.grad_clip)
        optimizer.step()
        dictionary.normalize_decoder_()
        self.replicas.average_buffers_(dictionary)
        slot.firing.update_(out, self.replicas)
        return batch_sums(out, batch.x if batch.target is None else batch.target) if logging else None

    def _resample(self, slots: list[_Slot], batch: Batch, step: int) -> None:
        for slot in slots:
            dead_F = slot.firing.dead(self.config.dead_window)
            gen = generator(self.config.seed, "resample", slot.name, step)
            n = resample_dead_(slot.dictionary, slot.optimizer, dead_F, batch, gen, self.replicas)
            slot.firing.reset_(dead_F)
            if n and self.replicas.is_main:
                tqdm.write(f"step {step}: resampled {n} dead latents of {slot.name}", file=sys.stderr)

    def _record(self, slots: list[_Slot], sums: dict[str, BatchSums | None], step: int, log, bar
                ) -> dict[str, dict]:
        """Metrics of this step for every dictionary: written, shown, and returned by name."""
        records = {}
        for slot in slots:
            local = sums[slot.name]
            assert local is not None  # _update returns the sums on logging steps, the only ones recorded
            record = summarize(local._replace(sums=self.replicas.sum_(local.sums)), step=step,
                               tokens=step * self.config.batch_size, name=slot.name)
            if not math.isfinite(record["loss"]):
                raise MonosemanticError(f"the loss of dictionary {slot.name!r} became {record['loss']} by step {step}; "
                                        "training diverged; lower its lr (the last checkpoint is intact)")
            record["dead_fraction"] = float(slot.firing.dead(self.config.dead_window).float().mean())
            record["lr"] = slot.lr * lr_factor(step - 1, self.config)
            record["sparsity_scale"] = sparsity_scale(step - 1, self.config)
            records[slot.name] = record
        if log is not None:
            log.write(list(records.values()))
        first = records[slots[0].name]
        bar.set_postfix(fvu=f"{first['fvu']:.4f}", l0=f"{first['l0']:.1f}", dead=f"{first['dead_fraction']:.3f}",
                        **({"of": slots[0].name} if len(slots) > 1 else {}))
        return records

    # ----- start: fresh or resumed --------------------------------------------------------

    def _start(self, source: BatchSource, slots: list[_Slot]) -> tuple[Saved, int | None]:
        """(where training starts, the step resumed from or None for a fresh start)."""
        folder = None
        if self.out_dir is not None:
            if self.replicas.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                recover(self.out_dir)
            self.replicas.barrier()
            candidate = self.out_dir / CHECKPOINT_NAME
            folder = candidate if candidate.is_dir() else None
        if folder is not None:
            saved = self._resume(folder, slots)
        else:
            saved = self._initialise(source, slots)
        for slot in slots:
            self.replicas.broadcast_(slot.dictionary)
        return saved, (saved.step if folder is not None else None)

    def _local_batches(self, source: BatchSource, step: int) -> Iterator[Batch]:
        """This rank's rows of each global batch from ``step`` on, checked."""
        config, replicas = self.config, self.replicas
        world, rank = replicas.world, replicas.rank
        local_batches = getattr(source, "local_batches", None)  # optional, see BatchSource
        if world > 1 and local_batches is not None:
            rows = config.batch_size // world
            if rows * world != config.batch_size:
                raise MonosemanticError(f"batch_size {config.batch_size} does not divide among {world} processes; "
                                        f"use a multiple of {world}")
            batches = local_batches(config.batch_size, seed=config.seed, start_step=step, rank=rank, world=world)
            for batch in batches:
                try:
                    check_batch(batch, source.layout, step, rows, first_row=step * config.batch_size + rank * rows)
                    problem = None
                except MonosemanticError as error:
                    problem = error
                # Each rank sees only its rows, so all must learn of a bad batch before anyone
                # stops; a rank stopping alone would leave the others waiting in all_reduce.
                if bool(replicas.any_(torch.tensor([problem is not None]))):
                    raise problem or MonosemanticError(f"another process found a bad batch at step {step}; "
                                                       "see its error")
                yield batch
                step += 1
        else:
            for batch in source.batches(config.batch_size, seed=config.seed, start_step=step):
                check_batch(batch, source.layout, step, config.batch_size)
                yield Batch(replicas.rows(batch.x), None if batch.target is None else replicas.rows(batch.target))
                step += 1

    def _initialise(self, source: BatchSource, slots: list[_Slot]) -> Saved:
        """Estimate the scales and set each decoder bias from the first rows."""
        config = self.config
        if not config.normalize_activations and config.b_dec_init == "zeros":
            for slot in slots:
                slot.dictionary.b_dec.data.zero_()
            return Saved(0, UNIT, {})
        n_batches = min(config.total_steps, math.ceil(SAMPLE_ROWS / config.batch_size))
        parts = []
        if self.replicas.world > 1 and hasattr(source, "local_batches"):
            # Ranks read only their own rows; the sample is the same global rows a single process takes.
            gather = self.replicas.gather_rows
            for _, local in zip(range(n_batches), self._local_batches(source, 0)):
                local = _to_device(local, self.device)
                parts.append(Batch(gather(local.x), None if local.target is None else gather(local.target)))
        else:
            for step, batch in zip(range(n_batches), source.batches(config.batch_size, seed=config.seed)):
                check_batch(batch, source.layout, step, config.batch_size)
                parts.append(batch)
        sample = Batch(torch.cat([b.x for b in parts]),
                       None if parts[0].target is None else torch.cat([b.target for b in parts]))
        scales = estimate_scales(sample, source.layout.n_sites) if config.normalize_activations else UNIT
        sample = _to_device(scales.apply(sample), self.device)
        with torch.no_grad():
            for slot in slots:
                if config.b_dec_init == "zeros":
                    slot.dictionary.b_dec.zero_()
                else:
                    target = sample.x if sample.target is None else sample.target
                    slot.dictionary.init_b_dec_(target, method=config.b_dec_init)
        return Saved(0, scales, {})

    def _resume(self, folder: Path, slots: list[_Slot]) -> Saved:
        run = read_run(folder)
        check_same_run(folder, run, self.config, {n: d.config.to_dict() for n, d in self.dictionaries.items()},
                       self.lrs)
        state = load_state(folder, self.device)
        for slot in slots:
            retired = load_weights_(folder, slot.name, slot.dictionary)
            slot.optimizer.load_state_dict(state["optimizers"][slot.name])
            # Checkpoints from before the trainer kept every firing count have the top-k family's
            # own counter (rows since fired, the same count) among the weights instead.
            counts_F = state["firing"].get(slot.name, retired.get("tokens_since_fired"))
            if counts_F is not None:
                slot.firing.counts_F.copy_(counts_F)
        restore_rng(state["rng"])
        return Saved(run["step"], Scales.from_json(run["scale_in"], run["scale_out"]), state["metrics"])

    # ----- files ---------------------------------------------------------------------------

    def _open_log(self, step: int) -> MetricsLog | None:
        if not self.replicas.is_main:
            return None
        log = MetricsLog(self.out_dir, self.config.wandb_project, self._run_json(0, UNIT))
        log.keep_until(step)
        return log

    def _run_json(self, step: int, scales: Scales) -> dict:
        return {"step": step, "scale_in": scales.scale_in, "scale_out": scales.scale_out,
                "train_config": self.config.to_dict(),
                "dictionaries": {name: {"config": d.config.to_dict(), "lr": self.lrs[name]}
                                 for name, d in self.dictionaries.items()}}

    def _checkpoint(self, slots: list[_Slot], saved: Saved) -> None:
        for slot in slots:
            if not all(bool(torch.isfinite(p).all()) for p in slot.dictionary.parameters()):
                raise MonosemanticError(f"dictionary {slot.name!r} has NaN or inf weights at step {saved.step}; "
                                        "training diverged; lower its lr (the last checkpoint is intact)")
        if not self.replicas.is_main:
            return
        assert self.out_dir is not None  # only runs with a folder checkpoint
        state = {"optimizers": {s.name: s.optimizer.state_dict() for s in slots},
                 "firing": {s.name: s.firing.counts_F for s in slots},
                 "rng": rng_states(), "metrics": saved.metrics}
        save_checkpoint(self.out_dir, self._run_json(saved.step, saved.scales),
                        {s.name: s.dictionary for s in slots}, state)

    def _write_summary(self, saved: Saved) -> None:
        """``training.json``: how the saved dictionaries were trained and how they ended."""
        assert self.out_dir is not None  # only runs with a folder write one
        summary = {"steps": saved.step, "tokens": saved.step * self.config.batch_size,
                   "scale_in": saved.scales.scale_in, "scale_out": saved.scales.scale_out,
                   "train_config": self.config.to_dict(), "data": self.data,
                   "dictionaries": {name: {"config": d.config.to_dict(), "lr": self.lrs[name],
                                           "metrics": saved.metrics.get(name)}
                                    for name, d in self.dictionaries.items()}}
        (self.out_dir / RESULT_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def _finish(self, slots: list[_Slot], saved: Saved, final_checkpoint: bool) -> TrainResult:
        folded = {s.name: folded_copy(s.dictionary, saved.scales).eval() for s in slots}
        if self.out_dir is not None:
            if final_checkpoint:
                self._checkpoint(slots, saved)
            if self.replicas.is_main:
                for name, dictionary in folded.items():
                    save_dictionary(dictionary, self.out_dir / name, overwrite=True)
                self._write_summary(saved)
        self.replicas.barrier()
        return TrainResult(folded, saved.step, saved.step * self.config.batch_size, saved.metrics)


def _due(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


def _param_groups(dictionary: Dictionary) -> list[dict]:
    """Runs of consecutive parameters with the same lr multiplier (``Dictionary.lr_scales``).

    Runs, not one group per multiplier: the optimizer state stays numbered in the order of
    ``parameters()``, as it was before groups existed, whatever the grouping.
    """
    scales = dictionary.lr_scales()
    groups: list[dict] = []
    for name, param in dictionary.named_parameters():
        scale = scales.get(name, 1.0)
        if not groups or groups[-1]["lr_scale"] != scale:
            groups.append({"params": [], "lr_scale": scale})
        groups[-1]["params"].append(param)
    return groups


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.x.to(device), None if batch.target is None else batch.target.to(device))


def _named(dictionaries) -> dict[str, Dictionary]:
    named = {DEFAULT_NAME: dictionaries} if isinstance(dictionaries, Dictionary) else dict(dictionaries)
    if not named:
        raise MonosemanticError("no dictionaries to train; pass a Dictionary or a {name: Dictionary} mapping")
    for name, dictionary in named.items():
        if not isinstance(dictionary, Dictionary):
            raise MonosemanticError(f"{name!r} is a {type(dictionary).__name__}, not a Dictionary; "
                                    "build it with make_dictionary")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in _RESERVED:
            raise MonosemanticError(f"dictionary name {name!r} cannot name a folder; use letters, digits and "
                                    f"_.=+- (not {', '.join(sorted(_RESERVED))}), e.g. topk_k32_x8")
    if len({id(d) for d in named.values()}) != len(named):
        raise MonosemanticError("the same Dictionary object appears under two names; build one per name")
    return named


def _learning_rates(dictionaries: dict[str, Dictionary], config: TrainConfig,
                    lrs: Mapping[str, float] | None) -> dict[str, float]:
    lrs = dict(lrs or {})
    unknown = sorted(set(lrs) - set(dictionaries))
    if unknown:
        raise MonosemanticError(f"lrs names {unknown} that are not being trained; expected some of "
                                f"{sorted(dictionaries)}")
    for name, lr in lrs.items():
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise MonosemanticError(f"lr for {name!r} is {lr!r}; expected a positive number such as 4e-4")
    return {name: float(lrs.get(name, config.lr)) for name in dictionaries}
