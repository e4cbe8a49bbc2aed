"""Architectures by name: the ``register`` decorator and the constructors that look names up."""

from __future__ import annotations

import sys
from typing import TypeVar

import torch

from ..errors import MonosemanticError
from .base import Dictionary
from .config import DictionaryConfig

# name -> Dictionary subclass; filled as the architecture modules are imported.
ARCHITECTURES: dict[str, type[Dictionary]] = {}

_D = TypeVar("_D", bound=Dictionary)


def register(name: str):
    """Class decorator: make a Dictionary subclass available as ``arch=name``."""

    def decorate(cls: type[_D]) -> type[_D]:  # the class itself, so that type checkers still see its members
        if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
            raise ValueError(f"dictionary arch {name!r} is already registered by {ARCHITECTURES[name].__name__}")
        cls.arch = name
        ARCHITECTURES[name] = cls
        return cls

    return decorate


def architecture(name: str) -> type[Dictionary]:
    """The class registered as ``name``; MonosemanticError listing the known names otherwise.

    Only architectures whose modules have been imported are known here: this package cannot
    import the layers above it, where the baselines (identity, pca, ica, ...) register.
    """
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        hint = "" if "monosemantic.baselines" in sys.modules else (
            " (baselines such as identity, pca and ica are known once monosemantic.baselines is imported; "
            "monosemantic.load_dictionary loads them)")
        raise MonosemanticError(
            f"unknown dictionary arch {name!r}; expected one of {', '.join(sorted(ARCHITECTURES))}{hint}") from None


def dictionary_from_config(config: DictionaryConfig, *, device=None, dtype: torch.dtype | None = None) -> Dictionary:
    """A freshly initialised dictionary for ``config``."""
    dictionary = architecture(config.arch)(config)
    if device is not None or dtype is not None:
        dictionary.to(device=device, dtype=dtype)
    return dictionary


def make_dictionary(arch: str, d_in: int, d_sae: int, *, d_out: int | None = None, skip: bool = False,
                    site_in: str | None = None, site_out: str | None = None, model: str | None = None,
                    device=None, dtype: torch.dtype | None = None, **options) -> Dictionary:
    """A freshly initialised dictionary; ``options`` are the architecture's hyper-parameters.

    Example: ``make_dictionary("topk", 576, 4096, k=32)``. Seed with ``torch.manual_seed``.
    """
    architecture(arch)  # an unknown name is reported before anything else
    config = DictionaryConfig(arch=arch, d_in=d_in, d_sae=d_sae, d_out=d_out, skip=skip, site_in=site_in,
                              site_out=site_out, model=model, options=options)
    return dictionary_from_config(config, device=device, dtype=dtype)
