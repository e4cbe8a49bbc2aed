"""How a token is shown beside its activation: the colour scale and visible whitespace.

One scale for every view, so the terminal (:mod:`.terminal`) and the HTML pages (``viz``) agree:
opacity ``|act| / max_act``, orange for positive activations and blue for negative ones (the
signed codes of baselines). Newlines are shown as ``↵`` and tabs as ``→``, so a token of pure
whitespace still has a visible, colourable box.
"""

from __future__ import annotations

import math

POSITIVE_RGB = (255, 115, 0)
NEGATIVE_RGB = (30, 110, 255)


def visible_token(text: str) -> str:
    """Token text with newlines and tabs shown as arrows (the raw text is what gets escaped)."""
    return text.replace("\r", "").replace("\n", "↵").replace("\t", "→")


def act_alpha(act: float, max_act: float) -> float:
    """Background opacity of a token: |act| / max_act, clipped to [0, 1]; 0 when max_act <= 0."""
    if not max_act > 0 or math.isnan(act):
        return 0.0
    return min(abs(act) / max_act, 1.0)


def act_rgb(act: float) -> tuple[int, int, int]:
    """The colour of an activation's sign."""
    return POSITIVE_RGB if act >= 0 else NEGATIVE_RGB
