"""Explainers: a one-sentence description of a latent from its top-activating contexts.

An explainer has a ``source`` (recorded beside each explanation) and
``explain(examples, token_str, input_tokens=(), n_fires=0) -> str``. The examples are the ones
:func:`~.tasks.split_examples` sets aside for explaining (never a scoring context);
``input_tokens`` are the latent's most frequent firing tokens over the whole analysis
(aggregate counts, the table a dashboard shows).

- :class:`OfflineExplainer` (deterministic, no network) names the tokens carrying most of the
  latent's firing, the share of firings they cover, a frequent preceding token, and a context
  that holds nearly all strong firings (:mod:`.contexts`):
  ``fires on ' def', ' class' (74% of firings); often after '\\n'; in context in_comment (...)``.
- :class:`OpenAIExplainer` asks an LLM behind any OpenAI-compatible endpoint, showing the
  examples with their activating tokens marked ``<<like this>>`` (the delphi convention).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from ..errors import MonosemanticError
from .client import LLMReplyError, OpenAIClient
from .contexts import CONTEXT_CLAUSE, FRAGMENT_CONTEXTS, token_contexts
from .render import quote_token, render

TokenStr = Callable[[int], str]


def strong_positions(acts: Sequence[float], fraction: float = 0.5) -> list[int]:
    """Positions whose activation is positive and at least ``fraction`` of the context's peak."""
    peak = max(acts, default=0.0)
    if peak <= 0:
        return []
    return [i for i, a in enumerate(acts) if a > 0 and a >= fraction * peak]


class OfflineExplainer:
    """Names the tokens the latent fires on, up to ``coverage`` of its firing, and a frequent preceding token.

    With ``input_tokens`` (``FeatureData.top_input_tokens``: (id, fires, mean activation) over the
    whole analysis) the named tokens are those carrying the most firing mass (fires x mean), and
    the share is of all ``n_fires`` firings; without, they are the tokens firing strongly (at least
    half the context's peak) in the most examples, and the share is of examples.
    """

    source = "offline"

    def __init__(self, *, max_tokens: int = 6, coverage: float = 0.8, context_share: float = 0.4,
                 contexts: bool = True, context_precision: float = 0.8, context_lift: float = 0.3):
        self.max_tokens, self.coverage, self.context_share = max_tokens, coverage, context_share
        self.contexts, self.context_precision, self.context_lift = contexts, context_precision, context_lift

    def explain(self, examples: Sequence, token_str: TokenStr, input_tokens: Sequence = (), n_fires: int = 0) -> str:
        firing = [e for e in examples if strong_positions(e.acts)]
        if not firing and not input_tokens:
            return "does not fire in the analysed text"
        if input_tokens:
            names, share = self._from_input_tokens(input_tokens, token_str, n_fires)
            explanation = f"fires on {', '.join(quote_token(n) for n in names)} ({share}% of firings)"
        else:
            names, share = self._from_examples(firing, token_str)
            explanation = f"fires on {', '.join(quote_token(n) for n in names)} ({share}% of examples)"
        before = Counter(token_str(e.tokens[e.peak - 1]) for e in firing if e.peak > 0)
        if before:
            text, n = min(before.items(), key=lambda item: (-item[1], item[0]))
            if n >= self.context_share * len(firing) and text not in names:
                explanation += f"; often after {quote_token(text)}"
        context = self._context(firing, token_str) if self.contexts else None
        if context is not None:
            explanation += f"; {CONTEXT_CLAUSE} {context} ({FRAGMENT_CONTEXTS[context]})"
        return explanation

    def _context(self, firing: Sequence, token_str: TokenStr) -> str | None:
        """The context holding nearly all strong firings and clearly more of them than of all tokens."""
        fired, seen = Counter(), Counter()
        n_fired = n_seen = 0
        for example in firing:
            labels = token_contexts([token_str(t) for t in example.tokens])
            strong = strong_positions(example.acts)
            n_fired, n_seen = n_fired + len(strong), n_seen + len(example.tokens)
            for name, in_T in labels.items():
                fired[name] += int(in_T[strong].sum())
                seen[name] += int(in_T.sum())
        best, best_lift = None, self.context_lift
        for name in FRAGMENT_CONTEXTS:
            precision = fired[name] / max(n_fired, 1)
            lift = precision - seen[name] / max(n_seen, 1)
            if precision >= self.context_precision and lift >= best_lift:
                best, best_lift = name, lift
        return best

    def _from_input_tokens(self, input_tokens: Sequence, token_str: TokenStr, n_fires: int) -> tuple[list[str], int]:
        mass = Counter()
        fires = Counter()
        for token, count, mean in input_tokens:
            mass[token_str(token)] += count * max(mean, 0.0)
            fires[token_str(token)] += count
        total = sum(mass.values())
        names: list[str] = []
        for text, _ in sorted(mass.items(), key=lambda item: (-item[1], item[0])):
            names.append(text)
            if len(names) >= self.max_tokens or sum(mass[n] for n in names) >= self.coverage * total:
                break
        share = round(100 * sum(fires[n] for n in names) / max(n_fires, sum(fires.values()), 1))
        return names, share

    def _from_examples(self, firing: Sequence, token_str: TokenStr) -> tuple[list[str], int]:
        texts_per_example = [{token_str(e.tokens[i]) for i in strong_positions(e.acts)} for e in firing]
        counts = Counter(text for texts in texts_per_example for text in texts)
        names: list[str] = []
        covered = 0
        for text, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            names.append(text)
            covered = sum(1 for texts in texts_per_example if texts & set(names))
            if len(names) >= self.max_tokens or covered >= self.coverage * len(firing):
                break
        return names, round(100 * covered / len(firing))


EXPLAIN_SYSTEM = (
    "You are an interpretability researcher explaining one latent (feature) of a neural network that reads "
    "text. You will see text excerpts where the latent activates; in each, the tokens on which it activates "
    "are marked <<like this>>, and a list of the most activating tokens with their activation on a 0-10 "
    "scale. Say in one short sentence what the latent responds to: which tokens or kinds of token, in what "
    "context. When it fires on specific tokens, quote them exactly, in single quotes. Do not list the "
    "examples. End your answer with one line of the form\n[EXPLANATION]: <your explanation>")


def explain_prompt(examples: Sequence, token_str: TokenStr, input_tokens: Sequence = ()) -> list[dict]:
    """The chat messages asking for an explanation of a latent from ``examples`` (and its most frequent
    firing tokens, when given)."""
    peak = max((max(e.acts, default=0.0) for e in examples), default=0.0) or 1.0
    lines = []
    for n, example in enumerate(examples, 1):
        marked = [i for i, a in enumerate(example.acts) if a > 0]
        lines.append(f"Example {n}: {render(example.tokens, token_str, marked)}")
        top = sorted(marked, key=lambda i: -example.acts[i])[:3]
        shown = ", ".join(f"{quote_token(token_str(example.tokens[i]))} ({round(10 * example.acts[i] / peak)})"
                          for i in top)
        lines.append(f"Activations: {shown}")
    if input_tokens:
        frequent = ", ".join(f"{quote_token(token_str(t))} ({n} times)" for t, n, _ in list(input_tokens)[:10])
        lines.append(f"Tokens it fires on most often in the whole text: {frequent}")
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_explanation(reply: str) -> str:
    """The explanation in an LLM's reply: after the last ``[EXPLANATION]:`` (or ``Explanation:``), else its
    last non-empty line."""
    for marker in ("[EXPLANATION]:", "Explanation:", "EXPLANATION:"):
        if marker in reply:
            text = reply.rsplit(marker, 1)[1].strip().splitlines()
            if text and text[0].strip():
                return text[0].strip()
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        raise LLMReplyError("the LLM's reply holds no explanation")
    return lines[-1]


class OpenAIExplainer:
    """Explanations from an LLM behind an OpenAI-compatible endpoint (``{base_url}/chat/completions``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 client: OpenAIClient | None = None):
        self.client = client or OpenAIClient(base_url, model, api_key, timeout=timeout)
        self.source = f"llm:{self.client.model}"

    def explain(self, examples: Sequence, token_str: TokenStr, input_tokens: Sequence = (), n_fires: int = 0) -> str:
        if not any(max(e.acts, default=0.0) > 0 for e in examples):
            raise MonosemanticError("no activating example to show the LLM")
        return parse_explanation(self.client.chat(explain_prompt(examples, token_str, input_tokens)))
