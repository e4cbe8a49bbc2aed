"""Interventions that test a graph: ablate, clamp or steer features, and watch the target and downstream features.

``intervene(replacement, prompt, edits, target=...)`` runs the prompt twice, clean and with
each ``FeatureEdit`` applied to the transcoders' codes, and reports the target's change and
the features whose activations moved most. Three settings:

- ``model="replacement"`` (default): the local replacement model of the prompt. Attention
  patterns, norm denominators and every layer's error term are those of the clean run, so
  without edits it reproduces the model's logits exactly; downstream features are recomputed
  by their encoders, so an edit's effect spreads through features and linear paths.
- ``model="replacement", hold_features=True``: every feature not edited keeps its clean value,
  so only direct (linear) paths carry an edit: the change in the target is exactly the sum of
  the edited features' graph edges times their change (``-edge`` for an ablated feature).
- ``model="real"``: the model itself, nothing frozen; each layer's MLP output gets the change
  of the transcoders' output that the edits make (``real + decode(edited) - decode(unedited)``),
  so everything the model computes responds, including its attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MonosemanticError
from ..evaluation.results import Result
from .attribution import TargetSpec
from .linearise import frozen
from .replacement import Editor, Replacement

MODELS = ("replacement", "real")


@dataclass(frozen=True)
class FeatureEdit:
    """Set feature ``latent`` of model layer ``layer`` at ``position`` (None: every position).

    ``value`` clamps the activation (0 ablates; None keeps it), then ``add`` is added (steering).
    """

    layer: int
    latent: int
    position: int | None = None
    value: float | None = 0.0
    add: float = 0.0


@dataclass(frozen=True)
class FeatureChange(Result):
    layer: int
    position: int
    latent: int
    before: float
    after: float


@dataclass(frozen=True)
class InterventionResult(Result):
    model: str  # "replacement" or "real"
    hold_features: bool
    edits: tuple[dict, ...]
    target_before: float  # the target (logit or logit difference) in the clean run
    target_after: float
    top_before: tuple[tuple[str, float], ...]  # the most probable next tokens at the target position
    top_after: tuple[tuple[str, float], ...]
    changes: tuple[FeatureChange, ...]  # features whose activations moved most, largest first

    @property
    def target_change(self) -> float:
        return self.target_after - self.target_before


class _Record(Editor):
    """Keeps every layer's codes, transcoder output and MLP output in the clean run."""

    def __init__(self) -> None:
        self.codes_of: dict[int, Tensor] = {}
        self.outputs: dict[int, tuple[Tensor, Tensor]] = {}

    def codes(self, layer, pre_NF, codes_NF):
        self.codes_of[layer] = codes_NF.detach()
        return codes_NF

    def output(self, layer, out_ND, real_ND, x_ND):
        self.outputs[layer] = (out_ND.detach(), real_ND.detach())
        return real_ND


class _Apply(Editor):
    def __init__(self, replacement: Replacement, edits: dict[int, list[FeatureEdit]], model: str,
                 clean: _Record, hold: bool):
        self.t, self.edits, self.model, self.clean, self.hold = replacement.transcoders, edits, model, clean, hold
        self.codes_of: dict[int, Tensor] = {}
        self.deltas: dict[int, Tensor] = {}

    def codes(self, layer, pre_NF, codes_NF):
        base = self.clean.codes_of[layer] if self.hold else codes_NF
        edited = base.clone()
        for edit in self.edits.get(layer, []):
            rows = slice(None) if edit.position is None else edit.position
            if edit.value is not None:
                edited[rows, edit.latent] = edit.value
            edited[rows, edit.latent] += edit.add
        self.codes_of[layer] = edited
        self.deltas[layer] = edited - codes_NF
        return edited

    def output(self, layer, out_ND, real_ND, x_ND):
        if self.model == "replacement":
            # out + the clean error, written so that an unchanged output gives the clean one bit for bit
            clean_out, clean_real = self.clean.outputs[layer]
            return clean_real + (out_ND - clean_out)
        change = torch.zeros_like(out_ND)
        for j in range(layer + 1):
            rows = self.t.decoder_rows(j)
            if layer in rows and j in self.deltas:
                change = change + self.deltas[j] @ rows[layer]
        return real_ND + change


def intervene(replacement: Replacement, ids_S: Tensor, edits: Sequence[FeatureEdit], target: TargetSpec, *,
              model: str = "replacement", hold_features: bool = False, top: int = 20) -> InterventionResult:
    """The target and the features before and after ``edits`` (see the module doc for ``model``)."""
    if model not in MODELS:
        raise MonosemanticError(f"model={model!r} is invalid; expected one of {', '.join(MODELS)}")
    if hold_features and model != "replacement":
        raise MonosemanticError("hold_features applies to the replacement model; pass model='replacement'")
    by_layer = _edits_by_layer(replacement, edits, ids_S.shape[0])
    lm = replacement.lm
    ids_BS = ids_S[None].to(lm.device)
    clean = _Record()
    apply = _Apply(replacement, by_layer, model, clean, hold_features)
    with torch.no_grad():
        if model == "replacement":
            with frozen(lm) as freeze, replacement.spliced(clean):
                clean_logits = lm.model(input_ids=ids_BS, use_cache=False).logits[0]
            with frozen(lm, freeze), replacement.spliced(apply):
                logits = lm.model(input_ids=ids_BS, use_cache=False).logits[0]
        else:  # the model's own attention both times, so that an edit is all that differs
            with replacement.spliced(clean):
                clean_logits = lm.model(input_ids=ids_BS, use_cache=False).logits[0]
            with replacement.spliced(apply):
                logits = lm.model(input_ids=ids_BS, use_cache=False).logits[0]
    changes = _changes(replacement, clean.codes_of, apply.codes_of, top)
    return InterventionResult(
        model=model, hold_features=hold_features, edits=tuple(vars(e) for e in edits),
        target_before=float(target.value(clean_logits)), target_after=float(target.value(logits)),
        top_before=_top_tokens(lm, clean_logits[target.position]), top_after=_top_tokens(lm, logits[target.position]),
        changes=changes)


def _edits_by_layer(replacement: Replacement, edits: Sequence[FeatureEdit], n_positions: int
                    ) -> dict[int, list[FeatureEdit]]:
    if not edits:
        raise MonosemanticError("no edits given; pass FeatureEdit(layer, latent, ...) for each feature to change")
    per_layer = replacement.transcoders.d_sae // len(replacement.layers)
    by_layer: dict[int, list[FeatureEdit]] = {}
    for edit in edits:
        if edit.layer not in replacement.layers:
            raise MonosemanticError(f"edit of layer {edit.layer}: the transcoders cover layers {replacement.layers}")
        if not 0 <= edit.latent < per_layer:
            raise MonosemanticError(f"edit of latent {edit.latent}: each layer has latents 0-{per_layer - 1}")
        if edit.position is not None and not -n_positions <= edit.position < n_positions:
            raise MonosemanticError(f"edit at position {edit.position}: the prompt has {n_positions} tokens")
        by_layer.setdefault(replacement.layers.index(edit.layer), []).append(edit)
    return by_layer


def _top_tokens(lm, logits_V: Tensor, n: int = 5) -> tuple[tuple[str, float], ...]:
    probs = torch.softmax(logits_V.float(), -1)
    values, ids = probs.topk(n)
    return tuple((lm.tokenizer.decode([i]), float(p)) for i, p in zip(ids.tolist(), values.tolist()))


def _changes(replacement: Replacement, before: dict[int, Tensor], after: dict[int, Tensor], top: int
             ) -> tuple[FeatureChange, ...]:
    found = []
    for i in sorted(before):
        moved = (after[i] - before[i]).abs()
        for p, f in moved.nonzero().tolist():
            found.append((float(moved[p, f]), FeatureChange(layer=replacement.layers[i], position=p, latent=f,
                                                            before=float(before[i][p, f]),
                                                            after=float(after[i][p, f]))))
    found.sort(key=lambda item: -item[0])
    return tuple(change for _, change in found[:top])
