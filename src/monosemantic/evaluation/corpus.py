"""Which text an evaluation scores, and which of its windows the dictionary never trained on.

Every stage that scores a dictionary on text (evaluation, feature analysis, autointerp,
steering curves) resolves its corpus here, so one rule decides what is fair to score:

- no corpus given: the corpus recorded in the dictionary's training run (``training.json``,
  ``data``), else the Python standard library;
- the training corpus: only its held-out windows (``data.split``), packed with the training
  context length, so no scored window was trained on;
- any other corpus: every window (the dictionary never saw it);
- windows it trained on only with ``allow_trained=True``, and the result says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..data import source_from_description, text_source
from ..data.sources import TextSource
from ..data.split import DEFAULT_HOLDOUT
from ..errors import MonosemanticError
from .results import Result
from .windows import corpus_windows

DEFAULT_CONTEXT = 128
TRAINING_RECORD = "training.json"  # written by the Trainer beside the dictionaries it saves


@dataclass(frozen=True)
class EvalCorpus(Result):
    """The text an evaluation reads and the windows it may score."""

    corpus: dict  # the text source's describe()
    context_length: int
    prepend_bos: bool
    split: str  # "holdout": the training corpus's held-out windows; "all": every window
    holdout: float
    trained_on: dict | None  # the training run's data record; None when unknown
    note: str  # one sentence for reports: why these windows

    @property
    def label(self) -> str:
        """A short name: ``stdlib``, the file's name, or the dataset id."""
        kind = self.corpus.get("kind")
        if kind == "local":
            return Path(self.corpus.get("path", "?")).name
        if kind == "hf":
            return str(self.corpus.get("dataset"))
        return str(kind)

    def source(self) -> TextSource:
        return source_from_description(self.corpus)

    def windows(self, tokenizer, n_windows: int) -> Tensor:
        """The first ``n_windows`` scoreable windows ``[W, S]`` (int64)."""
        return corpus_windows(tokenizer, self.source(), n_windows=n_windows, context_length=self.context_length,
                              prepend_bos=self.prepend_bos,
                              holdout=None if self.split == "all" else self.holdout, split=self.split)


def training_record(dictionary_folder: str | Path) -> dict | None:
    """The ``data`` record of the run that trained the dictionary saved in ``dictionary_folder``, if any."""
    path = Path(dictionary_folder).parent / TRAINING_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or Path(dictionary_folder).name not in (record.get("dictionaries") or {}):
        return None
    data = record.get("data")
    return data if isinstance(data, dict) and isinstance(data.get("corpus"), dict) else None


def resolve_corpus(corpus=None, *, trained_on: dict | None = None, context_length: int | None = None,
                   prepend_bos: bool | None = None, text_column: str = "text",
                   allow_trained: bool = False) -> EvalCorpus:
    """The :class:`EvalCorpus` for ``corpus`` (a spec ``text_source`` takes, or None: the training corpus).

    An :class:`EvalCorpus` passes through unchanged.
    """
    if isinstance(corpus, EvalCorpus):
        return corpus
    if corpus is None and trained_on is not None:
        source = source_from_description(trained_on["corpus"])
    else:
        source = text_source("stdlib" if corpus is None else corpus, text_column=text_column)
    described = source.describe()
    if trained_on is None:
        # Unknown training data (an imported dictionary, or one trained before runs kept a
        # record): score held-out windows, which a store-trained dictionary never saw.
        return EvalCorpus(described, _context(context_length), bool(prepend_bos), "holdout", DEFAULT_HOLDOUT, None,
                          "the training data is not recorded; scoring the corpus's held-out windows")
    trained_context = int(trained_on.get("context_length", DEFAULT_CONTEXT))
    if described != trained_on["corpus"]:
        if corpus is None:
            raise MonosemanticError(f"the training corpus {trained_on['corpus']} has changed since training (now "
                                    f"{described}); pass --corpus to choose the text to score")
        return EvalCorpus(described, _context(context_length or trained_context), bool(prepend_bos), "all",
                          DEFAULT_HOLDOUT, trained_on, "a corpus the dictionary was not trained on: every window")
    return _training_corpus(described, trained_on, trained_context, context_length, prepend_bos, allow_trained)


def _training_corpus(described: dict, trained_on: dict, trained_context: int, context_length: int | None,
                     prepend_bos: bool | None, allow_trained: bool) -> EvalCorpus:
    trained_bos = bool(trained_on.get("prepend_bos", False))
    holdout = float(trained_on.get("holdout", DEFAULT_HOLDOUT))
    if allow_trained:
        return EvalCorpus(described, _context(context_length or trained_context),
                          trained_bos if prepend_bos is None else bool(prepend_bos), "all", holdout, trained_on,
                          "the training corpus, every window (allow_trained: includes windows trained on)")
    if (context_length not in (None, trained_context)) or (prepend_bos not in (None, trained_bos)):
        raise MonosemanticError(f"the dictionary trained on this corpus in windows of {trained_context} tokens "
                                f"(prepend_bos={trained_bos}); other windows would overlap its training text; "
                                f"use --context {trained_context}, another corpus, or allow trained windows")
    if trained_on.get("split", "train") != "train" or holdout <= 0:
        raise MonosemanticError("the dictionary trained on every window of this corpus, so none is held out; "
                                "pass another corpus, or allow trained windows explicitly")
    return EvalCorpus(described, trained_context, trained_bos, "holdout", holdout, trained_on,
                      "the training corpus, held-out windows only")


def _context(context_length: int | None) -> int:
    value = DEFAULT_CONTEXT if context_length is None else context_length
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise MonosemanticError(f"context length {value!r} is invalid; expected an integer >= 2, e.g. 128")
    return value
