"""Contextual tasks that any text supports: labels read from the text itself, no annotation.

Each task marks characters by their *context*, not by what they are: inside parentheses,
inside double quotes, in a sentence that ends with a question mark, at the start of a line, in
an indented line. A token is positive when its first non-space character is, so a probe must
read the context from the residual stream; the token alone rarely tells. These are what a
corpus without labels is scored on (prose or code alike).
"""

from __future__ import annotations

import re

import numpy as np

TEXT_CONTEXTS = {
    "in_parentheses": "inside round brackets ( ... )",
    "in_square_brackets": "inside square brackets [ ... ]",
    "in_double_quotes": "between a pair of double quotes in one paragraph",
    "in_question": "in a sentence that ends with a question mark",
    "line_start": "the first word of a line",
    "indented_line": "on a line that starts with spaces or a tab",
}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n\s*\n")
_PARAGRAPH = re.compile(r"\n\s*\n")


def text_context_chars(text: str) -> dict[str, np.ndarray]:
    """``{task: bool [C]}`` for every task of :data:`TEXT_CONTEXTS` (every character is labelled)."""
    return {"in_parentheses": _inside(text, "(", ")"), "in_square_brackets": _inside(text, "[", "]"),
            "in_double_quotes": _in_quotes(text), "in_question": _in_question(text),
            "line_start": _line_start(text), "indented_line": _indented(text)}


def _inside(text: str, opening: str, closing: str) -> np.ndarray:
    """Characters after an unmatched ``opening`` (a stray closer is ignored); brackets pair within a
    paragraph, so one unclosed ``(`` cannot mark the rest of a document."""
    mask_C = np.zeros(len(text), dtype=bool)
    pattern = re.compile(re.escape(opening) + "|" + re.escape(closing))
    start = 0
    for paragraph in [*_PARAGRAPH.finditer(text), None]:
        end = paragraph.start() if paragraph is not None else len(text)
        depth, since = 0, start
        for match in pattern.finditer(text, start, end):
            if match.group() == opening:
                depth, since = depth + 1, (match.end() if depth == 0 else since)
            elif depth:
                depth -= 1
                if depth == 0:
                    mask_C[since:match.start()] = True
        if depth:
            mask_C[since:end] = True
        start = paragraph.end() if paragraph is not None else len(text)
    return mask_C


def _in_quotes(text: str) -> np.ndarray:
    mask_C = np.zeros(len(text), dtype=bool)
    start = 0
    # Quotes pair within a paragraph, so one stray quote cannot flip the rest of a document.
    for paragraph in [*_PARAGRAPH.finditer(text), None]:
        end = paragraph.start() if paragraph is not None else len(text)
        quotes = [start + m.start() for m in re.finditer('"', text[start:end])]
        for open_at, close_at in zip(quotes[0::2], quotes[1::2]):
            mask_C[open_at + 1:close_at] = True
        start = paragraph.end() if paragraph is not None else len(text)
    return mask_C


def _in_question(text: str) -> np.ndarray:
    mask_C = np.zeros(len(text), dtype=bool)
    start = 0
    for end in _SENTENCE_END.finditer(text):
        if end.group() == "?":
            mask_C[start:end.end()] = True
        start = end.end()
    return mask_C


def _line_start(text: str) -> np.ndarray:
    mask_C = np.zeros(len(text), dtype=bool)
    for line in re.finditer(r"^[ \t]*(\S+)", text, flags=re.MULTILINE):
        mask_C[line.start(1):line.end(1)] = True
    return mask_C


def _indented(text: str) -> np.ndarray:
    mask_C = np.zeros(len(text), dtype=bool)
    for line in re.finditer(r"^[ \t]+\S.*$", text, flags=re.MULTILINE):
        mask_C[line.start():line.end()] = True
    return mask_C
