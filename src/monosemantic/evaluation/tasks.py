"""Binary probing tasks and the labelled windows they are scored on.

A :class:`Task` labels tokens 1, 0 or -1 (not scored); a ``pooled`` task labels whole documents,
and is probed on each (window, document) segment's codes mean-pooled over its positions.
Families:

- ``python``: contexts from ``tokenize`` and ``ast`` (:mod:`.contexts`): inside a docstring, a
  def signature, call arguments, ... Documents that do not parse leave them all unlabelled.
- ``text``: contexts any text has (:mod:`.text_contexts`): inside brackets or quotes, in a
  question, at a line start. They need no labels.
- ``sequence``: one label per document, its codes mean-pooled over positions (as SAEBench
  pools): the standard-library package a file belongs to (one task per package found), and
  code vs prose where a corpus mixes them.
- ``labels``: a user's JSONL file (:func:`read_labels`): a ``label`` per text (pooled tasks,
  one per class) or labelled character ``spans`` (token tasks, one per class).

:func:`task_windows` packs the corpus exactly as ``token_windows`` does (so held-out windows are
the ones a store never trained on) and labels only the documents that reach a kept window.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..data import storable_mask
from ..data.sources import StdlibSource
from ..data.split import split_windows
from ..data.windows import separator_id
from ..errors import MonosemanticError
from .contexts import PYTHON_CONTEXTS, RARE_PYTHON_CONTEXTS, python_context_chars
from .corpus import EvalCorpus
from .labels import first_characters
from .text_contexts import TEXT_CONTEXTS, text_context_chars

FAMILIES = ("python", "text", "sequence", "labels")


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    family: str  # one of FAMILIES
    pooled: bool = False  # one label per document; probed on codes mean-pooled per (window, document) segment


BUILT_IN = (tuple(Task(t.name, t.description, "python") for t in PYTHON_CONTEXTS)
            + tuple(Task(name, text, "text") for name, text in TEXT_CONTEXTS.items())
            + (Task("package", "which standard-library package a file belongs to (one task per package)",
                    "sequence", pooled=True),
               Task("code", "code rather than prose (a corpus that mixes them)", "sequence", pooled=True)))


# Python contexts too rare on the standard library to score by default; run when named.
RARE = tuple(Task(t.name, t.description, "python") for t in RARE_PYTHON_CONTEXTS)


def select_tasks(names: Sequence[str] | None = None) -> tuple[Task, ...]:
    """The built-in tasks named (families may be named too: ``python``, ``text``, ``sequence``); None: all.

    The rare Python contexts (:data:`RARE`, e.g. ``in_decorator``) run only when named one by one.
    """
    if names is None:
        return BUILT_IN
    chosen: list[Task] = []
    for name in names:
        found = [t for t in BUILT_IN if name in (t.name, t.family)] + [t for t in RARE if t.name == name]
        if not found:
            raise MonosemanticError(f"task {name!r} does not exist; expected a family ({', '.join(FAMILIES[:3])}) "
                                    f"or one of: {', '.join(t.name for t in BUILT_IN + RARE)}")
        chosen += [t for t in found if t not in chosen]
    return tuple(chosen)


class TaskWindows(NamedTuple):
    """Scoreable windows and, per task, labels ``[W, S]`` (a pooled task's are its document's, at every position)."""

    windows_WS: Tensor  # int64
    keep_WS: Tensor  # bool: storable positions
    labels: dict[str, Tensor]  # task name -> int8 labels (1, 0, -1 unscored)
    tasks: dict[str, Task]  # the tasks labelled, by name (per-class tasks expanded)
    documents_WS: Tensor  # int64: the document each position belongs to (-1: separator or prefix)


class LabelledText(NamedTuple):
    """A user's labelled text: a document label, or character spans ``(start, end, label)``."""

    text: str
    label: str | None
    spans: tuple[tuple[int, int, str], ...]


def read_labels(path: str | Path) -> list[LabelledText]:
    """A JSONL file of ``{"text": ..., "label": ...}`` or ``{"text": ..., "spans": [[start, end, label], ...]}``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MonosemanticError(f"cannot read labels file {path} ({err}); expected a UTF-8 JSONL file") from None
    found = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            found.append(_labelled_line(line, f"{path} line {number}"))
    if not found:
        raise MonosemanticError(f"labels file {path} holds no texts; expected one JSON object per line")
    return found


def _labelled_line(line: str, where: str) -> LabelledText:
    try:
        row = json.loads(line)
    except ValueError:
        raise MonosemanticError(f"{where} is not JSON; expected {{\"text\": ..., \"label\": ...}}") from None
    text, label, spans = (row.get(k) for k in ("text", "label", "spans")) if isinstance(row, dict) else (None,) * 3
    if not isinstance(text, str) or (label is None) == (spans is None):
        raise MonosemanticError(f"{where} needs a string \"text\" and either \"label\" or \"spans\"")
    parsed = []
    for span in spans or ():
        if not (isinstance(span, list) and len(span) == 3 and all(isinstance(v, int) for v in span[:2])
                and 0 <= span[0] < span[1] <= len(text)):
            raise MonosemanticError(f"{where}: span {span!r} is invalid; expected [start, end, label] with "
                                    f"0 <= start < end <= {len(text)}")
        parsed.append((span[0], span[1], str(span[2])))
    return LabelledText(text, None if label is None else str(label), tuple(parsed))


def task_windows(tokenizer, corpus: EvalCorpus, tasks: Sequence[Task], n_windows: int, *,
                 labelled: Sequence[LabelledText] | None = None) -> TaskWindows:
    """The first ``n_windows`` scoreable windows of ``corpus`` (or of ``labelled`` texts) and their labels."""
    if labelled is not None:
        documents, labeller = [t.text for t in labelled], _UserLabels(labelled, tokenizer)
    else:
        documents = corpus.source()
        labeller = _BuiltInLabels(tasks, documents)
    packer = _Packer(tokenizer, corpus, labeller)
    chosen = split_windows(packer.windows(documents), corpus.split, corpus.holdout)
    kept = [(lazy.ids, lazy.documents, lazy.labels()) for _, (_, lazy) in zip(range(n_windows), chosen)]
    if len(kept) < n_windows:
        raise MonosemanticError(f"corpus {corpus.label} yields only {len(kept)} {corpus.split} windows of "
                                f"{corpus.context_length} tokens; the tasks need {n_windows}; ask for fewer windows "
                                "(--probe-windows) or use a bigger corpus")
    windows_WS = torch.tensor([ids for ids, _, _ in kept], dtype=torch.int64)
    keep_WS = storable_mask(windows_WS, tokenizer.all_special_ids)
    labels = labeller.stack([labels for _, _, labels in kept], keep_WS)
    documents_WS = torch.tensor([documents for _, documents, _ in kept], dtype=torch.int64)
    return TaskWindows(windows_WS, keep_WS, labels, labeller.tasks(labels), documents_WS)


class _Packer:
    """Packs documents into windows like ``token_windows``; a window's labels are computed only if kept."""

    def __init__(self, tokenizer, corpus: EvalCorpus, labeller):
        if not getattr(tokenizer, "is_fast", False):
            raise MonosemanticError(f"labelling tokens needs character offsets, which {type(tokenizer).__name__} "
                                    "does not give; load the model's fast tokenizer")
        self.tokenizer, self.labeller = tokenizer, labeller
        if corpus.prepend_bos and tokenizer.bos_token_id is None:
            raise MonosemanticError("prepend_bos was requested but the tokenizer has no BOS token; run without "
                                    "prepend_bos")
        self.prefix = [int(tokenizer.bos_token_id)] if corpus.prepend_bos else []
        self.body, self.sep = corpus.context_length - len(self.prefix), separator_id(tokenizer)

    def windows(self, documents):
        ids: list[int] = []
        where: list[tuple[int, int]] = []  # per stream token: (document, token in it); (-1, -1) separators
        docs: dict[int, tuple[str, list]] = {}
        for d, text in enumerate(documents):
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            if not encoded["input_ids"]:
                continue  # token_windows skips empty documents, separator included
            docs[d] = (text, encoded["offset_mapping"])
            ids += encoded["input_ids"] + ([] if self.sep is None else [self.sep])
            where += [(d, t) for t in range(len(encoded["input_ids"]))] + ([] if self.sep is None else [(-1, -1)])
            start = 0
            while len(ids) - start >= self.body:
                span = where[start:start + self.body]
                yield _LazyWindow(self, self.prefix + ids[start:start + self.body], span, docs)
                start += self.body
            del ids[:start], where[:start]
            for old in [k for k in docs if k < (where[0][0] if where and where[0][0] >= 0 else d)]:
                del docs[old]


class _LazyWindow:
    """One packed window; split_windows yields it, and only kept ones are labelled."""

    def __init__(self, packer: _Packer, ids: list[int], span: list[tuple[int, int]], docs: dict):
        self.packer, self.ids, self.span = packer, ids, span
        self.docs = {d: docs[d] for d in {d for d, _ in span if d >= 0}}
        self.documents = [-1] * len(packer.prefix) + [d for d, _ in span]

    def labels(self) -> dict[str, np.ndarray]:
        return self.packer.labeller.window(self.span, self.docs, len(self.packer.prefix))


class _DocumentLabels:
    """Per-document token labels, cached while a document spans windows."""

    def __init__(self):
        self.cache: dict[int, dict[str, np.ndarray]] = {}

    def window(self, span, docs: dict, n_prefix: int) -> dict[str, np.ndarray]:
        self.cache = {d: labels for d, labels in self.cache.items() if d in docs}
        for d in docs:
            if d not in self.cache:
                self.cache[d] = self.document(d, *docs[d])
        names = sorted({name for d in docs for name in self.cache[d]})
        out = {name: np.full(n_prefix + len(span), -1, dtype=np.int8) for name in names}
        for position, (d, t) in enumerate(span):
            if d >= 0:
                for name, labels_T in self.cache[d].items():
                    out[name][n_prefix + position] = labels_T[t]
        return out

    def document(self, index: int, text: str, offsets: list) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _first_chars(text: str, offsets: list) -> np.ndarray:
    """Each token's labelling character (``labels.first_characters``), kept inside the text."""
    return np.minimum(first_characters(text, offsets), max(len(text) - 1, 0))


def _token_labels(first_T: np.ndarray, valid_C: np.ndarray | None, mask_C: np.ndarray) -> np.ndarray:
    labels_T = mask_C[first_T].astype(np.int8)
    if valid_C is not None:
        labels_T[~valid_C[first_T]] = -1
    return labels_T


class _BuiltInLabels(_DocumentLabels):
    def __init__(self, tasks: Sequence[Task], source):
        super().__init__()
        self.families = {t.family for t in tasks}
        self.names = {t.name for t in tasks}
        self.files, self.root = (source.files(), source.root) if isinstance(source, StdlibSource) else (None, None)
        self.chosen = tasks

    def document(self, index: int, text: str, offsets: list) -> dict[str, np.ndarray]:
        if not text:
            return {}
        first_T, out = _first_chars(text, offsets), {}
        code = _parses(text)
        # Even tokenize's contexts mean nothing in prose ("#" headings, indented paragraphs).
        if "python" in self.families and code:
            for name, (valid_C, mask_C) in python_context_chars(text).items():
                if name in self.names:
                    out[name] = _token_labels(first_T, valid_C, mask_C)
        if "text" in self.families:
            out |= {name: _token_labels(first_T, None, mask_C) for name, mask_C in text_context_chars(text).items()
                    if name in self.names}
        if "package" in self.names and self.files is not None and self.root is not None:  # a stdlib corpus
            out["package=" + _package(self.files[index], self.root)] = np.ones(len(offsets), dtype=np.int8)
        if "code" in self.names:
            out["code"] = np.full(len(offsets), code, dtype=np.int8)
        return out

    def stack(self, labels: list[dict[str, np.ndarray]], keep_WS: Tensor) -> dict[str, Tensor]:
        token = [t.name for t in self.chosen if not t.pooled] + (["code"] if "code" in self.names else [])
        out = {name: _stack_token(labels, name, keep_WS) for name in token}
        packages = sorted({n for window in labels for n in window if n.startswith("package=")})
        if packages:
            # One task per package: its files against every other package's.
            stacked = {name: _stack_token(labels, name, keep_WS) for name in packages}
            any_package_WS = torch.stack(list(stacked.values())).eq(1).any(0)
            for name, own_WS in stacked.items():
                out[name] = torch.where(own_WS == 1, 1, torch.where(any_package_WS, 0, -1)).to(torch.int8)
        return out

    def tasks(self, labels: dict[str, Tensor]) -> dict[str, Task]:
        by_name = {t.name: t for t in self.chosen}
        return {name: by_name.get(name) or Task(name, f"a file of the standard-library package "
                                                     f"{name.split('=', 1)[1]}", "sequence", pooled=True)
                for name in labels}


class _UserLabels(_DocumentLabels):
    def __init__(self, labelled: Sequence[LabelledText], tokenizer):
        super().__init__()
        self.labelled = labelled
        _check_spans(labelled, tokenizer)
        classes = {t.label for t in labelled if t.label is not None}
        span_classes = {s[2] for t in labelled for s in t.spans}
        for kind, found in (("document labels", classes), ("span labels", span_classes)):
            if len(found) == 1:
                raise MonosemanticError(f"the {kind} have one class ({found.pop()!r}); a probe needs two or more; "
                                        "label some texts (or spans) with another class")
        self.classes, self.span_classes = sorted(classes), sorted(span_classes)

    def document(self, index: int, text: str, offsets: list) -> dict[str, np.ndarray]:
        item = self.labelled[index]
        if item.label is not None:
            return {"label=" + c: np.full(len(offsets), int(item.label == c), dtype=np.int8) for c in self.classes}
        out = {"span=" + c: np.zeros(len(offsets), dtype=np.int8) for c in self.span_classes}
        first_T = _first_chars(text, offsets)
        for start, end, label in item.spans:
            out["span=" + label][(first_T >= start) & (first_T < end)] = 1
        return out

    def stack(self, labels: list[dict[str, np.ndarray]], keep_WS: Tensor) -> dict[str, Tensor]:
        names = ["span=" + c for c in self.span_classes] + ["label=" + c for c in self.classes]
        return {name: _stack_token(labels, name, keep_WS) for name in names}

    def tasks(self, labels: dict[str, Tensor]) -> dict[str, Task]:
        return {name: Task(name, f"labelled {name.split('=', 1)[1]!r} in the labels file", "labels",
                           pooled=name.startswith("label=")) for name in labels}


def _check_spans(labelled: Sequence[LabelledText], tokenizer) -> None:
    """Every span starts and ends where a token does (a token's leading space may stay outside it)."""
    for index, item in enumerate(labelled):
        if not item.spans:
            continue
        offsets = tokenizer(item.text, add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]
        first_T = _first_chars(item.text, offsets)
        starts, ends = set(first_T.tolist()) | {s for s, _ in offsets}, {e for _, e in offsets}
        for start, end, label in item.spans:
            if start not in starts or end not in ends:
                raise MonosemanticError(f"span ({start}, {end}, {label!r}) of text {index + 1} does not fall on token "
                                        f"boundaries ({item.text[start:end]!r}); expected spans that start and end "
                                        "where the model's tokens do")


def _stack_token(labels: list[dict[str, np.ndarray]], name: str, keep_WS: Tensor) -> Tensor:
    width = keep_WS.shape[1]
    rows = [window.get(name, np.full(width, -1, dtype=np.int8)) for window in labels]
    return torch.from_numpy(np.stack(rows)).masked_fill(~keep_WS, -1)


def _package(file: Path, root: Path) -> str:
    """The top-level package of a stdlib file (a single-file module counts as ``modules``)."""
    parts = file.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "modules"


def _parses(text: str) -> int:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return 0
    return 1
