"""The first-letter spelling task (Chanin et al. 2024, "A is for Absorption"), from a tokenizer's own vocabulary.

Words are the vocabulary's tokens that decode to a space and ASCII letters (``" snake"``; with
``leading_space=False`` letters alone, ``"snake"``; None: both), at least ``min_length``
letters long; each is labelled by its first letter, lower-cased (0 for "a" ... 25 for "z").

Activations are read at the word in a few-shot prompt, one forward per batch of words::

    The first letters of words: cat C, rain R, house H, moon M, snake
                                                                ^^^^^^ read here

The prompt is ``prefix`` followed by the word's token id itself (not re-tokenized text, so the
token is exactly the vocabulary's). A causal model's activation at the word does not depend on
what follows it, so nothing is needed after it; every prompt has the same length, so batches
need no padding, and the prefix's keys and values are computed once and reused for every
batch (one token per word runs, not the whole prompt: 11-13x faster on SmolLM2). The default
prefix ends with a comma, after which a word with a leading space is natural, and puts the
model in a "first letter" context as the paper's ICL prompt does.
"""

from __future__ import annotations

import copy
import inspect
import string

import numpy as np
import torch
from torch import Tensor

from ..errors import MonosemanticError
from ..models.capture import capture

LETTERS = tuple(string.ascii_lowercase)
DEFAULT_PREFIX = "The first letters of words: cat C, rain R, house H, moon M,"


def first_letter_task(tokenizer, *, leading_space: bool | None = True, min_length: int = 2,
                      max_per_letter: int | None = 200, seed: int = 0) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """``(token_ids_N, letters_N, words)``: vocabulary words, their first letter's index in :data:`LETTERS`, their text.

    At most ``max_per_letter`` words per letter (drawn with ``seed``), so common letters do not
    crowd out rare ones and activations stay cheap; words come sorted by token id.
    """
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise MonosemanticError(f"min_length={min_length!r} is invalid; expected a positive number of letters")
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    by_letter: dict[int, list[int]] = {}
    for token_id, text in enumerate(texts):
        word = _word(text, leading_space)
        if word is not None and len(word) >= min_length and token_id not in special:
            by_letter.setdefault(LETTERS.index(word[0].lower()), []).append(token_id)
    if not by_letter:
        raise MonosemanticError("the tokenizer's vocabulary holds no alphabetic word tokens; expected tokens such "
                                "as ' snake'; try leading_space=None")
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, int]] = []  # (token id, letter index)
    for letter, ids in by_letter.items():
        if max_per_letter is not None and len(ids) > max_per_letter:
            ids = rng.choice(ids, size=max_per_letter, replace=False).tolist()
        kept += [(token_id, letter) for token_id in ids]
    kept.sort()
    token_ids, letters = [i for i, _ in kept], [letter for _, letter in kept]
    return (torch.tensor(token_ids, dtype=torch.int64), torch.tensor(letters, dtype=torch.int64),
            tuple(texts[i] for i in token_ids))


def _word(text: str, leading_space: bool | None) -> str | None:
    """The letters of a token that is a word of the requested kind, else None."""
    if text.startswith(" ") and leading_space is not False:
        text = text[1:]
    elif leading_space is True:
        return None
    return text if text.isascii() and text.isalpha() else None


@torch.inference_mode()
def word_activations(lm, site: str, token_ids_N: Tensor, *, prefix: str = DEFAULT_PREFIX,
                     batch_size: int = 256) -> Tensor:
    """``[N, D]`` float32: ``site``'s activation at each word, read after ``prefix`` (see the module doc)."""
    site = lm.site(site).name
    prefix_ids = lm.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    if not prefix_ids:
        # Alone at position 0 a word would sit at the attention sink, whose activations are unlike any other.
        raise MonosemanticError("the prompt prefix is empty; expected a few tokens before the word; pass "
                                "prefix=DEFAULT_PREFIX or your own")
    prefix_cache, cache_arg = _prefix_cache(lm, prefix_ids)
    rows = []
    for start in range(0, token_ids_N.shape[0], batch_size):
        words_B = token_ids_N[start:start + batch_size]
        if prefix_cache is None:  # the whole prompt per word
            ids_BS = torch.cat([torch.tensor(prefix_ids).expand(words_B.shape[0], -1), words_B[:, None]], dim=1)
            rows.append(lm.capture(ids_BS, [site])[site][:, -1].float().cpu())
            continue
        cache = copy.deepcopy(prefix_cache)  # a forward appends to the cache it is given
        cache.batch_repeat_interleave(words_B.shape[0])
        acts_B1D = capture(lm.model, words_B[:, None].to(lm.device), [lm.site(site)], use_cache=True,
                           **{cache_arg: cache})[site]
        rows.append(acts_B1D[:, -1].float().cpu())
    return torch.cat(rows)


def _prefix_cache(lm, prefix_ids: list[int]):
    """(the model's key/value cache of ``prefix_ids``, the forward argument that takes it); (None, None) where
    the model returns no cache that can be copied per batch (older transformers return tuples)."""
    # transformers 5 renamed ``past_key_values`` to ``cache``; older versions know only the first.
    cache_arg = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    out = lm.model(input_ids=torch.tensor([prefix_ids], device=lm.device), use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None, None
    return cache, cache_arg
