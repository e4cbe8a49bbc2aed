"""Labelled token tasks: a class per LM token, for probing and clustering.

Built in: the Python ``tokenize`` category of every LM token of Python source (the default
corpus, the stdlib's ``.py`` files, is exactly that). The stdlib tokenizer gives character
spans with categories; each LM token takes the category of its first non-space character,
so ``" return"`` is a keyword and ``" #"`` a comment. Categories (:data:`PYTHON_CATEGORIES`):

===========  ==========================================================================
whitespace   NEWLINE, NL, INDENT and spaces between tokens (tokens made only of spaces)
comment      ``# ...``
string       string literals, f-strings whole (their ``{expressions}`` included)
keyword      names for which ``keyword.iskeyword`` holds (``def``, ``return``, ``None``)
name         every other name (soft keywords such as ``match`` included)
number       numeric literals
operator     OP tokens: brackets, punctuation, operators
===========  ==========================================================================

Bring your own labels with :func:`labels_from_spans` (character spans) or
:func:`labels_from_tokens` (one label per LM token). Every labeller returns
``(token_ids_T, labels_T)``, int64, with -1 where a token has no label.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..data import CorpusSpec, storable_mask, text_source
from ..data.split import split_windows
from ..data.windows import separator_id
from ..errors import MonosemanticError

PYTHON_CATEGORIES = ("whitespace", "comment", "string", "keyword", "name", "number", "operator")
_CATEGORY = {name: index for index, name in enumerate(PYTHON_CATEGORIES)}
_SIMPLE = {tokenize.COMMENT: "comment", tokenize.STRING: "string", tokenize.NUMBER: "number",
           tokenize.OP: "operator", tokenize.NEWLINE: "whitespace", tokenize.NL: "whitespace",
           tokenize.INDENT: "whitespace"}
# Python 3.12+ splits f-strings (3.14: t-strings) into START/MIDDLE/END with the expressions
# tokenized inside; the whole literal is labelled string, so the category does not depend on
# the Python version running the evaluation.
_STRING_STARTS = {getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)}
_STRING_ENDS = {getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)}

Labeller = Callable[[object, str], tuple[Tensor, Tensor]]


def python_token_labels(tokenizer, source_text: str) -> tuple[Tensor, Tensor]:
    """``(token_ids_T, labels_T)``: the LM tokens of ``source_text`` and their :data:`PYTHON_CATEGORIES` index.

    Source that stops tokenizing (a syntax error, an unclosed bracket) keeps the labels found
    up to that point; the rest is -1.
    """
    categories_C = python_char_categories(source_text)
    return _label_tokens(tokenizer, source_text, categories_C)


def python_char_categories(source_text: str) -> np.ndarray:
    """``[len(text)]`` int64: the category index of every character, -1 where tokenize gives none."""
    categories_C = np.full(len(source_text), -1, dtype=np.int64)
    line_starts = _line_starts(source_text)
    string_depth, string_start, reached = 0, 0, 0
    for tok in _python_tokens(source_text):
        start = line_starts[tok.start[0] - 1] + tok.start[1]
        end = line_starts[tok.end[0] - 1] + tok.end[1]
        reached = max(reached, end)
        if tok.type in _STRING_STARTS:
            string_depth, string_start = string_depth + 1, (start if string_depth == 0 else string_start)
            continue
        if tok.type in _STRING_ENDS:
            string_depth -= 1
            if string_depth == 0:
                categories_C[string_start:end] = _CATEGORY["string"]
            continue
        if string_depth or end <= start or source_text[start:end] != tok.string:
            continue  # inside an f-string (labelled whole at its end), zero-width, or offsets we cannot trust
        categories_C[start:end] = _CATEGORY[_category(tok)]
    # Spaces between tokens are whitespace; characters tokenize skipped otherwise (a line
    # continuation backslash), and everything after a tokenize error, stay unlabelled.
    spaces_C = np.array([c.isspace() for c in source_text[:reached]], dtype=bool)
    categories_C[:reached][spaces_C & (categories_C[:reached] < 0)] = _CATEGORY["whitespace"]
    return categories_C


def _python_tokens(source_text: str):
    try:
        # StringIO's readline splits at "\n" only, like _split_lines.
        yield from tokenize.generate_tokens(io.StringIO(source_text).readline)
    except (tokenize.TokenError, SyntaxError):
        return  # keep what was labelled before the error


def _split_lines(text: str) -> list[str]:
    # Lines ending at "\n" only, as tokenize counts rows (str.splitlines also splits at form
    # feeds and other separators tokenize keeps inside a line, which would shift every offset).
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _line_starts(text: str) -> list[int]:
    starts, offset = [], 0
    for line in _split_lines(text):
        starts.append(offset)
        offset += len(line)
    return starts + [offset]  # the ENDMARKER's row is one past the last line


def _category(tok: tokenize.TokenInfo) -> str:
    if tok.type == tokenize.NAME:
        return "keyword" if keyword.iskeyword(tok.string) else "name"
    return _SIMPLE.get(tok.type, "whitespace" if tok.string.isspace() else "operator")


def labels_from_spans(tokenizer, text: str, spans: Sequence[tuple[int, int, int | str]], *,
                      names: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """``(token_ids_T, labels_T)`` from character spans ``(start, end, label)`` of ``text``.

    A token takes the label of the span holding its first non-space character, -1 if none.
    Labels are class indices, or names looked up in ``names``.
    """
    categories_C = np.full(len(text), -1, dtype=np.int64)
    for start, end, label in sorted(spans, key=lambda s: (s[0], s[1])):
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise MonosemanticError(f"span ({start!r}, {end!r}, {label!r}) is not inside the text's {len(text)} "
                                    "characters; expected 0 <= start < end <= len(text)")
        if (categories_C[start:end] >= 0).any():
            raise MonosemanticError(f"span ({start}, {end}, {label!r}) overlaps an earlier span; expected "
                                    "disjoint spans; merge or split them")
        categories_C[start:end] = _class_index(label, names)
    return _label_tokens(tokenizer, text, categories_C)


def labels_from_tokens(tokenizer, text: str | Sequence[int], labels: Sequence[int | str], *,
                       names: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """``(token_ids_T, labels_T)`` from one label per LM token of ``text`` (a string or token ids).

    A string is tokenized as the corpus is (no special tokens); -1 (or None) marks an unlabelled token.
    """
    if isinstance(text, str):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    else:
        ids = [int(i) for i in text]
    if len(labels) != len(ids):
        raise MonosemanticError(f"got {len(labels)} labels for {len(ids)} tokens; expected one label per token of "
                                "tokenizer(text, add_special_tokens=False); tokenize with the model's tokenizer")
    values = [-1 if label is None or label == -1 else _class_index(label, names) for label in labels]
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(values, dtype=torch.int64)


def _class_index(label, names: Sequence[str] | None) -> int:
    if isinstance(label, str):
        if names is None or label not in names:
            raise MonosemanticError(f"label {label!r} is not a known class name; expected one of "
                                    f"{list(names or [])}; pass names=[...] listing every class")
        return list(names).index(label)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
        raise MonosemanticError(f"label {label!r} is invalid; expected a class index >= 0 or a class name")
    return int(label)


def _label_tokens(tokenizer, text: str, categories_C: np.ndarray) -> tuple[Tensor, Tensor]:
    """Each LM token gets the category of its first non-space character (of its first, if all spaces)."""
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemanticError(f"labelling tokens needs character offsets, which {type(tokenizer).__name__} does "
                                "not give; load the model's fast tokenizer (AutoTokenizer, use_fast=True)")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    first_T = first_characters(text, encoded["offset_mapping"])
    inside_T = first_T < len(text)
    labels_T = np.full(first_T.shape, -1, dtype=np.int64)
    labels_T[inside_T] = categories_C[first_T[inside_T]]
    return torch.tensor(encoded["input_ids"], dtype=torch.int64), torch.from_numpy(labels_T)


# Every character str.isspace() accepts is at or below U+3000, so a small table covers them.
_SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def first_characters(text: str, offsets) -> np.ndarray:
    """``[T]`` int64: per token ``(start, end)``, the index of its first non-space character (its
    first character if all spaces): the character whose label the token takes, everywhere."""
    offsets_T2 = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    codes_C = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    solid_C = np.flatnonzero(~np.isin(codes_C, _SPACE_CODES))
    next_T = np.append(solid_C, len(text))[np.searchsorted(solid_C, offsets_T2[:, 0])]
    return np.where(next_T < offsets_T2[:, 1], next_T, offsets_T2[:, 0])


def labelled_windows(tokenizer, n_windows: int, context_length: int = 128, *, corpus: CorpusSpec = "stdlib",
                     labeller: Labeller = python_token_labels, prepend_bos: bool = False,
                     holdout: float | None = 0.05, skip_first: bool = True,
                     text_column: str = "text") -> tuple[Tensor, Tensor]:
    """``(windows_WS, labels_WS)``: the first ``n_windows`` held-out windows of ``corpus``, labelled.

    Windows are packed exactly as :func:`~monosemantic.data.token_windows` packs them (same
    documents, separators and held-out split as ``corpus_windows``), so they are the windows a
    store of that corpus holds. Labels are -1 at separators and other special tokens, at BOS,
    and at position 0 with ``skip_first`` (the attention sink, which stores never keep).
    """
    _check_positive("n_windows", n_windows)
    _check_positive("context_length", context_length, least=2)
    if holdout is not None and not 0 < holdout < 1:
        raise MonosemanticError(f"holdout={holdout!r} is not a fraction in (0, 1); try 0.05, or None for every window")
    kept: list[tuple[Tensor, Tensor]] = []
    packed = _packed(tokenizer, corpus, labeller, context_length, prepend_bos, text_column)
    for _, (window_S, labels_S) in split_windows(packed, "all" if holdout is None else "holdout", holdout or 0.0):
        kept.append((window_S, labels_S))
        if len(kept) == n_windows:
            break
    if len(kept) < n_windows:
        raise MonosemanticError(f"corpus {corpus!r} yields only {len(kept)} held-out windows of {context_length} "
                                f"tokens, fewer than the {n_windows} asked; ask for fewer windows or a bigger corpus")
    windows_WS, labels_WS = torch.stack([w for w, _ in kept]), torch.stack([lab for _, lab in kept])
    keep_WS = storable_mask(windows_WS, tokenizer.all_special_ids, skip_first=skip_first)
    return windows_WS, labels_WS.masked_fill(~keep_WS, -1)


def _packed(tokenizer, corpus, labeller: Labeller, context_length: int, prepend_bos: bool, text_column: str):
    """(window_S, labels_S) pairs, packed like ``token_windows``: document, separator, document, ..."""
    prefix = []
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise MonosemanticError("prepend_bos was requested but the tokenizer has no BOS token; run without "
                                    "prepend_bos")
        prefix = [int(tokenizer.bos_token_id)]
    body, sep = context_length - len(prefix), separator_id(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    for document in text_source(corpus, text_column=text_column):
        doc_ids_T, doc_labels_T = labeller(tokenizer, document)
        if doc_ids_T.numel() == 0:
            continue  # token_windows skips empty documents, separator included
        ids += doc_ids_T.tolist() + ([] if sep is None else [sep])
        labels += doc_labels_T.tolist() + ([] if sep is None else [-1])
        start = 0
        while len(ids) - start >= body:
            yield (torch.tensor(prefix + ids[start:start + body], dtype=torch.int64),
                   torch.tensor([-1] * len(prefix) + labels[start:start + body], dtype=torch.int64))
            start += body
        del ids[:start], labels[:start]


class LabelledRows(NamedTuple):
    """Activations of the labelled positions of some windows, one row per token."""

    acts_ND: Tensor  # float32, on the CPU
    labels_N: Tensor  # int64 class index
    window_N: Tensor  # int64 index into the windows they came from
    position_N: Tensor  # int64 position in that window


def labelled_activations(lm, site: str, windows_WS: Tensor, labels_WS: Tensor, *,
                         batch_size: int = 8) -> LabelledRows:
    """Activations of ``site`` at every position with a label (>= 0), in window order."""
    if windows_WS.shape != labels_WS.shape:
        raise MonosemanticError(f"got labels of shape {tuple(labels_WS.shape)} for windows of shape "
                                f"{tuple(windows_WS.shape)}; expected one label per token")
    site = lm.site(site).name
    keep_WS = labels_WS >= 0
    window_N, position_N = keep_WS.nonzero(as_tuple=True)
    if window_N.numel() == 0:
        raise MonosemanticError("no position has a label (all -1); expected labelled windows; check the labeller")
    rows = []
    with torch.inference_mode():
        for start in range(0, windows_WS.shape[0], batch_size):
            acts_BSD = lm.capture(windows_WS[start:start + batch_size], [site])[site]
            rows.append(acts_BSD[keep_WS[start:start + batch_size].to(acts_BSD.device)].float().cpu())
    return LabelledRows(torch.cat(rows), labels_WS[keep_WS], window_N, position_N)


def _check_positive(name: str, value, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise MonosemanticError(f"{name}={value!r} is invalid; expected an integer >= {least}")
