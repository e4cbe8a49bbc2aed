"""Formats by name: the files that make a folder (or file) one, and its reader and writer.

Detection (:mod:`.detect`), ``load_dictionary`` and ``save_dictionary_as`` (:mod:`.load`) go
through this table only, so a new format is its module plus one row here. Rows are in the
order detection reports them; for a file given directly, the first row whose ``file_name``
pattern matches wins (``ae.pt`` is dictionary_learning before it is an openai checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..dictionaries import Dictionary, load_dictionary_native, save_dictionary
from ..errors import MonosemanticError
from .circuit_tracer import load_circuit_tracer, save_circuit_tracer
from .dictionary_learning import load_dictionary_learning, save_dictionary_learning
from .openai import load_openai
from .saelens import load_saelens, save_saelens
from .sparsify import load_sparsify, save_sparsify


@dataclass(frozen=True)
class Format:
    """One format: how to recognise it, read it and (unless read-only) write it."""

    name: str
    files: tuple[str, ...]  # files that together make a folder this format; () for a single-file format
    load: Callable[..., Dictionary]  # (folder, or the file itself for single-file formats, **options)
    save: Callable[..., Path] | None = None  # (dictionary, folder, *, overwrite) -> folder; None: read-only
    file_name: str | None = None  # pattern of a file given directly that is this format
    load_options: tuple[str, ...] = ()  # keyword options its reader takes besides the path

    @property
    def single_file(self) -> bool:
        return not self.files

    def describe(self) -> str:
        """What this format looks like on disk, for error messages."""
        return " + ".join(self.files) if self.files else f"a {self.file_name} file"


REGISTRY: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to the table; a name already taken by another format is an error."""
    if REGISTRY.get(fmt.name, fmt) != fmt:
        raise ValueError(f"format {fmt.name!r} is already registered")
    REGISTRY[fmt.name] = fmt
    return fmt


for _fmt in (
    Format("native", ("config.json", "weights.safetensors"), load_dictionary_native, save_dictionary),
    Format("saelens", ("cfg.json", "sae_weights.safetensors"), load_saelens, save_saelens,
           load_options=("input_scale",)),
    Format("dictionary_learning", ("ae.pt",), load_dictionary_learning, save_dictionary_learning, file_name="ae.pt"),
    Format("sparsify", ("cfg.json", "sae.safetensors"), load_sparsify, save_sparsify),
    Format("openai", (), load_openai, file_name="*.pt"),
    Format("circuit_tracer", ("config.yaml",), load_circuit_tracer, save_circuit_tracer),
):
    register_format(_fmt)


def format_named(name: str) -> Format:
    """The format called ``name``; MonosemanticError listing the known ones otherwise."""
    if name not in REGISTRY:
        raise MonosemanticError(f"unknown format {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def format_of_file(path: Path) -> Format | None:
    """The format a file given directly is read as (see the module docstring), or None."""
    return next((fmt for fmt in REGISTRY.values() if fmt.file_name and fnmatch(path.name, fmt.file_name)), None)


def readable() -> tuple[str, ...]:
    return tuple(REGISTRY)


def writable() -> tuple[str, ...]:
    return tuple(name for name, fmt in REGISTRY.items() if fmt.save is not None)
