"""Auto-interpretability: explanations of latents and how well they predict the latents, in the style of delphi.

Modules by role: the LLM client (:mod:`.client`), explainers (:mod:`.explainers`), scorers
(:mod:`.scorers`), the samplers of the two scoring tasks and their metrics (:mod:`.tasks`), which
latents to explain (:mod:`.select`), and the runs that put them together:

- :func:`autointerp` explains and scores latents of a :class:`~monosemantic.features.FeatureData`;
  :func:`write_autointerp` stores the results in its folder;
- :func:`explain_folders` does both for saved feature folders and compares them, with the
  judge checked against controls (``monosemantic explain``); :func:`backends` picks the
  explainer and scorer (offline, or an OpenAI-compatible endpoint);
- :func:`compare_autointerp` and :func:`compare_with_baselines` set dictionaries (an SAE,
  neurons, PCA, ICA) side by side; :func:`judge_check` says whether the judge beats the controls.
"""

from .backends import backends
from .client import LLMReplyError, LLMUnavailable, OpenAIClient
from .compare import (
    AutointerpComparison,
    ComparisonRow,
    analyze_and_score,
    compare_autointerp,
    compare_with_baselines,
)
from .explainers import (
    OfflineExplainer,
    OpenAIExplainer,
    explain_prompt,
    parse_explanation,
)
from .judge import JudgeCheck, judge_check
from .pipeline import (
    AutointerpResult,
    Explanation,
    LatentScore,
    autointerp,
    explain_latents,
    write_autointerp,
)
from .render import matches, named_tokens, quote_token, render
from .run import CONTROL_PREFIXES, FolderAutointerp, explain_folders
from .scorers import LLMScorer, OfflineSimulator, parse_probabilities
from .select import select_latents
from .tasks import (
    Sample,
    TaskScore,
    auroc,
    balanced_accuracy,
    detection_samples,
    fuzzing_samples,
    score_predictions,
    split_examples,
)

__all__ = ["AutointerpComparison", "AutointerpResult", "CONTROL_PREFIXES", "ComparisonRow", "Explanation",
           "FolderAutointerp", "JudgeCheck", "LLMReplyError", "LLMScorer", "LLMUnavailable", "LatentScore",
           "OfflineExplainer", "OfflineSimulator", "OpenAIClient", "OpenAIExplainer", "Sample", "TaskScore",
           "analyze_and_score", "auroc", "autointerp", "backends", "balanced_accuracy", "compare_autointerp",
           "compare_with_baselines", "detection_samples", "explain_folders", "explain_latents", "explain_prompt",
           "fuzzing_samples", "judge_check", "matches", "named_tokens", "parse_explanation", "parse_probabilities",
           "quote_token", "render", "score_predictions", "select_latents", "split_examples", "write_autointerp"]
