"""Explanations and scores of latents, stored beside their feature data as ``explanations.json``.

Written by the auto-interpretability pipeline (or by hand), read by :class:`FeatureData` and the
dashboards. The file records the fingerprint of the dictionary whose feature data it explains, so
explanations never silently attach to another dictionary's latents.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import MonosemanticError
from .folder import is_feature_folder, not_a_feature_folder


def read_explanations(folder) -> dict:
    """The parsed explanations.json of a feature folder, or {} when there is none."""
    path = Path(folder) / "explanations.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise MonosemanticError(f"{path} is not valid JSON ({e}); delete it and write the explanations again") from None
    if not isinstance(data, dict) or not isinstance(data.get("latents", {}), dict):
        raise MonosemanticError(f"{path} is not an explanations file; delete it and write the explanations again")
    return data


def write_explanations(folder, explanations: dict[int, str], scores: dict[int, dict] | None = None,
                       source: str = "offline", *, fingerprint: str | None = None) -> None:
    """Write or merge explanations.json in a feature folder.

    ``{"source": ..., "fingerprint": ..., "latents": {"12": {"explanation": ..., "scores": {...}, "source": ...}}}``.
    Refuses a folder that is not feature data, a ``fingerprint`` (:func:`dictionary_fingerprint` of the dictionary
    the explanations are about) that is not the folder's, and an existing file written for another dictionary.
    """
    folder = Path(folder)
    if not is_feature_folder(folder):
        raise not_a_feature_folder(folder, "no features.json")
    meta = json.loads((folder / "features.json").read_text())
    ours = meta.get("fingerprint")
    if fingerprint is not None and fingerprint != ours:
        raise MonosemanticError(f"{folder} holds feature data of another dictionary (fingerprint {str(ours)[:12]}, "
                                f"not {fingerprint[:12]}); analyse this dictionary first (monosemantic features)")
    data = read_explanations(folder)
    if data and data.get("fingerprint") not in (None, ours):
        raise MonosemanticError(f"{folder}/explanations.json was written for another dictionary; delete it to start "
                                "afresh")
    n_latents = int(meta["n_latents"])
    latents = data.get("latents", {})
    for latent in sorted(set(explanations) | set(scores or {})):
        if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < n_latents:
            raise MonosemanticError(f"feature index {latent!r} is out of range: the dictionary has latents "
                                    f"0..{n_latents - 1}")
        entry = dict(latents.get(str(latent), {}))
        if latent in explanations:
            entry["explanation"] = str(explanations[latent])
        if scores and latent in scores:
            entry["scores"] = {**entry.get("scores", {}), **_finite(scores[latent])}
        entry["source"] = source
        latents[str(latent)] = entry
    out = {"source": source, "fingerprint": ours, "latents": latents}
    tmp = folder / f".explanations.json.{os.getpid()}"
    tmp.write_text(json.dumps(out, indent=1, allow_nan=False))
    os.replace(tmp, folder / "explanations.json")


def _finite(scores: dict) -> dict:
    """Scores as JSON numbers; NaN/inf become None (strict JSON has no NaN)."""
    return {str(k): (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in scores.items()}
