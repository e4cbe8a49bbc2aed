"""Which latents to explain: ranges, lists, the most active, or a random sample of live ones."""

from __future__ import annotations

import random
import re

from ..errors import MonosemanticError

_FORMS = "e.g. 0-99, 3,17,42, top50 (most often firing) or random50 (random latents that fire)"


def select_latents(feature_data, spec, *, seed: int = 0) -> list[int]:
    """Latent indices from ``spec``: a list of ints, or a string ``0-99``, ``3,17,42``, ``top50``, ``random50``."""
    n = feature_data.n_latents
    if isinstance(spec, str):
        spec = spec.strip()
        ranked = re.fullmatch(r"(top|random)(\d+)", spec)
        if ranked:
            live = [f for f in feature_data.latent_order("density") if feature_data.density(f) > 0]
            count = int(ranked.group(2))
            if ranked.group(1) == "top":
                return live[:count]
            return sorted(random.Random(seed).sample(live, min(count, len(live))))
        spec = _parse_list(spec)
    latents = list(dict.fromkeys(spec))
    bad = [f for f in latents if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < n]
    if bad or not latents:
        raise MonosemanticError(f"latents {bad or spec!r} are not valid: this dictionary has latents 0..{n - 1}; "
                                f"pass {_FORMS}")
    return latents


def _parse_list(text: str) -> list[int]:
    latents: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not bounds:
            raise MonosemanticError(f"latent selection {text!r} is not understood (at {part!r}); pass {_FORMS}")
        low, high = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1))
        if high < low:
            raise MonosemanticError(f"latent range {part!r} runs backwards; pass e.g. 0-99")
        latents += range(low, high + 1)
    return latents
