"""monosemantic: dictionary learning on language-model activations.

The everyday names are offered at the top level, imported on first use (PEP 562), so that
``import monosemantic`` stays cheap: no torch until one of them is touched::

    import monosemantic as ms
    lm = ms.load_model("smollm2-135m")
    store = ms.harvest(lm, ["blocks.6.resid_post"], "runs/l6", corpus="stdlib", n_tokens=100_000)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it, as a string: moving a name is a one-line change here.
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

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'monosemantic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
