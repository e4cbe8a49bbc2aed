"""Contexts the offline explainer may name and the offline simulator can check, from token strings alone.

The explainer and simulator see a context as a list of token strings, not the document it came
from, so only contexts readable from a fragment are used: the text contexts (inside brackets or
quotes, a question, a line start, an indented line) and the Python contexts ``tokenize`` gives
(a comment, an f-string, nesting depth). The ``ast`` contexts need whole documents and are left
out. A token is in a context when its first non-space character is, as in the probing tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..evaluation.contexts import PYTHON_CONTEXTS, python_context_chars
from ..evaluation.labels import first_characters
from ..evaluation.text_contexts import TEXT_CONTEXTS, text_context_chars

CONTEXT_CLAUSE = "in context"  # how explanations name one: "...; in context in_comment (inside a comment)"
_CLAUSE = re.compile(r"\b" + CONTEXT_CLAUSE + r" ([a-z][a-z0-9_]*)")
FRAGMENT_CONTEXTS = {**TEXT_CONTEXTS, **{t.name: t.description for t in PYTHON_CONTEXTS if not t.uses_ast}}


def token_contexts(tokens: Sequence[str]) -> dict[str, np.ndarray]:
    """``{context: bool [T]}``: which tokens of a context (token strings) are in each of :data:`FRAGMENT_CONTEXTS`."""
    text = "".join(tokens)
    if not text:
        return {name: np.zeros(len(tokens), dtype=bool) for name in FRAGMENT_CONTEXTS}
    ends_T = np.cumsum([len(t) for t in tokens])
    first_T = np.minimum(first_characters(text, np.stack([ends_T - [len(t) for t in tokens], ends_T], 1)),
                         len(text) - 1)
    masks = dict(text_context_chars(text))
    for name, (valid_C, mask_C) in python_context_chars(text).items():
        if name in FRAGMENT_CONTEXTS:
            masks[name] = mask_C & valid_C
    return {name: masks[name][first_T] for name in FRAGMENT_CONTEXTS}


def named_context(explanation: str) -> str | None:
    """The context an explanation names (``in context NAME``), if it is one this module can check."""
    found = _CLAUSE.search(explanation)
    return found.group(1) if found and found.group(1) in FRAGMENT_CONTEXTS else None
