"""Token text in explanations and prompts: quoting token names, reading them back, marking contexts.

Explanations name tokens as Python string literals (``' def'``, ``'\\n'``), so a token with
leading whitespace or a newline survives the round trip :func:`quote_token` ->
:func:`named_tokens`. Quoted tokens in a clause about context (after ``after``, ``before``,
``following``, ``preceded``, up to the next ``;``) describe neighbours, not the tokens the latent
fires on, and are not counted as named.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Sequence

# A quoted literal that starts and ends at a word boundary (so the apostrophe in "it's" opens nothing).
_QUOTED = re.compile(r"""(?<!\w)('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")(?!\w)""")
_CONTEXT_WORDS = re.compile(r"\b(after|before|following|followed|preceded|preceding|next to)\b", re.IGNORECASE)

MARK_OPEN, MARK_CLOSE = "<<", ">>"


def quote_token(text: str) -> str:
    """A token's text as a Python string literal (``' def'``)."""
    return repr(text)


def named_tokens(explanation: str) -> list[str]:
    """The token strings an explanation says the latent fires on (quoted literals outside context clauses)."""
    names: list[str] = []
    in_context = False
    position = 0
    for match in _QUOTED.finditer(explanation):
        in_context = _context_after(explanation[position:match.start()], in_context)
        position = match.end()
        if in_context:
            continue
        try:
            value = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            value = match.group(1)[1:-1]
        if isinstance(value, str) and value and value not in names:
            names.append(value)
    return names


def _context_after(text: str, in_context: bool) -> bool:
    """Whether quoted literals following ``text`` sit in a context clause."""
    if ";" in text:
        in_context = False
        text = text.rsplit(";", 1)[1]
    return in_context or bool(_CONTEXT_WORDS.search(text))


def matches(token_text: str, names: Iterable[str]) -> bool:
    """Whether a token is one of ``names``, ignoring case. A name written with surrounding whitespace
    (``' self'``, ``'\\n'``) is exact about it; a bare name (``'self'``) matches the token with any
    surrounding whitespace, as an LLM would mean it."""
    lowered, bare = token_text.lower(), token_text.strip().lower()
    return any((lowered if name != name.strip() else bare) == name.lower() for name in names)


def render(tokens: Sequence[int], token_str: Callable[[int], str], marked: Iterable[int] = ()) -> str:
    """The context as text, each run of marked positions wrapped in ``<<...>>``."""
    marked = set(marked)
    parts: list[str] = []
    for i, token in enumerate(tokens):
        if i in marked and i - 1 not in marked:
            parts.append(MARK_OPEN)
        parts.append(token_str(token))
        if i in marked and i + 1 not in marked:
            parts.append(MARK_CLOSE)
    return "".join(parts)
