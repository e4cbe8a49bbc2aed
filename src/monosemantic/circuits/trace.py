"""``trace``: a prompt and a target token in, a pruned attribution graph out (the API behind the CLI)."""

from __future__ import annotations

import time

import torch

from ..errors import MonosemanticError
from ..features.data import dictionary_fingerprint
from .attribution import TargetSpec, attribute
from .graph import Graph, build_graph, check_thresholds
from .replacement import Replacement


def single_token(tokenizer, text: str | int, what: str = "target") -> int:
    """The id of ``text`` if it is exactly one token (an int is taken as an id); MonosemanticError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text < len(tokenizer):
            raise MonosemanticError(f"{what} token id {text} is out of range; the vocabulary has {len(tokenizer)}")
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise MonosemanticError(f"{what} {text!r} is {len(ids)} tokens {pieces}, not one; pass a single token "
                                "(mind the leading space, e.g. ' +')")
    return ids[0]


def prompt_ids(lm, prompt: str) -> torch.Tensor:
    """The prompt's token ids, checked against the model's maximum length."""
    if not isinstance(prompt, str) or not prompt:
        raise MonosemanticError("the prompt is empty; pass some text, e.g. 'def add(a, b):\\n    return a'")
    ids = torch.tensor(lm.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    limit = lm.max_context
    if limit is not None and ids.shape[0] > limit:
        raise MonosemanticError(f"the prompt is {ids.shape[0]} tokens, longer than {lm.name} allows ({limit}); "
                                "shorten it")
    return ids


def trace(replacement: Replacement, prompt: str, target: str | int, *, minus: str | int | None = None,
          max_feature_nodes: int | None = 512, node_threshold: float = 0.8, edge_threshold: float = 0.98,
          progress: bool = True) -> Graph:
    """The attribution graph of ``target`` (a next token after ``prompt``, or ``target - minus``)."""
    lm = replacement.lm
    ids_S = prompt_ids(lm, prompt)
    spec = TargetSpec(single_token(lm.tokenizer, target),
                      None if minus is None else single_token(lm.tokenizer, minus, "minus"))
    if max_feature_nodes is not None and (isinstance(max_feature_nodes, bool) or not isinstance(max_feature_nodes, int)
                                          or max_feature_nodes < 0):
        raise MonosemanticError(f"max_feature_nodes={max_feature_nodes!r} is invalid; expected a count >= 0 or None "
                                "(every active feature)")
    check_thresholds(node_threshold, edge_threshold)
    start = time.perf_counter()
    a = attribute(replacement, ids_S, spec, max_feature_nodes=max_feature_nodes, progress=progress)
    meta = {"model": lm.describe(), "prompt": prompt, "transcoders": replacement.transcoders.config.to_dict(),
            "transcoders_fingerprint": dictionary_fingerprint(replacement.transcoders),
            "max_feature_nodes": max_feature_nodes, "seconds": round(time.perf_counter() - start, 3)}
    return build_graph(a, lm.tokenizer, node_threshold=node_threshold, edge_threshold=edge_threshold, meta=meta)
