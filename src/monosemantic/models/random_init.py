"""A randomly initialised copy of a language model: the control of Heap et al. 2025.

Dictionaries trained on the activations of a transformer with random weights also look
interpretable (arXiv 2501.17727), so a claim about learned features needs this control beside
it: the same architecture, config and tokenizer, weights drawn by the model class's own
initialiser from a seed, and the same text. Its name is the base model's with
``@random-init-SEED`` appended, and :func:`~.loading.load_model` accepts that name back, so a
dictionary trained on it records a model that can be rebuilt exactly.
"""

from __future__ import annotations

import re

import torch

from ..errors import MonosemanticError

RANDOM_INIT = "@random-init-"
_SPEC = re.compile(r"^(?P<base>.+)@random-init-(?P<seed>\d+)$")


def random_init_spec(spec: str) -> tuple[str, int] | None:
    """``(base model spec, seed)`` for a name like ``smollm2-135m@random-init-0``, else None."""
    found = _SPEC.match(spec)
    return (found["base"], int(found["seed"])) if found else None


def randomly_initialised(lm, seed: int = 0):
    """A :class:`~.loading.LanguageModel` like ``lm`` whose weights are freshly initialised from ``seed``."""
    from transformers import AutoModelForCausalLM

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MonosemanticError(f"random-init seed {seed!r} is invalid; expected an integer >= 0")
    if random_init_spec(lm.name) is not None:
        raise MonosemanticError(f"{lm.name} is already a randomly initialised model; pass the trained model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(lm.model.config, dtype=lm.dtype)
    model.to(lm.device).eval()
    # type(lm): a LanguageModel of the same class; loading.py (which defines it) builds these controls by name.
    return type(lm)(model=model, tokenizer=lm.tokenizer, name=f"{lm.name}{RANDOM_INIT}{seed}",
                    source=f"random-init:{seed}:{lm.source}")
