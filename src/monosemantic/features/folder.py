"""Recognising a feature folder: the one test that the feature data and its explanations both apply."""

from __future__ import annotations

from pathlib import Path

from ..errors import MonosemanticError


def is_feature_folder(folder: Path) -> bool:
    return (folder / "features.json").is_file()


def not_a_feature_folder(folder: Path, why: str) -> MonosemanticError:
    return MonosemanticError(f"{folder} is not a feature folder ({why}); expected the output of "
                             "`monosemantic features DICTIONARY` (features.json, latents.safetensors, ...)")
