"""monosemantic: dictionary learning on language-model activations.

The everyday names are offered at the top level, imported on first use (PEP 562), so that
``import monosemantic`` stays cheap: no torch until one of them is touched::

    import monosemantic as ms
    lm = ms.load_model("smollm2-135m")
    store = ms.harvest(lm, ["blocks.6.resid_post"], "runs/l6", corpus="stdlib", n_tokens=100_000)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lazy names' real types, for type checkers and editors; never run
    from .activations import ActivationStore, harvest
    from .dictionaries import make_dictionary
    from .evaluation import evaluate_suite
    from .features import analyze_features
    from .formats import load_dictionary
    from .models import load_model
    from .training import TrainConfig, Trainer
    from .viz import build_dashboard

__version__ = "0.1.0"

# name -> the module that defines it, as a string. A name added here also goes into the
# TYPE_CHECKING imports above and into __all__, written out because type checkers read it literally.
_LAZY = {
    "load_model": "monosemantic.models",
    "harvest": "monosemantic.activations",
    "ActivationStore": "monosemantic.activations",
    "make_dictionary": "monosemantic.dictionaries",
    "Trainer": "monosemantic.training",
    "TrainConfig": "monosemantic.training",
    "load_dictionary": "monosemantic.formats",
    "evaluate_suite": "monosemantic.evaluation",
    "analyze_features": "monosemantic.features",
    "build_dashboard": "monosemantic.viz",
}

__all__ = ["__version__", "load_model", "harvest", "ActivationStore", "make_dictionary", "Trainer", "TrainConfig",
           "load_dictionary", "evaluate_suite", "analyze_features", "build_dashboard"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'monosemantic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
