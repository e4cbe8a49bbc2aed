"""Token windows to evaluate on, from a corpus or from an activation store.

Both default to the *held-out* split by window index (the same fixed hash the store uses,
``activations.held_out``), so windows drawn from the corpus a store was harvested from, with
the same context length, are never windows whose activations the dictionary trained on.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from ..activations import held_out
from ..data import CorpusSpec, text_source, token_windows
from ..data.split import split_windows
from ..errors import MonosemanticError


def corpus_windows(tokenizer, corpus: CorpusSpec = "stdlib", *, n_windows: int, context_length: int = 128,
                   prepend_bos: bool = False, holdout: float | None = 0.05, text_column: str = "text",
                   split: str = "holdout") -> Tensor:
    """The first ``n_windows`` windows ``[W, S]`` (int64) of ``corpus``'s ``split`` ("holdout", "train" or
    "all"; every window with ``holdout=None`` too)."""
    _check_count("n_windows", n_windows)
    if holdout is not None and not 0 < holdout < 1:
        raise MonosemanticError(f"holdout={holdout!r} is not a fraction in (0, 1); try 0.05, or None for every window")
    if split not in ("holdout", "train", "all"):
        raise MonosemanticError(f"split {split!r} is unknown; expected holdout, train or all")
    split = "all" if holdout is None else split
    kept: list[Tensor] = []
    source = text_source(corpus, text_column=text_column)
    windows = token_windows(source, tokenizer, context_length, prepend_bos=prepend_bos)
    for _, window_S in split_windows(windows, split, holdout or 0.0):
        kept.append(window_S)
        if len(kept) == n_windows:
            return torch.stack(kept)
    name = corpus if isinstance(corpus, str) else source.describe().get("path", source.describe().get("kind"))
    raise MonosemanticError(f"corpus {name!r} yields only {len(kept)} {split} windows of {context_length} tokens, "
                            f"fewer than the {n_windows} asked; ask for fewer windows or use a bigger corpus")


def store_windows(store, *, n_windows: int | None = None, split: str = "holdout", holdout: float = 0.05) -> Tensor:
    """Whole windows ``[W, S]`` (int64) of a store's ``split``, in store order (the first ``n_windows``)."""
    if split not in ("holdout", "train", "all"):
        raise MonosemanticError(f"split {split!r} is unknown; expected holdout, train or all")
    if n_windows is not None:
        _check_count("n_windows", n_windows)
    kept: list[Tensor] = []
    have = 0
    for index, shard in enumerate(store.manifest.shards):
        windows_WS = store.read_shard(index)["window_tokens"].long()
        global_W = torch.arange(shard.window_start, shard.window_start + windows_WS.shape[0])
        keep_W = held_out(global_W, holdout) if split != "all" else torch.ones_like(global_W, dtype=torch.bool)
        windows_WS = windows_WS[keep_W if split != "train" else ~keep_W]
        kept.append(windows_WS)
        have += windows_WS.shape[0]
        if n_windows is not None and have >= n_windows:
            break
    if n_windows is not None and have < n_windows:
        raise MonosemanticError(f"store at {store.path} has only {have} {split} windows, fewer than the {n_windows} "
                                "asked; ask for fewer windows")
    return torch.cat(kept)[:n_windows]


def fingerprint(windows_WS: Tensor) -> str:
    """A short sha256 of the token ids, so a result records exactly which windows it scored."""
    return hashlib.sha256(windows_WS.to("cpu", torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MonosemanticError(f"{name}={value!r} is invalid; expected a positive integer, e.g. 64")
