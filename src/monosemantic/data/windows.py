"""Turning documents into fixed-length token windows, and choosing which positions to store.

Documents are tokenized without special tokens, joined into one stream with a separator token
after each document, and cut into consecutive, non-overlapping windows. Packing (rather than one
padded window per document) wastes no compute on padding and matches how LMs are pretrained, so
the activations seen are the model's usual ones. :func:`check_windows` is the one check that a
caller's windows are what every reader of windows expects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any

import torch

from monosemantic.errors import MonosemanticError

# A tokenizer batch is closed at docs_per_batch documents or at this many characters, whichever
# comes first. The character cap keeps the generator lazy when documents are long (the first
# window appears after ~this much text, not after docs_per_batch huge documents) while batches
# stay big enough for a fast tokenizer to spread across cores.
_BATCH_CHARS = 200_000


def separator_id(tokenizer: Any) -> int | None:
    """The token placed after every document: EOS, else BOS, else none."""
    for token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def token_windows(
    source: Iterable[str],
    tokenizer: Any,
    context_length: int,
    *,
    prepend_bos: bool = False,
    docs_per_batch: int = 64,
) -> Iterator[torch.Tensor]:
    """Yield int64 windows of shape ``[context_length]`` from the packed token stream of ``source``.

    With ``prepend_bos`` every window is ``[bos] + (context_length - 1)`` stream tokens, for
    models that expect a BOS at position 0. A final partial window is dropped. Documents that
    tokenize to nothing are skipped (they would only add a lone separator).
    """
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise MonosemanticError(
            f"context length {context_length!r} is too small; expected an integer >= 2; "
            "try 128 or more"
        )
    if docs_per_batch < 1:
        raise MonosemanticError(f"docs_per_batch {docs_per_batch!r} must be >= 1; try 64")
    prefix: list[int] = []
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise MonosemanticError(
                "prepend_bos was requested but the tokenizer has no BOS token; expected a "
                "tokenizer with bos_token_id; run without prepend_bos"
            )
        prefix = [int(tokenizer.bos_token_id)]
    body = context_length - len(prefix)
    sep = separator_id(tokenizer)
    suffix = [] if sep is None else [sep]

    stream: list[int] = []
    for ids_per_doc in _tokenized_batches(source, tokenizer, docs_per_batch):
        for ids in ids_per_doc:
            if ids:
                stream.extend(ids)
                stream.extend(suffix)
        start = 0
        while len(stream) - start >= body:
            yield torch.tensor(prefix + stream[start : start + body], dtype=torch.int64)
            start += body
        # Drop consumed tokens once per batch, not per window, to keep this linear.
        del stream[:start]


def _tokenized_batches(
    source: Iterable[str], tokenizer: Any, docs_per_batch: int
) -> Iterator[list[list[int]]]:
    """Token ids of the documents, one list per tokenizer call."""
    batch: list[str] = []
    chars = 0
    for doc in source:
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= docs_per_batch or chars >= _BATCH_CHARS:
            yield _encode(tokenizer, batch)
            batch, chars = [], 0
    if batch:
        yield _encode(tokenizer, batch)


def _encode(tokenizer: Any, docs: list[str]) -> list[list[int]]:
    # verbose=False: documents are routinely longer than model_max_length here, which is fine
    # because they are cut into windows, so the "sequence too long" warning is only noise.
    encoded = tokenizer(docs, add_special_tokens=False, return_attention_mask=False, verbose=False)
    return encoded["input_ids"]


def storable_mask(
    windows_BS: torch.Tensor, special_ids: Collection[int], *, skip_first: bool = True
) -> torch.Tensor:
    """True where a position's activation should be stored, as a ``[B, S]`` bool tensor.

    Excluded: special tokens (document separators, BOS, padding) whose activations say nothing
    about text, and position 0 when ``skip_first``. Position 0 is an attention sink: on SmolLM2
    its residual norm is ~7x that of other positions, so keeping it would let ~30% of the
    activation variance come from a single, uninteresting position and dominate the dictionary.
    """
    if windows_BS.dim() != 2:
        raise MonosemanticError(
            f"windows have shape {tuple(windows_BS.shape)}; expected [batch, seq]; "
            "stack windows into a 2-D tensor"
        )
    mask_BS = torch.ones(windows_BS.shape, dtype=torch.bool, device=windows_BS.device)
    ids = sorted({int(i) for i in special_ids if i is not None})
    if ids:
        specials = torch.tensor(ids, dtype=windows_BS.dtype, device=windows_BS.device)
        mask_BS &= ~torch.isin(windows_BS, specials)
    if skip_first:
        mask_BS[:, 0] = False
    return mask_BS


def check_windows(windows_WS) -> torch.Tensor:
    """``windows_WS`` as an int64 ``[W, S]`` tensor with ``S >= 2`` (a next token to predict)."""
    if not isinstance(windows_WS, torch.Tensor) or windows_WS.ndim != 2 or windows_WS.is_floating_point() \
            or windows_WS.shape[0] < 1 or windows_WS.shape[1] < 2:
        got = tuple(windows_WS.shape) if isinstance(windows_WS, torch.Tensor) else type(windows_WS).__name__
        raise MonosemanticError(f"token windows must be an integer [windows, positions] tensor with at least 2 "
                                f"positions; got {got}; stack token_windows(...) with torch.stack")
    return windows_WS.long()
