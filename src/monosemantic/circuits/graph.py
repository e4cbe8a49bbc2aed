"""Attribution graphs: influence, pruning, scores, and the JSON they are stored as.

From an ``Attribution`` (adjacency rows into the target and the expanded features):

- **influence** of an input on the target: the sum over paths of the products of normalised
  edge magnitudes (each row divided by its total absolute weight), the target counting 1.
  Paths end at features whose rows were not computed (``unexpanded``), at errors and at tokens.
- **pruning**: features are kept, most influential first, until ``node_threshold`` of the
  expanded features' influence is covered; then edges among kept nodes, strongest influence
  first, until ``edge_threshold`` of theirs is; errors and tokens stay if an edge reaches them.
- **completeness**: per row, the share of absolute edge weight not from error terms, averaged
  over the target (weight 1) and the expanded features (weighted by influence). **Replacement**:
  the share of the influence reaching tokens or errors that reaches tokens. Both are 1 for a
  replacement that explains the model fully; both are computed before pruning.

The JSON (``SCHEMA``, ``SCHEMA_VERSION``) holds ``meta``, ``scores``, ``nodes`` and ``edges``;
node ids are ``feature:L:P:F``, ``error:L:P``, ``token:P`` and ``target`` (L a model layer, P a
position, F a latent of that layer). An edge ``{"source", "target", "weight", "influence"}`` is the
source's direct contribution to the target's pre-activation (or to the target logit), and the
share of the target logit's influence that flows along it (what pruning ranks edges by).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..activations.files import atomic_write_bytes
from ..errors import MonosemanticError
from .attribution import TARGET, Attribution, influence, normalised_magnitudes

SCHEMA = "monosemantic.attribution-graph"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Graph:
    """A pruned attribution graph, as stored (see the module doc for the fields)."""

    meta: dict
    scores: dict
    nodes: list[dict]
    edges: list[dict]

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "meta": self.meta, "scores": self.scores,
                "nodes": self.nodes, "edges": self.edges}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_json(), indent=1).encode())  # never half a graph
        return path

    def node(self, node_id: str) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)


def load_graph(path: str | os.PathLike) -> Graph:
    """A graph saved by ``Graph.save``; another schema or version is refused."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise MonosemanticError(f"cannot read attribution graph {path}: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MonosemanticError(f"{path} is not a monosemantic attribution graph (schema "
                                f"{data.get('schema') if isinstance(data, dict) else None!r}); expected {SCHEMA!r}")
    if data.get("version") != SCHEMA_VERSION:
        raise MonosemanticError(f"{path} has attribution-graph schema version {data.get('version')!r}; this "
                                f"monosemantic reads version {SCHEMA_VERSION}; rebuild it with `monosemantic trace`")
    return Graph(data["meta"], data["scores"], data["nodes"], data["edges"])


def scores(a: Attribution, infl: Tensor | None = None) -> dict:
    """Completeness and replacement scores of the rows computed (see the module doc)."""
    infl = influence(a) if infl is None else infl
    errors = slice(a.error_id(0, 0), a.embedding_id(0))
    tokens = slice(a.embedding_id(0), a.n_inputs)
    weighted = total = 0.0
    for node, row in a.rows.items():
        weight = 1.0 if node == TARGET else float(infl[node])
        magnitude = row.abs().double()
        if magnitude.sum() == 0:
            continue
        weighted += weight * float(1 - magnitude[errors].sum() / magnitude.sum())
        total += weight
    to_tokens, to_errors = float(infl[tokens].sum()), float(infl[errors].sum())
    unexpanded = [n for n in range(a.n_features) if n not in a.rows]
    to_unexpanded = float(infl[unexpanded].sum()) if unexpanded else 0.0
    return {"completeness": weighted / total if total else 1.0,
            "replacement": to_tokens / (to_tokens + to_errors) if to_tokens + to_errors else 1.0,
            "unexpanded_influence": to_unexpanded / max(to_tokens + to_errors + to_unexpanded, 1e-30),
            "active_features": a.n_features, "expanded_features": len(a.rows) - 1}


def build_graph(a: Attribution, tokenizer, *, node_threshold: float = 0.8, edge_threshold: float = 0.98,
                meta: dict | None = None) -> Graph:
    """Prune ``a`` into a ``Graph`` (thresholds are shares of influence kept, in (0, 1])."""
    check_thresholds(node_threshold, edge_threshold)
    infl = influence(a)
    expanded = sorted((n for n in a.rows if n != TARGET), key=lambda n: -float(infl[n]))
    kept_features = _prefix_covering([float(infl[n]) for n in expanded], node_threshold, expanded)
    node_ids = {TARGET: "target"}
    for n in kept_features:
        i, p, f = a.feature_index[n].tolist()
        node_ids[n] = f"feature:{a.layers[i]}:{p}:{f}"
    candidates = []  # (influence, source input, target node, weight)
    for target in [TARGET, *kept_features]:
        weight_in = 1.0 if target == TARGET else float(infl[target])
        row, share = a.rows[target], normalised_magnitudes(a.rows[target])
        for source in torch.nonzero(row).flatten().tolist():
            if source < a.n_features and source not in node_ids:
                continue
            candidates.append((weight_in * float(share[source]), source, target, float(row[source])))
    candidates.sort(key=lambda c: -c[0])
    kept_edges = _prefix_covering([c[0] for c in candidates], edge_threshold, candidates)
    for _, source, _, _ in kept_edges:
        if source not in node_ids:
            node_ids[source] = _input_id(a, source)
    tokens = [tokenizer.decode([t]) for t in a.ids_S.tolist()]
    nodes = [_node(a, n, node_ids[n], infl, tokens, tokenizer) for n in node_ids]
    edges = [{"source": node_ids[s], "target": node_ids[t], "weight": w, "influence": i} for i, s, t, w in kept_edges]
    target = {"token": a.target.token, "text": tokenizer.decode([a.target.token]), "position": a.target.position,
              "minus": a.target.minus, "value": a.target_value}
    if a.target.minus is not None:
        target["minus_text"] = tokenizer.decode([a.target.minus])
    info = {"tokens": tokens, "layers": a.layers, "target": target, "node_threshold": node_threshold,
            "edge_threshold": edge_threshold, **(meta or {})}
    return Graph(info, scores(a, infl), nodes, edges)


def check_thresholds(node_threshold: float, edge_threshold: float) -> None:
    """MonosemanticError unless both are shares of influence in (0, 1]."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise MonosemanticError(f"{name}={value!r} is invalid; expected a share of influence in (0, 1]")


def _prefix_covering(values: list[float], share: float, items: list) -> list:
    """The shortest prefix of ``items`` (sorted by ``values``, descending) covering ``share`` of their sum."""
    total, running, kept = sum(values), 0.0, []
    for value, item in zip(values, items):
        if kept and running >= share * total:
            break
        kept.append(item)
        running += value
    return kept


def _input_id(a: Attribution, source: int) -> str:
    if source < a.n_features:
        i, p, f = a.feature_index[source].tolist()
        return f"feature:{a.layers[i]}:{p}:{f}"
    if source < a.embedding_id(0):
        layer, position = divmod(source - a.n_features, a.n_positions)
        return f"error:{a.layers[layer]}:{position}"
    return f"token:{source - a.embedding_id(0)}"


def _node(a: Attribution, node: int, node_id: str, infl: Tensor, tokens: list[str], tokenizer) -> dict:
    if node == TARGET:
        position = a.target.position % a.n_positions
        return {"id": node_id, "kind": "target", "position": position, "value": a.target_value, "influence": 1.0,
                "text": tokenizer.decode([a.target.token])}
    out = {"id": node_id, "influence": float(infl[node])}
    if node < a.n_features:
        i, p, f = a.feature_index[node].tolist()
        return {**out, "kind": "feature", "layer": a.layers[i], "position": p, "latent": f,
                "activation": float(a.feature_value[node]), "pre_activation": float(a.feature_pre[node]),
                "bias": a.biases.get(node), "text": tokens[p]}
    if node < a.embedding_id(0):
        layer, p = divmod(node - a.n_features, a.n_positions)
        return {**out, "kind": "error", "layer": a.layers[layer], "position": p,
                "norm": float(a.error_norm[layer, p]), "text": tokens[p]}
    p = node - a.embedding_id(0)
    return {**out, "kind": "token", "position": p, "text": tokens[p]}
