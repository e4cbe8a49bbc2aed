"""Tokens as coloured, escaped HTML spans: what the prompt views and the dashboard pages share.

Every token string goes through :func:`html.escape`. Spans use ``white-space: pre`` so spaces
keep their width; a newline is shown as ``↵`` followed by a line break. Each span carries its
exact activation in ``data-act`` so a browser test can check colours against the library's
numbers. The colour scale is ``features.shading``'s, the one the terminal view uses too.
"""

from __future__ import annotations

import html

from ..errors import MonosemanticError
from ..features.shading import act_alpha, act_rgb, visible_token

TOKEN_CSS = ".tok{white-space:pre;font-family:ui-monospace,monospace;border-radius:2px;padding:0 1px}"


def act_colour(act: float, max_act: float) -> str:
    r, g, b = act_rgb(act)
    return f"rgba({r}, {g}, {b}, {act_alpha(act, max_act):.3f})"


def token_spans_html(tokens: list[str], acts: list[float], max_act: float, *, latent: int | None = None) -> str:
    """``<span class="tok" data-act="..." style="background: rgba(...)">escaped</span>`` per token.

    Colour opacity is ``|act| / max_act`` (orange for positive, blue for negative); ``title`` shows
    the value on hover; ``latent`` (when given) is added as ``data-latent`` on every span.
    """
    if len(tokens) != len(acts):
        raise MonosemanticError(f"got {len(tokens)} tokens but {len(acts)} activations; pass one per token")
    latent_attr = f' data-latent="{int(latent)}"' if latent is not None else ""
    spans = []
    for text, act in zip(tokens, acts):
        act = float(act)
        shown = html.escape(visible_token(text))
        newline = "<br>" if "\n" in text else ""
        style = f"background: {act_colour(act, max_act)}"
        spans.append(f'<span class="tok" data-act="{act!r}"{latent_attr} style="{style}" title="{act:.4g}">'
                     f'{shown}</span>{newline}')
    return "".join(spans)
