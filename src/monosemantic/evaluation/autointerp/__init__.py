"""Auto-interpretability: explanations of latents and how well they predict the latents, in the style of delphi.

- Explainers: :class:`OfflineExplainer` (deterministic, from top tokens and contexts) and
  :class:`OpenAIExplainer` (any OpenAI-compatible endpoint).
- Scorers for the detection and fuzzing tasks (:mod:`.tasks`): :class:`OfflineSimulator` and
  :class:`LLMScorer`.
- :func:`autointerp` explains and scores latents of a :class:`~monosemantic.features.FeatureData`;
  :func:`write_autointerp` stores the results in its folder; :func:`compare_autointerp` and
  :func:`compare_with_baselines` set dictionaries (an SAE, neurons, PCA, ICA) side by side.
"""

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

__all__ = ["AutointerpComparison", "AutointerpResult", "ComparisonRow", "Explanation", "LLMReplyError", "LLMScorer",
           "LLMUnavailable", "LatentScore", "OfflineExplainer", "OfflineSimulator", "OpenAIClient", "OpenAIExplainer",
           "JudgeCheck", "Sample", "TaskScore", "analyze_and_score", "auroc", "autointerp", "balanced_accuracy", "compare_autointerp",
           "compare_with_baselines", "detection_samples", "explain_latents", "explain_prompt", "fuzzing_samples", "judge_check",
           "matches", "named_tokens", "parse_explanation", "parse_probabilities", "quote_token", "render",
           "score_predictions", "select_latents", "split_examples", "write_autointerp"]
