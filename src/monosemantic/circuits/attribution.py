"""Attribution: the direct effect of every active feature, error term and token on a target.

One forward of the replacement model (``replacement.Replacement``) runs with attention patterns
and norm denominators frozen (``linearise.frozen``), every layer's active codes made graph
inputs (not recomputed from earlier layers: gradients stop at a feature) and every layer's
error ``real MLP output - transcoder output`` an input too, so the forward's values equal the
model's. Position 0, the attention sink, has no features (the transcoders never trained there);
its error term carries its whole MLP output. What lies between the inputs and any later
quantity is then affine, so for a target T (a logit, a logit difference, or a later feature's
pre-activation) and an input s of value ``v_s``, the edge ``dT/dv_s . v_s`` is s's exact
direct contribution, and

    T = sum_s edge(s -> T) + bias(T)

where ``bias(T)`` is T's value with every input zeroed (encoder and decoder biases carried
through the frozen model). Inputs are numbered: active features first, then error terms
(layer-major, one per layer and position), then token embeddings (one per position).
``attribute`` computes the target's row and the rows of the features that influence it most;
``graph.build_graph`` prunes them into a readable graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import MonosemanticError
from .linearise import Freeze, frozen
from .replacement import Editor, Replacement

TARGET = -1  # the row id of the target node


@dataclass(frozen=True)
class TargetSpec:
    """The logit of ``token`` at ``position`` (-1: the last), minus that of ``minus`` when given."""

    token: int
    minus: int | None = None
    position: int = -1

    def value(self, logits_SV: Tensor) -> Tensor:
        """The target read from one prompt's logits ``[S, V]``."""
        value = logits_SV[self.position, self.token]
        return value if self.minus is None else value - logits_SV[self.position, self.minus]


class _Inputs(Editor):
    """Makes each layer's codes and error graph inputs, and keeps its pre-activations (graph outputs).

    With ``fixed`` = (codes, errors) by layer, those values are used instead of the encoder's
    codes and the measured errors: the same frozen model evaluated at other inputs.
    """

    def __init__(self, fixed: tuple[dict[int, Tensor], dict[int, Tensor]] | None = None):
        self.pre: dict[int, Tensor] = {}
        self.leaves: dict[int, Tensor] = {}
        self.errors: dict[int, Tensor] = {}
        self.fixed = fixed

    def codes(self, layer, pre_NF, codes_NF):
        self.pre[layer] = pre_NF
        value = (codes_NF if self.fixed is None else self.fixed[0][layer]).detach().clone()
        # Position 0 (one prompt: row 0) is the attention sink, whose activations are far from any
        # the transcoders trained on (harvests skip it): no features there; its error carries the MLP.
        value[0] = 0
        self.leaves[layer] = leaf = value.requires_grad_(True)
        return leaf

    def output(self, layer, out_ND, real_ND, x_ND):
        error = real_ND - out_ND if self.fixed is None else self.fixed[1][layer]
        self.errors[layer] = leaf = error.detach().clone().requires_grad_(True)
        return out_ND + leaf


@dataclass
class LinearRun:
    """One forward of the frozen replacement model: its inputs (leaves), pre-activations and target."""

    inputs: _Inputs
    embeddings_SD: Tensor  # leaf
    logits_SV: Tensor
    target: Tensor  # 0-dim


def linear_forward(replacement: Replacement, ids_S: Tensor, target: TargetSpec, freeze: Freeze | None = None, *,
                   codes: dict[int, Tensor] | None = None, errors: dict[int, Tensor] | None = None,
                   embeddings_SD: Tensor | None = None) -> tuple[LinearRun, Freeze]:
    """The frozen replacement model on ``ids_S``; inputs replaced by the given values (replay only).

    Without ``freeze`` this records the constants (patterns, norm scales) of the prompt's own
    forward, whose values are the model's; with it, the same constants are reused, so the
    result is the same affine map evaluated at other inputs.
    """
    if freeze is None and (codes is not None or embeddings_SD is not None):
        raise MonosemanticError("replaying other inputs needs the Freeze of a first forward; pass freeze=")
    lm = replacement.lm
    inputs = _Inputs(None if codes is None else (codes, errors or {}))
    holder: dict[str, Tensor] = {}

    def make_leaf(_m, _args, out):
        value = out[0] if embeddings_SD is None else embeddings_SD.to(out.dtype)
        holder["e"] = leaf = value.detach().clone().requires_grad_(True)
        return leaf[None]

    handle = lm.model.get_input_embeddings().register_forward_hook(make_leaf)
    try:
        with torch.enable_grad(), frozen(lm, freeze) as used, replacement.spliced(inputs):
            logits_SV = lm.model(input_ids=ids_S[None].to(lm.device), use_cache=False).logits[0]
    finally:
        handle.remove()
    return LinearRun(inputs, holder["e"], logits_SV, target.value(logits_SV)), used


@dataclass
class Attribution:
    """The active features of one prompt and the adjacency rows computed into the target and some of them."""

    ids_S: Tensor  # the prompt's token ids
    layers: list[int]  # model layer of each transcoder layer
    target: TargetSpec
    target_value: float  # the target's value (equal to the model's)
    feature_index: Tensor  # [A, 3] (layer index, position, latent) of every active feature
    feature_value: Tensor  # [A] activations
    feature_pre: Tensor  # [A] pre-activations
    error_norm: Tensor  # [L, S] norm of each error term
    rows: dict[int, Tensor] = field(default_factory=dict)  # node (feature index, or TARGET) -> [n_inputs] edges
    biases: dict[int, float] = field(default_factory=dict)  # node -> value minus the sum of its edges

    @property
    def n_features(self) -> int:
        return self.feature_index.shape[0]

    @property
    def n_positions(self) -> int:
        return self.ids_S.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.n_features + (len(self.layers) + 1) * self.n_positions

    def error_id(self, layer: int, position: int) -> int:
        return self.n_features + layer * self.n_positions + position

    def embedding_id(self, position: int) -> int:
        return self.n_features + len(self.layers) * self.n_positions + position


def normalised_magnitudes(row: Tensor) -> Tensor:
    magnitude = row.abs().double()
    total = magnitude.sum()
    return magnitude / total if total > 0 else magnitude


def influence(a: Attribution) -> Tensor:
    """``[n_inputs]``: each input's influence on the target over the rows computed so far.

    The sum over paths to the target of the products of normalised edge magnitudes (each row
    divided by its total absolute weight); paths end at features whose rows are not computed,
    at errors and at tokens.
    """
    expanded = [n for n in a.rows if n != TARGET]
    current = normalised_magnitudes(a.rows[TARGET])
    total = torch.zeros_like(current)
    if expanded:
        ids = torch.tensor(expanded)
        rows = torch.stack([normalised_magnitudes(a.rows[n]) for n in expanded])
    for _ in range(len(a.layers) + 2):  # a feature feeds later layers only, so paths are this short
        total += current
        if not expanded:
            break
        current = current[ids] @ rows
        if float(current.sum()) < 1e-12:
            break
    return total


class Tracer:
    """One linearised forward of a prompt, and the adjacency rows computed from it."""

    def __init__(self, replacement: Replacement, ids_S: Tensor, target: TargetSpec):
        self.replacement = replacement
        self.run, self.freeze = linear_forward(replacement, ids_S, target)
        run, L = self.run, len(replacement.layers)
        index, values, pres = [], [], []
        for i in range(L):
            leaf_SF = run.inputs.leaves[i].detach()
            pos_f = (leaf_SF > 0).nonzero()
            index.append(torch.cat([torch.full_like(pos_f[:, :1], i), pos_f], 1))
            values.append(leaf_SF[pos_f[:, 0], pos_f[:, 1]])
            pres.append(run.inputs.pre[i].detach()[pos_f[:, 0], pos_f[:, 1]])
        errors = torch.stack([run.inputs.errors[i].detach().float().norm(dim=-1) for i in range(L)])
        self.attribution = Attribution(ids_S=ids_S.cpu(), layers=list(replacement.layers), target=target,
                                       target_value=float(run.target.detach()), feature_index=torch.cat(index).cpu(),
                                       feature_value=torch.cat(values).float().cpu(),
                                       feature_pre=torch.cat(pres).float().cpu(), error_norm=errors.cpu())
        self._inputs = [run.inputs.leaves[i] for i in range(L)] + [run.inputs.errors[i] for i in range(L)] \
            + [run.embeddings_SD]

    def node_output(self, node: int) -> Tensor:
        """The graph output whose row node ``node`` has: the target, or a feature's pre-activation."""
        if node == TARGET:
            return self.run.target
        i, s, f = self.attribution.feature_index[node].tolist()
        return self.run.inputs.pre[i][s, f]

    def compute_rows(self, nodes: Sequence[int]) -> None:
        """Add the rows of ``nodes`` (one backward each, through the frozen model's linear paths)."""
        a, L = self.attribution, len(self.attribution.layers)
        idx = a.feature_index
        for node in nodes:
            output = self.node_output(node)
            grads = torch.autograd.grad(output, self._inputs, retain_graph=True, allow_unused=True)
            row = torch.zeros(a.n_inputs)
            codes_g = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads[:L], self._inputs[:L])]
            # features: d output / d a * a, at every active (layer, position, latent)
            flat = torch.stack([codes_g[i].detach() for i in range(L)])  # [L, S, F]
            row[:a.n_features] = flat[idx[:, 0], idx[:, 1], idx[:, 2]].float().cpu() * a.feature_value
            for i in range(L):
                g = grads[L + i]
                if g is not None:
                    row[a.error_id(i, 0):a.error_id(i, 0) + a.n_positions] = \
                        (g * self._inputs[L + i]).detach().sum(-1).float().cpu()
            g = grads[2 * L]
            if g is not None:
                start = a.embedding_id(0)
                row[start:start + a.n_positions] = (g * self._inputs[2 * L]).detach().sum(-1).float().cpu()
            a.rows[node] = row
            a.biases[node] = float(output.detach()) - float(row.double().sum())


def attribute(replacement: Replacement, ids_S: Tensor, target: TargetSpec, *, max_feature_nodes: int | None = 512,
              batch: int = 32, progress: bool = True) -> Attribution:
    """The target's row and the rows of up to ``max_feature_nodes`` features, most influential first.

    Features are expanded in batches: after each, influence on the target (``influence``) is
    recomputed over the rows known so far and the most influential unexpanded features are
    next. ``max_feature_nodes=None`` expands every active feature.
    """
    tracer = Tracer(replacement, ids_S, target)
    a = tracer.attribution
    tracer.compute_rows([TARGET])
    budget = a.n_features if max_feature_nodes is None else min(max_feature_nodes, a.n_features)
    bar = tqdm(total=budget, desc="attribution rows", unit="feature", disable=not progress)
    while len(a.rows) - 1 < budget:
        scores = influence(a)[:a.n_features]
        scores[[n for n in a.rows if n != TARGET]] = -1.0
        take = min(batch, budget - (len(a.rows) - 1))
        order = torch.argsort(scores + 1e-12 * a.feature_value, descending=True)[:take]
        tracer.compute_rows(order.tolist())
        bar.update(len(order))
    bar.close()
    return a
