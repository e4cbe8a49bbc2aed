"""How steering along a latent changes the model: promoted-token probability against fluency.

For each multiple, with the latent's direction added at its site (:func:`steering`):

- ``promoted_prob``: mean next-token probability mass the model puts on the latent's promoted
  tokens, over the scored positions of the given texts (the first token and special tokens
  excluded, as in harvesting). The promoted tokens default to the top ``n_promoted`` entries of
  ``W_dec[latent] @ W_U.T`` (the direct logit effect through the unembedding), or to
  ``FeatureData.logit_effects`` when feature data is passed, or to a caller's list.
- ``ce_text``: the steered model's next-token cross-entropy (nats) on those texts: how much
  steering damages ordinary prediction.
- ``ce_generated``: the *clean* model's cross-entropy (nats per token) of the steered model's
  greedy continuations of each text's first ``prompt_tokens`` tokens: whether what the steered
  model writes still reads as text to the unsteered model. Degenerate repetition also gets a
  low value here, so ``distinct`` (distinct tokens / generated tokens) is reported beside it.
- ``promoted_generated``: the fraction of generated tokens that are promoted tokens.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import storable_mask
from ..errors import MonosemanticError
from ..evaluation.results import Result
from .steer import check_latent, generate_ids, steering, steering_vectors


@dataclass(frozen=True)
class SteeringPoint(Result):
    multiple: float  # the multiple of the decoder direction added
    promoted_prob: float  # mean next-token probability mass on the promoted tokens
    ce_text: float  # steered model's cross-entropy (nats) on the texts
    ce_generated: float  # clean model's cross-entropy (nats/token) of the steered greedy continuations
    promoted_generated: float  # fraction of generated tokens that are promoted tokens
    distinct: float  # distinct tokens / generated tokens, averaged over continuations (1: no repeats)
    sample: str  # the steered continuation of the first prompt


@dataclass(frozen=True)
class SteeringCurve(Result):
    latent: int  # the steered latent
    sites: tuple[str, ...]  # where the direction was added
    norm: float | None  # the typical site norm multiples are relative to (None: plain multiples of W_dec)
    promoted: tuple[int, ...]  # promoted token ids
    promoted_text: tuple[str, ...]  # their strings
    n_positions: int  # scored positions per multiple
    n_generated: int  # continuations per multiple
    generated_tokens: int  # tokens per continuation
    points: tuple[SteeringPoint, ...]  # one per multiple, in the order given

    def table(self) -> str:
        """A plain-text table, one row per multiple."""
        lines = [f"{'multiple':>9} {'P(promoted)':>12} {'CE text':>8} {'CE gen':>8} {'promoted%':>9} {'distinct':>8}"]
        for p in self.points:
            lines.append(f"{p.multiple:>9.3g} {p.promoted_prob:>12.4f} {p.ce_text:>8.3f} {p.ce_generated:>8.3f} "
                         f"{100 * p.promoted_generated:>8.1f}% {p.distinct:>8.2f}")
        return "\n".join(lines)


def decoder_promoted_tokens(lm, dictionary, latent: int, n: int = 10, *, feature_data=None) -> list[int]:
    """The ``n`` tokens the latent most promotes: from feature data's logit effects if given, else
    the top of its decoder row times the unembedding (the last site's slice for a crosscoder)."""
    check_latent(dictionary, latent)
    if feature_data is not None:
        return [int(token) for token, _ in feature_data.logit_effects(latent)[0][:n]]
    direction_D = list(steering_vectors(dictionary, latent).values())[-1]
    W_U_VD = lm.model.get_output_embeddings().weight.detach()
    if direction_D.shape[-1] != W_U_VD.shape[1]:
        raise MonosemanticError(f"latent {latent}'s decoder row has width {direction_D.shape[-1]}, not the model width "
                                f"{W_U_VD.shape[1]}, so it has no direct logit effect; pass promoted_tokens=[...]")
    logits_V = W_U_VD @ direction_D.to(W_U_VD.device, W_U_VD.dtype)
    return logits_V.topk(min(n, logits_V.numel())).indices.tolist()


def _batches(lm, texts_or_windows, batch_size: int) -> list[Tensor]:
    """Token-id batches ``[B, S]``: windows in chunks, each text on its own."""
    if isinstance(texts_or_windows, str):
        texts_or_windows = [texts_or_windows]
    if isinstance(texts_or_windows, Tensor):
        if texts_or_windows.ndim != 2 or texts_or_windows.is_floating_point() or texts_or_windows.shape[1] < 2:
            raise MonosemanticError("windows must be an integer [windows, positions] tensor with at least 2 "
                                    f"positions; got {tuple(texts_or_windows.shape)}")
        lm.check_context(texts_or_windows.shape[1])
        return list(texts_or_windows.long().split(batch_size))
    batches = []
    for text in texts_or_windows:
        ids_S = lm.tokenizer(text, return_tensors="pt").input_ids[0]
        if ids_S.numel() < 3:
            raise MonosemanticError(f"text {text[:40]!r} has {ids_S.numel()} tokens; steering evaluation needs at "
                                    "least 3")
        lm.check_context(ids_S.numel())
        batches.append(ids_S[None])
    if not batches:
        raise MonosemanticError("no texts given to evaluate steering on; pass a list of strings or a windows tensor")
    return batches


def _text_sums(lm, ids_BS: Tensor, promoted_P: Tensor) -> tuple[float, float, int]:
    """(sum of promoted probability mass, sum of cross-entropy, positions) over a batch's scored positions."""
    mask_BS = storable_mask(ids_BS, lm.tokenizer.all_special_ids)
    mask_BS[:, -1] = False
    ids_BS, mask_BS = ids_BS.to(lm.device), mask_BS.to(lm.device)
    logits_BSV = lm.model(input_ids=ids_BS, use_cache=False).logits
    log_probs_NV = logits_BSV[mask_BS].float().log_softmax(-1)
    targets_N = ids_BS[:, 1:][mask_BS[:, :-1]]
    mass = float(log_probs_NV[:, promoted_P.to(lm.device)].exp().sum(dtype=torch.float64))
    ce = float(-log_probs_NV.gather(1, targets_N[:, None]).sum(dtype=torch.float64))
    return mass, ce, int(mask_BS.sum())


def _generate_all(lm, prompts: list[Tensor], max_new_tokens: int) -> list[Tensor]:
    """Greedy continuations ``[1, T]`` of each prompt, prompts of equal length generated as one batch."""
    by_length: dict[int, list[int]] = {}
    for i, prompt_1S in enumerate(prompts):
        by_length.setdefault(prompt_1S.shape[1], []).append(i)
    out: dict[int, Tensor] = {}
    for indices in by_length.values():
        new_BT = generate_ids(lm, torch.cat([prompts[i] for i in indices]), max_new_tokens, fixed_length=True).cpu()
        for row, i in enumerate(indices):
            out[i] = new_BT[row:row + 1]
    return [out[i] for i in range(len(prompts))]


def _clean_ce(lm, prompt_1S: Tensor, new_1T: Tensor) -> float:
    """The clean model's mean cross-entropy of ``new_1T`` following ``prompt_1S``."""
    ids_1S = torch.cat([prompt_1S, new_1T], dim=1).to(lm.device)
    log_probs_SV = lm.model(input_ids=ids_1S, use_cache=False).logits[0].float().log_softmax(-1)
    start = prompt_1S.shape[1]
    targets_T = ids_1S[0, start:]
    return float(-log_probs_SV[start - 1:-1].gather(1, targets_T[:, None]).mean())


def steering_curve(lm, dictionary, latent: int, multiples: Sequence[float], texts_or_windows, *,
                   promoted_tokens: Sequence[int] | None = None, n_promoted: int = 10, feature_data=None,
                   site: str | None = None, norm: float | None = None, n_generate: int = 4, prompt_tokens: int = 8,
                   max_new_tokens: int = 20, batch_size: int = 4, progress: bool = True) -> SteeringCurve:
    """Promoted-token probability and fluency of the model steered along ``latent``, per multiple.

    ``texts_or_windows``: a list of strings or a ``[W, S]`` tensor of token windows. The first
    ``n_generate`` of them, cut to ``prompt_tokens`` tokens, are the prompts of the generated
    continuations. See the module docstring for each measure.
    """
    latent = check_latent(dictionary, latent)
    if not multiples:
        raise MonosemanticError("no multiples given; pass e.g. [0, 2, 4, 8, 16]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MonosemanticError(f"batch_size={batch_size!r} is invalid; expected a positive number of windows, e.g. 4")
    promoted = list(promoted_tokens) if promoted_tokens is not None else \
        decoder_promoted_tokens(lm, dictionary, latent, n_promoted, feature_data=feature_data)
    if not promoted:
        raise MonosemanticError("the promoted token list is empty; pass promoted_tokens=[token ids] or a larger "
                                "n_promoted")
    promoted_P = torch.tensor(promoted, dtype=torch.long)
    batches = _batches(lm, texts_or_windows, batch_size)
    prompts = [ids_S[:prompt_tokens][None] for batch in batches for ids_S in batch][:n_generate]
    points, sites = [], ()
    with torch.inference_mode():
        for multiple in tqdm(list(multiples), desc="steering", disable=not progress):
            with steering(lm, dictionary, latent, float(multiple), site=site, norm=norm) as added:
                sites = tuple(added)
                mass = ce = 0.0
                count = 0
                for ids_BS in batches:
                    batch_mass, batch_ce, n = _text_sums(lm, ids_BS, promoted_P)
                    mass, ce, count = mass + batch_mass, ce + batch_ce, count + n
                if count == 0:
                    raise MonosemanticError("the texts have no position to score (all special or first); pass "
                                            "longer text")
                generated = _generate_all(lm, prompts, max_new_tokens)
            points.append(_point(lm, float(multiple), mass, ce, count, prompts, generated, promoted_P))
    return SteeringCurve(latent=latent, sites=sites, norm=norm, promoted=tuple(promoted),
                         promoted_text=tuple(lm.tokenizer.decode([t]) for t in promoted), n_positions=count,
                         n_generated=len(prompts), generated_tokens=max_new_tokens, points=tuple(points))


def _point(lm, multiple: float, mass: float, ce: float, count: int, prompts: list[Tensor], generated: list[Tensor],
           promoted_P: Tensor) -> SteeringPoint:
    ce_generated = [_clean_ce(lm, p, g) for p, g in zip(prompts, generated)]
    tokens = [g[0] for g in generated]
    mean = lambda values: sum(values) / len(values) if values else math.nan
    return SteeringPoint(
        multiple=multiple, promoted_prob=mass / count, ce_text=ce / count,
        ce_generated=mean(ce_generated),
        promoted_generated=mean([float(torch.isin(t, promoted_P).float().mean()) for t in tokens]),
        distinct=mean([len(set(t.tolist())) / t.numel() for t in tokens]),
        sample=lm.tokenizer.decode(tokens[0]) if tokens else "")


def plot_steering_curve(curve: SteeringCurve, path: str | os.PathLike) -> Path:
    """A PNG: promoted-token probability (left axis) and the two cross-entropies (right axis) by multiple."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MonosemanticError("plotting needs matplotlib, which is not installed; run pip install "
                                "'monosemantic[eval]'") from None
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    left = figure.add_subplot(1, 1, 1)
    x = [p.multiple for p in curve.points]
    left.plot(x, [p.promoted_prob for p in curve.points], "o-", color="tab:blue", label="P(promoted tokens)")
    left.set_xlabel("multiple of the decoder direction" + (" (x typical norm)" if curve.norm else ""))
    left.set_ylabel("next-token probability on promoted tokens", color="tab:blue")
    right = left.twinx()
    right.plot(x, [p.ce_text for p in curve.points], "s--", color="tab:red", label="CE on text (steered)")
    right.plot(x, [p.ce_generated for p in curve.points], "^:", color="tab:orange", label="CE of generations (clean)")
    right.set_ylabel("cross-entropy (nats)", color="tab:red")
    (left_handles, left_labels), (right_handles, right_labels) = (left.get_legend_handles_labels(),
                                                                  right.get_legend_handles_labels())
    left.legend(left_handles + right_handles, left_labels + right_labels, fontsize=8, loc="upper left")
    left.set_title(f"Steering latent {curve.latent} at {', '.join(curve.sites)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
