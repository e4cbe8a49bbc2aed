"""Steering: adding a multiple of a latent's decoder direction at its site during forward passes.

``with steering(lm, sae, latent=12, multiple=8): lm.model(ids)`` runs the model with
``8 * W_dec[12]`` added to the site's activation at every position. The site is where the
dictionary writes: ``site_in`` for an autoencoder, ``site_out`` for a transcoder, and every
source site for a crosscoder (its decoder slice for each source is added at that source).

Scale convention: by default the added vector is ``multiple * W_dec[latent]``; our decoder rows
are unit norm, so ``multiple`` is the length of the added vector in the site's own units (for a
latent, the activation it would need to write this much). With ``norm=`` (e.g. from
:func:`typical_norm`) the row is normalised and the vector has length ``multiple * norm``, so
``multiple`` is a fraction of the site's typical activation norm and comparable across sites
and models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor

from ..data import storable_mask
from ..errors import MonosemanticError
from ..models import splice


def check_latent(dictionary, latent) -> int:
    """``latent`` as an int in ``[0, d_sae)``, or an error naming the valid range."""
    n = dictionary.config.d_sae
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < n:
        raise MonosemanticError(f"latent {latent!r} is out of range: this dictionary has {n} latents, "
                                f"numbered 0 to {n - 1}")
    return latent


def steering_vectors(dictionary, latent: int, *, site: str | None = None) -> dict[str, Tensor]:
    """``{site: direction_D}``: each site the latent writes to and its (detached) decoder row there."""
    latent = check_latent(dictionary, latent)
    config = dictionary.config
    W_dec = dictionary.W_dec.detach()
    if dictionary.n_sites > 1:  # W_dec [F, S, D]: one slice per site
        sites = dictionary.sites
        if site is not None or None in sites:
            raise MonosemanticError(f"a {dictionary.arch} dictionary steers at all its sites at once; it needs its "
                                    "sites recorded (the 'sites' option) and no site= override")
        return {name: W_dec[latent, s] for s, name in enumerate(sites)}
    target = site or (config.site_out if config.is_transcoder else config.site_in)
    if target is None:
        raise MonosemanticError(f"the {config.arch} dictionary's config does not say which site it writes to; "
                                "pass site='blocks.L.kind'")
    return {target: W_dec[latent]}


@contextmanager
def steering(lm, dictionary, latent: int, multiple: float, *, site: str | None = None,
             norm: float | None = None) -> Iterator[dict[str, Tensor]]:
    """Within the block, ``multiple * W_dec[latent]`` is added at the latent's site(s) on every position.

    ``norm``: if given, the direction is unit-normalised and scaled by ``multiple * norm`` (see the
    module docstring). Yields ``{site: added_vector_D}``.
    """
    vectors = steering_vectors(dictionary, latent, site=site)
    added: dict[str, Tensor] = {}
    for name, direction_D in vectors.items():
        resolved = lm.site(name).name
        width = lm.width(resolved)
        if direction_D.shape[-1] != width:
            raise MonosemanticError(f"latent {latent}'s decoder row has width {direction_D.shape[-1]} but site "
                                    f"{resolved} of {lm.name} has width {width}; pass the site the dictionary "
                                    "was trained on")
        if norm is not None:
            direction_D = direction_D / direction_D.norm().clamp_min(1e-12) * float(norm)
        added[resolved] = (float(multiple) * direction_D).to(lm.device, lm.dtype)
    with ExitStack() as stack:
        for name, vector_D in added.items():
            stack.enter_context(splice(lm, name, lambda acts_BSD, v=vector_D: acts_BSD + v))
        yield added


def typical_norm(lm, site: str, windows_WS: Tensor, batch_size: int = 8) -> float:
    """Mean L2 norm of ``site``'s activation over the storable positions of ``windows_WS`` (first and
    special positions excluded: the attention sink's norm is several times the others')."""
    site = lm.site(site).name
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, windows_WS.shape[0], batch_size):
            ids_BS = windows_WS[start:start + batch_size]
            mask_BS = storable_mask(ids_BS, lm.tokenizer.all_special_ids)
            acts_BSD = lm.capture(ids_BS, [site])[site]
            total += float(acts_BSD[mask_BS.to(acts_BSD.device)].float().norm(dim=-1).sum())
            count += int(mask_BS.sum())
    if count == 0:
        raise MonosemanticError("the windows have no ordinary token to measure the site's norm on; pass longer text")
    return total / count


def prompt_ids(lm, prompt: str, extra_tokens: int = 0) -> Tensor:
    """``[1, S]`` token ids of ``prompt``, checked to fit the model's context with ``extra_tokens`` more."""
    if not isinstance(prompt, str) or not prompt:
        raise MonosemanticError("the prompt is empty; pass some text to continue")
    ids_S = lm.tokenizer(prompt, return_tensors="pt").input_ids[0]
    if ids_S.numel() == 0:
        raise MonosemanticError(f"the prompt {prompt!r} has no tokens; pass some text to continue")
    limit = lm.max_context
    if limit is not None and ids_S.numel() + extra_tokens > limit:
        raise MonosemanticError(f"the prompt is {ids_S.numel()} tokens and {extra_tokens} more are to be generated, "
                                f"longer than {lm.name} allows ({limit} positions); shorten the prompt or "
                                "generate fewer tokens")
    return ids_S[None].to(lm.device)


def generate_ids(lm, ids_BS: Tensor, max_new_tokens: int, *, greedy: bool = True, seed: int = 0,
                 fixed_length: bool = False) -> Tensor:
    """``[B, new]`` tokens the model generates after ``ids_BS`` (under whatever hooks are active).

    ``fixed_length``: never stop at the end-of-text token, so every row has ``max_new_tokens``.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise MonosemanticError(f"max_new_tokens={max_new_tokens!r} is invalid; expected a positive number, e.g. 40")
    lm.check_context(ids_BS.shape[1] + max_new_tokens)
    tokenizer = lm.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Sampling draws from the global RNG; forking keeps the caller's random state untouched.
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        out_BS = lm.model.generate(ids_BS.to(lm.device), attention_mask=torch.ones_like(ids_BS, device=lm.device),
                                   max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens if fixed_length else 0,
                                   do_sample=not greedy, pad_token_id=pad,
                                   **({} if not greedy else {"temperature": None, "top_p": None, "top_k": None}))
    return out_BS[:, ids_BS.shape[1]:]


def generate_steered(lm, dictionary, latent: int, multiple: float, prompt: str, *, max_new_tokens: int = 40,
                     greedy: bool = True, seed: int = 0, site: str | None = None, norm: float | None = None) -> str:
    """The text the model writes after ``prompt`` while steered (the continuation only, not the prompt).

    ``multiple=0`` gives the clean model's continuation.
    """
    ids_1S = prompt_ids(lm, prompt, max_new_tokens)
    with steering(lm, dictionary, latent, multiple, site=site, norm=norm):
        new_1T = generate_ids(lm, ids_1S, max_new_tokens, greedy=greedy, seed=seed)
    return lm.tokenizer.decode(new_1T[0], skip_special_tokens=False)
