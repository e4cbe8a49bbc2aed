"""A prompt view (``features.prompt_view``) as HTML: a standalone page, or a fragment of a dashboard page.

:func:`prompt_html` is the page ``monosemantic prompt --html`` writes; inside the web app the same
view is shown within the dashboard's own page (:func:`prompt_fragment`), with each feature linked
to its page. Tokens are coloured by ``token_spans_html`` (escaped, exact activation in
``data-act``), each row on its own scale.
"""

from __future__ import annotations

import html

from .markup import esc, number
from .tokens import TOKEN_CSS, token_spans_html


def _row_max(acts: list[float]) -> float:
    return max((abs(a) for a in acts), default=0.0)


def _rows(view, rows, kind: str, linked: bool) -> str:
    parts = []
    for row in rows:
        label = f"{kind} {row.index}"
        if linked:
            label = f'<a href="/features/{row.index}.html">{esc(label)}</a>'
        ranked = "Σ" if kind == "feature" else "Σ|·|"
        attribute = "data-latent" if kind == "feature" else "data-neuron"
        spans = token_spans_html(view.tokens, row.acts, _row_max(row.acts),
                                 latent=row.index if kind == "feature" else None)
        parts.append(f'<div class="view-row" {attribute}="{row.index}"><div class="muted">{label} · '
                     f'{ranked} {number(row.total, 4)}</div><div class="example">{spans}</div></div>')
    return "".join(parts) or '<p class="muted">none</p>'


def prompt_fragment(view, *, link_features: bool = True) -> str:
    """Top features (left) beside top neurons (right) of ``view`` (a ``features.PromptView``)."""
    return (f'<p class="muted">{len(view.tokens)} tokens · site {esc(view.site)}</p>'
            '<div class="columns prompt-view">'
            '<div id="features"><h2>Top features (by summed activation)</h2>'
            f'{_rows(view, view.features, "feature", link_features)}</div>'
            '<div id="neurons"><h2>Top neurons (by summed |activation|)</h2>'
            f'{_rows(view, view.neurons, "neuron", False)}</div></div>')


def view_json(view) -> dict:
    """The numbers of a prompt view as JSON (what ``/api/prompt`` answers)."""
    def rows(found):
        return [{"index": r.index, "total": r.total, "acts": r.acts} for r in found]

    return {"site": view.site, "tokens": view.tokens, "token_ids": view.token_ids,
            "features": rows(view.features), "neurons": rows(view.neurons)}


def _page_rows(view, rows, kind: str) -> str:
    parts = []
    for row in rows:
        latent = row.index if kind == "feature" else None
        attribute = "data-latent" if kind == "feature" else "data-neuron"
        label = f"{kind} {row.index} · {'Σ' if kind == 'feature' else 'Σ|·|'} {row.total:.4g}"
        top = _row_max(row.acts)
        parts.append(f'<div class="row" {attribute}="{row.index}" data-max="{top!r}">'
                     f'<div class="label">{html.escape(label)}</div>'
                     f'<div class="toks">{token_spans_html(view.tokens, row.acts, top, latent=latent)}'
                     '</div></div>')
    return "\n".join(parts)


def prompt_html(view) -> str:
    """A self-contained HTML page: features left, neurons right; every token escaped, with ``data-act``."""
    title = html.escape(f"prompt view at {view.site}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
.cols{{display:flex;gap:2em;align-items:flex-start}} .col{{flex:1;min-width:0}}
.row{{border-bottom:1px solid #ddd;padding:.4em 0}} .label{{font-size:.85em;color:#555}}
.toks{{line-height:1.7}} pre.prompt{{white-space:pre-wrap;background:#f6f6f6;padding:.5em}}
{TOKEN_CSS}
</style></head><body>
<h1>{title}</h1>
<pre class="prompt">{html.escape(view.prompt)}</pre>
<div class="cols">
<div class="col" id="features"><h2>Top features (by summed activation)</h2>
{_page_rows(view, view.features, "feature")}
</div>
<div class="col" id="neurons"><h2>Top neurons (by summed |activation|)</h2>
{_page_rows(view, view.neurons, "neuron")}
</div>
</div>
</body></html>
"""
