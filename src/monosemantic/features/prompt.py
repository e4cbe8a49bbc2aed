"""The prompt view (founding document 003): which features a prompt lights up, beside the raw neurons.

For one prompt, the dictionary's top-N features by summed activation over the prompt, each
with its activation on every token; side by side, the top-N raw coordinates of the same site
("neurons": at ``mlp_hidden`` the MLP's neurons, elsewhere the site's basis) by summed
*absolute* value, as the founding document ranks them — raw activations are signed, and a
neuron that is strongly negative everywhere is as busy as one that is strongly positive.
Codes of a sparse dictionary are non-negative, where the two rankings agree.

Positions the dictionary never trains on (position 0, the attention sink, and special tokens;
``data.storable_mask``) are not analysed: they count in no sum and show activation 0, as in
the feature analysis. Render with :func:`.terminal.render_terminal` or ``viz.prompt_html``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..data import storable_mask
from ..errors import MonosemanticError
from ..models import eval_mode
from .analysis import _sites


class ViewRow(NamedTuple):
    """One feature (or neuron) of the prompt view."""

    index: int  # latent index (feature rows) or coordinate index (neuron rows)
    total: float  # the ranking value: summed activation (features) or summed |activation| (neurons)
    acts: list[float]  # activation on every prompt token (0 where not analysed)


class PromptView(NamedTuple):
    """Everything the prompt view shows, computed once and rendered anywhere."""

    prompt: str  # the prompt as given
    site: str  # the site the dictionary reads (and the neurons are read at)
    token_ids: list[int]  # the prompt's tokens
    tokens: list[str]  # their text (raw, not escaped)
    analysed: list[bool]  # per token: counted (False for position 0 and special tokens)
    features: list[ViewRow]  # top features, highest summed activation first
    neurons: list[ViewRow]  # top raw coordinates of the site, highest summed |activation| first


def _top_rows(values_SN: Tensor, scores_N: Tensor, top_n: int) -> list[ViewRow]:
    n = min(top_n, scores_N.numel())
    order = torch.topk(scores_N.double(), n).indices
    return [ViewRow(int(i), float(scores_N[i]), [float(a) for a in values_SN[:, i].tolist()]) for i in order]


def prompt_tokens(lm, prompt: str) -> Tensor:
    """The prompt's token ids ``[1, S]``; an error for an empty or too-long prompt."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise MonosemanticError("the prompt is empty; pass some text, e.g. \"def add(a, b): return a + b\"")
    ids_1S = lm.tokenizer(prompt, return_tensors="pt").input_ids
    if ids_1S.shape[1] == 0:
        raise MonosemanticError("the prompt has no tokens; pass some text")
    limit = lm.max_context
    if limit is not None and ids_1S.shape[1] > limit:
        raise MonosemanticError(f"the prompt is {ids_1S.shape[1]} tokens long but {lm.name} reads at most {limit}; "
                                "shorten the prompt")
    lm.check_context(ids_1S.shape[1])
    return ids_1S


@torch.inference_mode()
def prompt_view(lm, dictionary, prompt: str, *, top_n: int = 10, site: str | None = None,
                skip_first: bool = True) -> PromptView:
    """The top ``top_n`` features of ``prompt`` and, beside them, the top ``top_n`` raw neurons of the site."""
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise MonosemanticError(f"top_n={top_n!r} is invalid; expected a positive integer, e.g. 10")
    site_in, _ = _sites(dictionary, site)
    ids_1S = prompt_tokens(lm, prompt)
    acts_SD = lm.capture(ids_1S, [site_in])[site_in][0].float().cpu()
    if acts_SD.shape[1] != dictionary.d_in:
        raise MonosemanticError(f"{site_in} of {lm.name} is {acts_SD.shape[1]} wide but the dictionary reads "
                                f"{dictionary.d_in}; pass the site (and model) the dictionary was trained on")
    W_enc = dictionary.W_enc
    with eval_mode(dictionary):
        codes_SF = dictionary.encode(acts_SD.to(W_enc.device, W_enc.dtype)).float().cpu()
    mask_S1 = storable_mask(ids_1S, lm.tokenizer.all_special_ids, skip_first=skip_first)[0, :, None]
    codes_SF, acts_SD = codes_SF * mask_S1, acts_SD * mask_S1
    ids = ids_1S[0].tolist()
    return PromptView(
        prompt=prompt, site=site_in, token_ids=ids,
        tokens=lm.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False),
        analysed=mask_S1[:, 0].tolist(),
        features=_top_rows(codes_SF, codes_SF.sum(0, dtype=torch.float64), top_n),
        neurons=_top_rows(acts_SD, acts_SD.abs().sum(0, dtype=torch.float64), top_n))
