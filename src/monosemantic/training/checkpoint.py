"""Checkpoints: everything needed to continue a run exactly, written atomically.

``out_dir/checkpoint/`` holds

- ``run.json``: the train config, each dictionary's config and lr, the step and the scales;
- ``{name}/``: each dictionary in the native format, with its raw training-space weights
  (not folded: folding and unfolding would not round-trip bit for bit);
- ``state.pt``: optimizer states, trainer-kept firing counts, RNG states and the last metrics,
  only tensors and plain containers, read back with ``torch.load(weights_only=True)``.

A checkpoint is built in a hidden sibling folder and swapped in by renames; the previous one is
moved aside first and deleted last, so a crash at any moment leaves a complete checkpoint
(``recover`` puts a moved-aside one back if the crash fell between the two renames).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..dictionaries import Dictionary, architecture, save_dictionary
from ..dictionaries.io import WEIGHTS_NAME
from ..errors import MonosemanticError
from .config import TrainConfig
from .normalize import Scales

CHECKPOINT_NAME = "checkpoint"
RUN_NAME = "run.json"
STATE_NAME = "state.pt"


class Saved(NamedTuple):
    """What a checkpoint restores besides weights and optimizer states."""

    step: int  # optimizer steps done
    scales: Scales  # the activation normalisation of the run
    metrics: dict  # name -> last metrics record


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT_NAME


def recover(out_dir: Path) -> Path | None:
    """The checkpoint folder of ``out_dir`` (restored from a crash mid-swap), or None."""
    folder = checkpoint_dir(out_dir)
    if not folder.exists():
        aside = sorted((p for p in Path(out_dir).glob(f".{CHECKPOINT_NAME}.*.old") if (p / STATE_NAME).exists()),
                       key=lambda p: read_run(p)["step"])
        if aside:
            os.rename(aside[-1], folder)
    for stale in Path(out_dir).glob(f".{CHECKPOINT_NAME}.*"):
        shutil.rmtree(stale, ignore_errors=True)  # half-written saves and leftovers
    return folder if (folder / STATE_NAME).exists() else None


def read_run(folder: Path) -> dict:
    path = Path(folder) / RUN_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MonosemanticError(f"checkpoint file {path} is unreadable ({err}); delete {folder} to start "
                                "over") from None


def save_checkpoint(out_dir: Path, run: dict, dictionaries: dict[str, Dictionary], state: dict) -> Path:
    """Write a checkpoint of ``run`` (JSON), the dictionaries and ``state`` (tensors), atomically."""
    out_dir = Path(out_dir)
    staging = out_dir / f".{CHECKPOINT_NAME}.{uuid.uuid4().hex[:12]}.saving"
    staging.mkdir(parents=True)
    try:
        for name, dictionary in dictionaries.items():
            save_dictionary(dictionary, staging / name)
        with open(staging / RUN_NAME, "w", encoding="utf-8") as f:
            json.dump(run, f, indent=2)
        # state.pt last: its presence marks the folder complete.
        with open(staging / STATE_NAME, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        folder = checkpoint_dir(out_dir)
        if folder.exists():
            retired = staging.with_name(staging.name.replace(".saving", ".old"))
            os.rename(folder, retired)
            os.rename(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, folder)
        return folder
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def load_weights_(folder: Path, name: str, dictionary: Dictionary) -> dict[str, Tensor]:
    """Load the checkpoint's weights of ``name`` into ``dictionary`` in place (optimizers keep their tensors).

    Returns the tensors a checkpoint from an older version held that are retired now
    (``Dictionary.RETIRED_TENSORS``), e.g. the firing counter top-k dictionaries used to keep.
    """
    path = Path(folder) / name / WEIGHTS_NAME
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as err:
        raise MonosemanticError(f"cannot read {path} ({err}); delete {folder} to start over") from None
    retired = dictionary.pop_retired(tensors)
    with torch.no_grad():
        dictionary.load_state_dict(tensors)
    return retired


def load_state(folder: Path, device: torch.device) -> dict:
    path = Path(folder) / STATE_NAME
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise MonosemanticError(f"cannot read {path} ({type(err).__name__}); delete {folder} to start over") from None


def rng_states() -> dict[str, Tensor | list[Tensor]]:
    states: dict[str, Tensor | list[Tensor]] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict) -> None:
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def check_same_run(folder: Path, run: dict, config: TrainConfig, dictionary_configs: dict[str, dict],
                   lrs: dict[str, float]) -> None:
    """MonosemanticError naming the first setting in which this run differs from the checkpoint's."""
    where = f"the checkpoint in {folder}"
    hint = "use the same settings to resume, or another out_dir to start over"
    # A checkpoint from before gradient clipping existed trained without it.
    differences = TrainConfig.from_dict({"grad_clip": None, **run["train_config"]}, where=where).differences(config)
    if differences:
        raise MonosemanticError(f"{where} was made with other settings ({'; '.join(differences)}, "
                                f"checkpoint vs now); {hint}")
    saved = run["dictionaries"]
    if sorted(saved) != sorted(dictionary_configs):
        raise MonosemanticError(f"{where} trains dictionaries {sorted(saved)}, this run {sorted(dictionary_configs)}; "
                                f"{hint}")
    for name, now in dictionary_configs.items():
        saved_config = saved[name]["config"]
        cls = architecture(now["arch"])
        then = dict(saved_config, options={**cls.FORMER_DEFAULTS, **cls.live_options(saved_config.get("options", {}))})
        # Initialisation cannot matter to a run that resumes from weights (and checkpoints from
        # before such an option existed do not name it).
        for option in cls.INIT_ONLY_OPTIONS:
            then["options"].pop(option, None)
        now = dict(now, options={k: v for k, v in now.get("options", {}).items() if k not in cls.INIT_ONLY_OPTIONS})
        changed = [f"{k}={then.get(k)!r} vs {now.get(k)!r}" for k in sorted(set(then) | set(now))
                   if then.get(k) != now.get(k)]
        if saved[name]["lr"] != lrs[name]:
            changed.append(f"lr={saved[name]['lr']!r} vs {lrs[name]!r}")
        if changed:
            raise MonosemanticError(f"{where} has dictionary {name!r} with other settings ({'; '.join(changed)}, "
                                    f"checkpoint vs now); {hint}")
