"""Which format a folder (or file) is in, told by the files present.

=====================  ==============================================
format                 files
=====================  ==============================================
native                 config.json + weights.safetensors
saelens                cfg.json + sae_weights.safetensors
dictionary_learning    ae.pt (+ config.json)
sparsify               cfg.json + sae.safetensors
openai                 a ``.pt`` file given directly (e.g. ``5.pt``)
circuit_tracer         config.yaml (+ layer_{i}.safetensors, or W_enc_{i}/W_dec_{i}.safetensors)
=====================  ==============================================

The table lives in :mod:`.registry`. A folder matching none of these, or several, is an error
that lists what was found. A sparsify run folder (one sub-folder per hookpoint) is recognised
and its hookpoints are named, so the caller can pass ``subfolder=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from ..errors import MonosemanticError
from .common import list_files
from .registry import REGISTRY, format_named, format_of_file, readable
from .sparsify import hookpoints

FORMATS = readable()


def detect_format(path: Path) -> str:
    """The format of ``path``; MonosemanticError naming the files found when it is unknown or ambiguous."""
    if path.is_file():
        fmt = format_of_file(path)
        if fmt is not None:
            return fmt.name
        patterns = ", ".join(f.file_name for f in REGISTRY.values() if f.file_name)
        raise MonosemanticError(f"{path} is a file that is not a .pt checkpoint (files read directly: {patterns}); "
                                f"pass the folder holding the dictionary (found in {path.parent}: "
                                f"{list_files(path.parent)})")
    if not path.is_dir():
        raise MonosemanticError(f"{path} does not exist")
    matches = [fmt.name for fmt in REGISTRY.values()
               if not fmt.single_file and all((path / f).is_file() for f in fmt.files)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MonosemanticError(f"{path} looks like several formats ({', '.join(matches)}); found "
                                f"{list_files(path)}; pass format= (--format) to choose one")
    _unknown(path)


def _unknown(path: Path) -> NoReturn:
    points = hookpoints(path)
    if points:
        raise MonosemanticError(f"{path} is a sparsify run with hookpoints {', '.join(points)}; pass "
                                f"subfolder= (--subfolder) with one of them")
    patterns = sorted({f"*/{name}" for fmt in REGISTRY.values() for name in fmt.files[:1]})
    saved = sorted({p.parent.relative_to(path).as_posix() for pattern in patterns for p in path.glob(pattern)})
    hint = f"; dictionaries may be in sub-folders {', '.join(saved[:10])} (pass subfolder=)" if saved else ""
    expected = "; ".join(f"{fmt.name}: {fmt.describe()}" for fmt in REGISTRY.values())
    raise MonosemanticError(f"cannot tell the format of {path}: found {list_files(path)}; expected one of "
                            f"{expected}{hint}")


def check_files(path: Path, name: str) -> None:
    """MonosemanticError if ``path`` lacks the files of format ``name`` (an explicitly chosen format)."""
    fmt = format_named(name)
    if fmt.single_file:
        if not path.is_file():
            raise MonosemanticError(f"the {name} format is one {fmt.file_name} file; {path} is not a file")
        return
    folder = path.parent if path.is_file() else path
    missing = [f for f in fmt.files if not (folder / f).is_file()]
    if missing:
        raise MonosemanticError(f"{folder} is not a {name} folder: missing {', '.join(missing)}; found "
                                f"{list_files(folder)}")
