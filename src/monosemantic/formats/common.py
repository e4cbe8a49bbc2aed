"""What the format converters share: safe file reading, tensor checks, and atomic folder writes.

Every reader checks what it found against what the format promises (names, shapes, dtypes) and
reports a mismatch as one MonosemanticError naming the file, the tensor and what was expected.
Nothing here unpickles: JSON and safetensors only (``ae.pt`` files go through
``dictionary_learning.read_torch_file``, which uses ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..errors import MonosemanticError
from ..folders import replacing_folder


def read_json(path: Path, what: str = "config") -> dict:
    """A JSON object from ``path``; MonosemanticError if it is missing, unreadable or not an object."""
    if not path.is_file():
        raise MonosemanticError(f"{path} is missing; a {what} file was expected there")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MonosemanticError(f"{path} is not readable JSON ({err}); the file is damaged") from None
    if not isinstance(data, dict):
        raise MonosemanticError(f"{path} must hold a JSON object; got {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, on the CPU."""
    if not path.is_file():
        raise MonosemanticError(f"{path} is missing; the weights file was expected there")
    try:
        return load_file(path, device="cpu")
    except (OSError, SafetensorError, ValueError) as err:
        raise MonosemanticError(f"cannot read {path} ({err}); the file is damaged or not safetensors") from None


def check_names(where: str, found: dict, required: AbstractSet[str], optional: AbstractSet[str] = frozenset()) -> None:
    """Missing and unexpected tensor names, reported together with what was expected."""
    missing = sorted(required - found.keys())
    extra = sorted(found.keys() - required - optional)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        expected = ", ".join(sorted(required)) + (f" (optional: {', '.join(sorted(optional))})" if optional else "")
        raise MonosemanticError(f"{where}: {'; '.join(parts)}; expected tensors {expected}; "
                                "the file does not match its config or comes from another program")


def checked(where: str, tensors: dict, name: str, shape: tuple[int, ...], *, integer: bool = False) -> Tensor:
    """``tensors[name]`` after checking its shape and kind; floating tensors come back as float32."""
    tensor = tensors[name]
    if not isinstance(tensor, Tensor):
        raise MonosemanticError(f"{where}: {name} is a {type(tensor).__name__}, expected a tensor")
    if tuple(tensor.shape) != tuple(shape):
        raise MonosemanticError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}; "
                                "the weights and config do not belong together")
    if integer:
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise MonosemanticError(f"{where}: tensor {name} has dtype {tensor.dtype}, expected an integer tensor")
        return tensor
    if not tensor.is_floating_point():
        raise MonosemanticError(f"{where}: tensor {name} has dtype {tensor.dtype}, expected a floating-point tensor")
    return tensor.detach().to(torch.float32)


def config_int(where: str, cfg: dict, name: str, low: int = 1) -> int:
    """``cfg[name]`` as an int >= low (JSON floats with integral values are accepted)."""
    value = cfg.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MonosemanticError(f"{where}: {name}={value!r} is invalid; expected an integer >= {low}")
    return value


def list_files(folder: Path, limit: int = 20) -> str:
    """The names in ``folder`` for an error message (folders marked with a slash)."""
    if not folder.is_dir():
        return "(not a folder)"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "(empty folder)"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def write_folder(folder: str | os.PathLike, writers: dict[str, Callable[[Path], None]], *,
                 overwrite: bool = False) -> Path:
    """Create ``folder`` holding one file per ``writers`` entry (name -> function writing that path).

    The files are written to a hidden sibling and renamed into place, so a reader never sees a
    half-written export. An existing non-empty folder is replaced only with ``overwrite``.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise MonosemanticError(f"{folder} exists and is not a folder; choose another destination")
        if any(folder.iterdir()) and not overwrite:
            raise MonosemanticError(f"{folder} is not empty ({list_files(folder)}); choose a new folder "
                                    "or pass overwrite=True (--overwrite)")
    with replacing_folder(folder, "saving") as staging:
        for name, write in writers.items():
            write(staging / name)
    return folder


def json_writer(obj) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")

    return write
