"""Scorers: who judges the detection and fuzzing tasks (:mod:`.tasks`) given an explanation.

A scorer has a ``source`` and two methods returning one confidence in [0, 1] per context
(a prediction is ``confidence >= 0.5``); contexts arrive as lists of token strings:

- ``detect(explanation, contexts)``: does the latent fire anywhere in the context?
- ``fuzz(explanation, contexts, marked)``: are the marked positions the ones it fires on?

:class:`OfflineSimulator` is deterministic and needs no network: it reads the tokens an
explanation names (:func:`~.render.named_tokens`), within the context it names, if any
(:mod:`.contexts`); a context is detected when it contains a predicted token (confidence
``1 - 2**-matches``), and marks are judged by the share of marked tokens predicted.
:class:`LLMScorer` asks an LLM behind an OpenAI-compatible endpoint, a few contexts per prompt,
for a JSON list of probabilities.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from .client import LLMReplyError, OpenAIClient
from .contexts import named_context, token_contexts
from .render import MARK_CLOSE, MARK_OPEN, matches, named_tokens, render


class OfflineSimulator:
    """Predicts from the tokens the explanation names (see the module docstring)."""

    source = "offline"

    def detect(self, explanation: str, contexts: Sequence[Sequence[str]]) -> list[float]:
        predicted = self._predicted(explanation)
        return [1.0 - 0.5 ** int(predicted(context).sum()) for context in contexts]

    def fuzz(self, explanation: str, contexts: Sequence[Sequence[str]], marked: Sequence[Sequence[int]]) -> list[float]:
        predicted = self._predicted(explanation)
        return [float(predicted(context)[list(positions)].mean()) if positions else 0.0
                for context, positions in zip(contexts, marked)]

    @staticmethod
    def _predicted(explanation: str):
        """Per context, bool ``[T]``: where the explanation says the latent fires (named tokens, in its context)."""
        names, context = named_tokens(explanation), named_context(explanation)

        def predicted(tokens: Sequence[str]) -> np.ndarray:
            named_T = np.array([matches(t, names) for t in tokens], dtype=bool) if names else \
                np.full(len(tokens), context is not None)
            return named_T & token_contexts(tokens)[context] if context is not None else named_T

        return predicted


DETECT_SYSTEM = (
    "You check explanations of a neural network latent (feature) that reads text. You get an explanation of "
    "what the latent responds to and numbered text excerpts. For each excerpt, estimate the probability that "
    "the latent activates on at least one of its tokens, judging only by the explanation. Answer with only a "
    "JSON list of numbers between 0 and 1, one per excerpt, in order, e.g. [0.9, 0.1, 0.0].")

FUZZ_SYSTEM = (
    "You check explanations of a neural network latent (feature) that reads text. You get an explanation of "
    f"what the latent responds to and numbered text excerpts in which some tokens are marked {MARK_OPEN}like "
    f"this{MARK_CLOSE}. In some excerpts the marked tokens are exactly the ones the latent activates on; in "
    "others they were chosen at random. For each excerpt, estimate the probability that its marked tokens are "
    "the ones the explanation describes. Answer with only a JSON list of numbers between 0 and 1, one per "
    "excerpt, in order, e.g. [0.9, 0.1, 0.0].")

_LIST = re.compile(r"\[[^\[\]]*\]")


def parse_probabilities(reply: str, n: int) -> list[float]:
    """The last JSON list of ``n`` numbers in ``reply``, clipped to [0, 1]."""
    for candidate in reversed(_LIST.findall(reply)):
        try:
            values = json.loads(candidate)
        except ValueError:
            continue
        if len(values) == n and all(isinstance(v, (int, float)) for v in values):
            return [min(1.0, max(0.0, float(v))) for v in values]
    raise LLMReplyError(f"the LLM's reply {reply[:160]!r} holds no JSON list of {n} numbers")


class LLMScorer:
    """Detection and fuzzing judged by an LLM, ``per_prompt`` contexts per request."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 per_prompt: int = 5, client: OpenAIClient | None = None):
        self.client = client or OpenAIClient(base_url, model, api_key, timeout=timeout)
        self.per_prompt = max(1, int(per_prompt))
        self.source = f"llm:{self.client.model}"

    def detect(self, explanation: str, contexts: Sequence[Sequence[str]]) -> list[float]:
        return self._ask(DETECT_SYSTEM, explanation, ["".join(c) for c in contexts])

    def fuzz(self, explanation: str, contexts: Sequence[Sequence[str]], marked: Sequence[Sequence[int]]) -> list[float]:
        return self._ask(FUZZ_SYSTEM, explanation,
                         [render(range(len(c)), c.__getitem__, m) for c, m in zip(contexts, marked)])

    def _ask(self, system: str, explanation: str, texts: list[str]) -> list[float]:
        confidences: list[float] = []
        for start in range(0, len(texts), self.per_prompt):
            chunk = texts[start:start + self.per_prompt]
            excerpts = "\n".join(f"Excerpt {n}: {text}" for n, text in enumerate(chunk, 1))
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": f"Explanation: {explanation}\n\n{excerpts}"}]
            confidences += parse_probabilities(self.client.chat(messages), len(chunk))
        return confidences
