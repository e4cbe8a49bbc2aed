"""Choosing the explainer and the judge: the offline pair, or an LLM behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from ..errors import MonosemanticError
from .client import OpenAIClient
from .explainers import OfflineExplainer, OpenAIExplainer
from .scorers import LLMScorer, OfflineSimulator


def backends(llm_url: str | None = None, llm_model: str | None = None, *, key_env: str | None = None,
             timeout: float = 60.0):
    """``(explainer, scorer)``: the offline pair without ``llm_url``, else one LLM client shared by both.

    ``key_env`` names the environment variable holding the API key (the key itself is never passed
    around, so it cannot end up in results or logs).
    """
    if llm_url is None:
        return OfflineExplainer(), OfflineSimulator()
    if not llm_model:
        raise MonosemanticError(f"an LLM endpoint ({llm_url}) needs the model name it serves; pass --llm-model "
                                "(llm_model=)")
    client = OpenAIClient.from_env(llm_url, llm_model, key_env, timeout=timeout)
    return OpenAIExplainer(llm_url, llm_model, client=client), LLMScorer(llm_url, llm_model, client=client)
