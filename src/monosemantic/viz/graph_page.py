"""An attribution graph (``circuits.Graph``) as one self-contained HTML page with an inline SVG.

Nodes sit by position (columns, one per prompt token) and layer (rows; token embeddings at the
bottom, the target at the top). Edges are lines whose width grows with ``|weight|``, orange for
a positive contribution and blue for a negative one. Hovering a node shows its card (kind,
layer, position, activation, influence and, when given, the feature's top examples); a feature
node links to its feature page when ``feature_href`` says where those are. No script runs: the
cards are shown by CSS ``:hover``, so the page works from ``file://`` and under the local app's
Content-Security-Policy alike. Every node and edge carries its numbers in ``data-*`` attributes
(what the browser tests compare with the JSON), and all text is escaped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..activations.files import atomic_write_bytes
from ..errors import MonosemanticError
from ..features.shading import visible_token
from ..folders import replacing_folder
from .markup import esc, number
from .tokens import TOKEN_CSS, token_spans_html

COLUMN, ROW, MARGIN, CARD_WIDTH = 96, 46, 40, 300
CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
.scroll{overflow:auto;border:1px solid #ddd}
svg text{font-size:11px;font-family:ui-monospace,monospace}
.edge{stroke-linecap:round;opacity:.55}
.node .card{display:none}
.node:hover .card{display:inline}
.node:hover circle,.node:hover rect.mark{stroke:#000;stroke-width:2}
.card rect{fill:#fffff4;stroke:#999}
.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em} td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
"""


def graph_html(graph, *, feature_href: str | None = None,
               examples: Mapping[tuple[int, int], Sequence[str]] | None = None, max_edges: int = 1500) -> str:
    """The page. ``feature_href``: a template such as ``"layer_{layer}/features/{latent}.html"``.

    The ``max_edges`` edges that carry the most influence are drawn (a graph pruned at 0.98 of the
    edge influence can keep tens of thousands, more than a reader can follow); the JSON keeps all.
    """
    meta, examples = graph.meta, examples or {}
    tokens: list[str] = meta["tokens"]
    layers: list[int] = meta["layers"]
    level = {layer: i + 1 for i, layer in enumerate(layers)}
    top_level = len(layers) + 1

    def level_of(node: dict) -> int:
        if node["kind"] in ("token", "target"):
            return 0 if node["kind"] == "token" else top_level
        return level[node["layer"]]

    cells: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for node in graph.nodes:
        cells[(level_of(node), node["position"])].append(node)
    where = {}
    for (lvl, position), members in cells.items():
        members.sort(key=lambda n: (n["kind"] != "error", n.get("latent", -1)))
        spread = min(14.0, (COLUMN - 20) / max(len(members), 1))
        for j, node in enumerate(members):
            x = MARGIN + position * COLUMN + COLUMN / 2 + (j - (len(members) - 1) / 2) * spread
            where[node["id"]] = (x, MARGIN + (top_level - lvl) * ROW)
    width = MARGIN * 2 + len(tokens) * COLUMN + CARD_WIDTH
    height = MARGIN * 2 + (top_level + 1) * ROW + 40
    drawn = sorted(graph.edges, key=lambda e: -e.get("influence", 0.0))[:max_edges]
    biggest = max((abs(e["weight"]) for e in drawn), default=1.0) or 1.0
    edges = [_edge(e, where, biggest) for e in drawn if e["source"] in where and e["target"] in where]
    rows = "".join(_row_label(f"layer {layer}", MARGIN + (top_level - level[layer]) * ROW) for layer in layers)
    rows += _row_label("tokens", MARGIN + top_level * ROW) + _row_label("target", MARGIN)
    labels = "".join(f'<text x="{MARGIN + p * COLUMN + COLUMN / 2:.1f}" y="{MARGIN + top_level * ROW + 24}" '
                     f'text-anchor="middle">{esc(visible_token(t))}</text>' for p, t in enumerate(tokens))
    nodes = "".join(_node(n, where[n["id"]], feature_href, examples, width) for n in
                    sorted(graph.nodes, key=lambda n: n["kind"] == "target"))
    target = meta["target"]
    title = f"attribution graph: {target['text']!r}" + (f" − {target['minus_text']!r}" if target.get("minus") else "")
    sc = graph.scores
    features = sorted((n for n in graph.nodes if n["kind"] == "feature"), key=lambda n: -n["influence"])
    table = "".join(f'<tr><td>{_link(n, feature_href, esc(n["id"]))}</td><td>{number(n["influence"])}</td>'
                    f'<td>{number(n["activation"])}</td><td>{esc(visible_token(n["text"]))}</td></tr>'
                    for n in features)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><link rel="icon" href="data:,">
<style>{CSS}</style></head><body>
<h1>{esc(title)}</h1>
<pre>{esc(meta.get("prompt", "".join(tokens)))}</pre>
<p class="muted" id="scores">target value {number(target["value"], 4)} · completeness {number(sc["completeness"])} ·
replacement {number(sc["replacement"])} · {len(features)} features and {len(graph.edges)} edges kept of
{sc["active_features"]} active features ({sc["expanded_features"]} expanded) · drawing the {len(edges)} edges that
carry the most influence · hover a node for its card</p>
<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">
{rows}{labels}<g class="edges">{"".join(edges)}</g><g class="nodes">{nodes}</g></svg></div>
<h2>Features by influence</h2>
<table id="features"><tr><th>node</th><th>influence</th><th>activation</th><th>token</th></tr>{table}</table>
</body></html>
"""


def write_graph_page(graph, path: str | os.PathLike, **options) -> Path:
    """Write :func:`graph_html` to ``path`` (atomically) and return it."""
    path = Path(path)
    atomic_write_bytes(path, graph_html(graph, **options).encode("utf-8"))
    return path


def _row_label(text: str, y: float) -> str:
    return f'<text x="4" y="{y + 4:.1f}" fill="#888">{esc(text)}</text>'


def _edge(edge: dict, where: dict, biggest: float) -> str:
    (x1, y1), (x2, y2) = where[edge["source"]], where[edge["target"]]
    w = edge["weight"]
    colour = "#e6550d" if w > 0 else "#3182bd"
    return (f'<line class="edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{0.5 + 4 * abs(w) / biggest:.2f}" data-source="{esc(edge["source"])}" '
            f'data-target="{esc(edge["target"])}" data-weight="{w!r}"/>')


def _link(node: dict, feature_href: str | None, inner: str) -> str:
    if node["kind"] != "feature" or not feature_href:
        return inner
    href = feature_href.format(layer=node["layer"], latent=node["latent"])
    return f'<a href="{esc(href)}">{inner}</a>'


def _node(node: dict, at: tuple[float, float], feature_href: str | None,
          examples: Mapping[tuple[int, int], Sequence[str]], width: float) -> str:
    x, y = at
    kind = node["kind"]
    if kind == "feature":
        mark = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="#8c6bb1"/>'
    elif kind == "error":
        mark = f'<rect class="mark" x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#bbb"/>'
    elif kind == "token":
        mark = f'<rect class="mark" x="{x - 7:.1f}" y="{y - 7:.1f}" width="14" height="14" fill="#74c476"/>'
    else:
        mark = (f'<rect class="mark" x="{x - 30:.1f}" y="{y - 10:.1f}" width="60" height="20" rx="4" fill="#fdd0a2"/>'
                f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{esc(visible_token(node["text"]))}</text>')
    lines = _card_lines(node, examples.get((node.get("layer", -1), node.get("latent", -1)), ()))
    card_x = min(x + 10, width - CARD_WIDTH - 4)
    card_y = max(4.0, y - 10)
    text = "".join(f'<text x="{card_x + 6:.1f}" y="{card_y + 16 + 14 * i:.1f}">{esc(line)}</text>'
                   for i, line in enumerate(lines))
    card = (f'<g class="card"><rect x="{card_x:.1f}" y="{card_y:.1f}" width="{CARD_WIDTH}" '
            f'height="{14 * len(lines) + 10}" rx="3"/>{text}</g>')
    data = " ".join(f'data-{k}="{esc(v)!s}"' for k, v in _data(node).items())
    return f'<g class="node" data-node="{esc(node["id"])}" {data}>{_link(node, feature_href, mark)}{card}</g>'


def _data(node: dict) -> dict:
    keep = ("kind", "layer", "position", "latent", "activation", "influence", "value")
    return {k: repr(node[k]) if isinstance(node[k], float) else node[k] for k in keep if k in node}


def _card_lines(node: dict, examples: Sequence[str]) -> list[str]:
    kind = node["kind"]
    where = f"position {node['position']} ({visible_token(node['text'])!r})"
    if kind == "feature":
        lines = [f"feature {node['latent']} of layer {node['layer']}", where,
                 f"activation {number(node['activation'])} · influence {number(node['influence'])}"]
        lines += [f"e.g. {visible_token(e)[:44]}" for e in examples[:5]]
    elif kind == "error":
        lines = [f"error term of layer {node['layer']}", where, f"norm {number(node['norm'])} · influence "
                 f"{number(node['influence'])}"]
    elif kind == "token":
        lines = ["token embedding", where, f"influence {number(node['influence'])}"]
    else:
        lines = ["target", f"value {number(node['value'], 4)}"]
    return lines


def feature_example_html(layer: int, latent: int, examples) -> str:
    """A small page of one graph feature's top examples (``circuits.Example``), tokens coloured by activation."""
    title = f"feature {latent} of layer {layer}"
    top = max((max(e.acts) for e in examples), default=0.0)
    rows = "".join(f'<div class="example" data-peak="{e.acts[e.peak]!r}">{token_spans_html(e.tokens, e.acts, top)}'
                   '</div>' for e in examples) or '<p class="muted">no activation in the windows read</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}} .example{{border-bottom:1px solid #ddd;padding:.4em 0;
line-height:1.7}} .muted{{color:#666}} {TOKEN_CSS}</style></head><body>
<h1>{esc(title)}</h1><p class="muted">top activations over held-out windows; <a href="../../index.html">back to
the graph</a></p>{rows}</body></html>
"""


GRAPH_FILE = "graph.json"


def check_graph_folder(folder: str | os.PathLike) -> Path:
    """``folder`` if a graph may be written there (new, empty, or an older graph); MonosemanticError otherwise."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (not (folder / GRAPH_FILE).is_file() and any(folder.iterdir()))):
        raise MonosemanticError(f"{folder} holds files but no {GRAPH_FILE}; a graph folder replaces only an empty "
                                "folder or an older graph; choose another --out")
    return folder


def write_graph_site(graph, folder: str | os.PathLike, examples: Mapping | None = None) -> Path:
    """A graph folder: ``graph.json``, the page as ``index.html`` and, with ``examples``
    (``{(layer, latent): [Example]}``), one page per feature at ``features/layer_L/F.html``, linked
    from the graph's nodes and shown in their cards. Written beside and swapped in whole; opens
    from ``file://`` and is what ``monosemantic serve`` shows for a graph folder."""
    folder = check_graph_folder(folder)
    examples = examples or {}
    texts = {key: [e.text() for e in found] for key, found in examples.items()}
    with replacing_folder(folder, "writing the graph") as staging:
        graph.save(staging / GRAPH_FILE)
        for (layer, latent), found in examples.items():
            page = staging / "features" / f"layer_{layer}" / f"{latent}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(feature_example_html(layer, latent, found), encoding="utf-8")
        href = "features/layer_{layer}/{latent}.html" if examples else None
        (staging / "index.html").write_text(graph_html(graph, feature_href=href, examples=texts), encoding="utf-8")
    return folder
