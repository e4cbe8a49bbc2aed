"""The native on-disk format: a folder with ``config.json`` and ``weights.safetensors``.

Every parameter and buffer is stored under its module name (floating tensors as float32,
integer buffers as they are). A save is written to a hidden sibling folder and renamed into
place, so a reader sees the old folder or the complete new one, never a half-written save.
No pickle anywhere: JSON and safetensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import MonosemanticError
from ..folders import replacing_folder
from .base import Dictionary
from .config import FORMAT_VERSION, DictionaryConfig
from .registry import dictionary_from_config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
_SAVE_FILES = {CONFIG_NAME, WEIGHTS_NAME}


def _tensors_to_save(dictionary: Dictionary) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, tensor in dictionary.state_dict().items():
        tensor = tensor.detach().to("cpu")
        tensors[name] = (tensor.float() if tensor.is_floating_point() else tensor).contiguous().clone()
    return tensors


def save_dictionary(dictionary: Dictionary, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save to ``folder`` atomically; returns its path.

    An existing save of identical content is left as it is; a different one is replaced only
    with ``overwrite=True``. A folder holding anything other than a save is never replaced.
    """
    folder = Path(folder)
    config_dict = dictionary.config.to_dict()
    tensors = _tensors_to_save(dictionary)
    if folder.exists():
        # With overwrite the old content does not matter, so it is not read (checkpoint loops).
        if not overwrite and _same_save(folder, config_dict, tensors):
            return folder
        _check_replaceable(folder, overwrite)
    with replacing_folder(folder, "saving") as staging:
        (staging / WEIGHTS_NAME).write_bytes(
            weights_bytes(tensors, {"format": "pt", "format_version": str(FORMAT_VERSION)}))
        _write_json(staging / CONFIG_NAME, config_dict)
        _fsync_path(staging / WEIGHTS_NAME)
    return folder


def weights_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of ``tensors``, byte for byte the same for the same tensors and metadata.

    safetensors writes its metadata from a hash map, in an order that changes from one save to the
    next; here it is sorted, so that a checksum of the file can stand for the dictionary.
    """
    data = safetensors.torch.save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text = text.ljust(-(-len(text) // 8) * 8, b" ")  # the format pads its header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def _check_replaceable(folder: Path, overwrite: bool) -> None:
    if not folder.is_dir():
        raise MonosemanticError(f"{folder} exists and is not a folder; choose another place to save the dictionary")
    contents = {p.name for p in folder.iterdir()}
    if not contents:
        return
    if not contents <= _SAVE_FILES:
        raise MonosemanticError(
            f"{folder} holds files other than a dictionary save ({', '.join(sorted(contents - _SAVE_FILES))}); "
            "choose an empty or new folder")
    if not overwrite:
        raise MonosemanticError(
            f"{folder} already holds a different dictionary; pass overwrite=True to replace it "
            "or choose another folder")


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _same_save(folder: Path, config_dict: dict, tensors: dict[str, torch.Tensor]) -> bool:
    try:
        if json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")) != config_dict:
            return False  # decided without reading the (large) weights
        stored = load_file(folder / WEIGHTS_NAME)
    except (OSError, ValueError, SafetensorError):
        return False
    return stored.keys() == tensors.keys() and all(
        stored[name].dtype == t.dtype and torch.equal(stored[name], t) for name, t in tensors.items())


def read_config(folder: str | os.PathLike) -> DictionaryConfig:
    """The config of a saved dictionary, without loading its weights."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise MonosemanticError(f"{folder} is not a saved dictionary (no {CONFIG_NAME}); "
                                "pass the folder given to save_dictionary")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MonosemanticError(f"{path} is not readable JSON ({err}); the save is damaged") from None
    return DictionaryConfig.from_dict(data, where=str(path))


def load_dictionary_native(folder: str | os.PathLike, device="cpu") -> Dictionary:
    """Load a folder written by :func:`save_dictionary`; the dictionary is returned in eval mode."""
    config = read_config(folder)
    path = Path(folder) / WEIGHTS_NAME
    try:
        tensors = load_file(path, device="cpu")
    except (OSError, SafetensorError) as err:
        raise MonosemanticError(f"cannot read {path} ({err}); the save is missing or damaged") from None
    dictionary = dictionary_from_config(config)
    dictionary.retired_state = dictionary.pop_retired(tensors)
    _check_tensors(path, tensors, dictionary.state_dict())
    dictionary.load_state_dict(tensors)
    check_finite(dictionary, path)
    return dictionary.to(device).eval()


def check_finite(dictionary: Dictionary, where: str | os.PathLike) -> None:
    """MonosemanticError naming the first tensor that holds NaN or inf: such weights give NaN codes downstream.

    A logarithm (``LOG_TENSORS``) may be -inf, the log of 0.
    """
    for name, tensor in dictionary.state_dict().items():
        if tensor.is_floating_point():
            ok = torch.isfinite(tensor)
            if name in dictionary.LOG_TENSORS:
                ok |= tensor == -torch.inf
            bad = int((~ok).sum())
            if bad:
                raise MonosemanticError(f"{where}: tensor {name} holds {bad:,} NaN or infinite value(s); the training "
                                        "diverged or the file is damaged; use an earlier checkpoint or retrain")


def _check_tensors(path: Path, found: dict, expected: dict) -> None:
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise MonosemanticError(
            f"{path} does not match its config: {'; '.join(parts)} (expected {', '.join(sorted(expected))}); "
            "the save is damaged or from another program")
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            raise MonosemanticError(
                f"{path}: tensor {name} has shape {tuple(found[name].shape)}, expected {tuple(tensor.shape)} "
                "from config.json; the weights and config do not belong together")
