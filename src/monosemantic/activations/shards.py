"""Shard files: one safetensors file per group of windows, plus a sidecar that marks it complete.

``shard_{i:05d}.safetensors`` holds one ``[rows, D]`` tensor per site (named by the site) and,
per row, ``token_id`` (int32), ``position`` (int32) and ``window`` (int64, the global window
index); ``window_tokens`` ``[windows, context_length]`` (int32) keeps the whole windows so later
tools can show the context of any row.

``shard_{i:05d}.json`` (rows, window range, sha256, bytes) is written only after the shard file
is in place, so its presence means the shard is complete: a rerun after a crash skips shards
with a sidecar and recomputes the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..errors import StoreError
from .files import atomic_write_bytes, atomic_write_json, sha256_bytes
from .manifest import Manifest, ShardRecord, write_manifest

ROW_FIELDS = ("token_id", "position", "window")
WINDOW_FIELD = "window_tokens"
RESERVED = frozenset(ROW_FIELDS + (WINDOW_FIELD,))


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def sidecar_name(index: int) -> str:
    return f"shard_{index:05d}.json"


def row_fields(windows_WS: Tensor, mask_WS: Tensor, window_start: int) -> dict[str, Tensor]:
    """token_id/position/window of the stored rows (``mask_WS`` True), in row order, plus the windows."""
    window_N, position_N = mask_WS.nonzero(as_tuple=True)  # row-major: the order rows are stored in
    return {
        "token_id": windows_WS[window_N, position_N].to(torch.int32),
        "position": position_N.to(torch.int32),
        "window": window_N.to(torch.int64) + window_start,
        WINDOW_FIELD: windows_WS.to(torch.int32).contiguous(),
    }


def _check_shapes(tensors: dict[str, Tensor]) -> int:
    missing = RESERVED - tensors.keys()
    if missing:
        raise StoreError(f"shard tensors lack {sorted(missing)}; expected {sorted(RESERVED)} and one "
                         "tensor per site; build them with row_fields()")
    n_rows = tensors["token_id"].shape[0]
    for name, t in tensors.items():
        if name != WINDOW_FIELD and t.shape[0] != n_rows:
            raise StoreError(f"shard tensor '{name}' has {t.shape[0]} rows, expected {n_rows} like token_id; "
                             "give every per-row tensor the same length")
    return n_rows


def write_shard(folder: Path, index: int, tensors: dict[str, Tensor], window_start: int,
                window_end: int) -> ShardRecord:
    """Write shard ``index`` atomically, then its sidecar; return its manifest record.

    ``tensors``: ``{site: acts_ND}`` plus the fields of :func:`row_fields`, all on the CPU.
    """
    n_rows = _check_shapes(tensors)
    # One metadata key only: safetensors writes several in random order, and a shard recomputed
    # after a crash must come out byte-identical.
    data = safetensors.torch.save({k: t.contiguous() for k, t in tensors.items()},
                                  metadata={"monosemantic_format_version": "1"})
    folder = Path(folder)
    atomic_write_bytes(folder / shard_name(index), data)
    record = ShardRecord(file=shard_name(index), rows=n_rows, window_start=window_start,
                         window_end=window_end, sha256=sha256_bytes(data), bytes=len(data))
    # The sidecar goes last: it is the mark that the shard file above is complete.
    atomic_write_json(folder / sidecar_name(index), record.sidecar_json())
    return record


def read_sidecar(folder: Path, index: int) -> ShardRecord | None:
    """The record of shard ``index`` if it was completed, else None."""
    path = Path(folder) / sidecar_name(index)
    try:
        data = json.loads(path.read_text())
        return ShardRecord.from_json(shard_name(index), data)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError):
        # Sidecars are written atomically, so this is outside tampering: redo the shard.
        return None


def load_shard(folder: Path, record: ShardRecord) -> dict[str, Tensor]:
    """Read a shard, checking its bytes against the manifest's sha256 before parsing them."""
    path = Path(folder) / record.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{record.file} is missing from {folder}; expected every shard the manifest lists; "
                         "re-harvest") from None
    if len(data) != record.bytes or sha256_bytes(data) != record.sha256:
        raise StoreError(f"{record.file} checksum does not match the manifest: the file was modified or "
                         "truncated; re-harvest")
    return safetensors.torch.load(data)


@contextmanager
def open_shard(folder: Path, record: ShardRecord) -> Iterator[Any]:
    """The shard's safetensors reader (header read, tensors on demand); StoreError if it is missing or torn."""
    path = Path(folder) / record.file
    try:
        handle = safe_open(path, framework="pt")
    except FileNotFoundError:
        raise StoreError(f"{record.file} is missing from {folder}; expected every shard the manifest lists; "
                         "re-harvest") from None
    except SafetensorError as e:
        raise StoreError(f"{record.file} in {folder} is not a readable safetensors file ({e}); it was truncated "
                         "or overwritten; re-harvest") from None
    with handle as reader:
        yield reader


# The per-row fields' dtypes as safetensors names them.
FIELD_DTYPES = {"token_id": "I32", "position": "I32", "window": "I64", WINDOW_FIELD: "I32"}
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def check_shard_layout(folder: Path, record: ShardRecord, settings) -> None:
    """StoreError unless the shard's tensors have the shapes and dtypes the manifest says (header only)."""
    expected = {site: ([record.rows, settings.widths[site]], SAFETENSORS_DTYPES[settings.dtype])
                for site in settings.sites}
    expected |= {name: ([record.rows], FIELD_DTYPES[name]) for name in ROW_FIELDS}
    expected[WINDOW_FIELD] = ([record.window_end - record.window_start, settings.context_length],
                              FIELD_DTYPES[WINDOW_FIELD])
    with open_shard(folder, record) as reader:
        slices = {name: reader.get_slice(name) for name in reader.keys()}  # noqa: SIM118 - a reader, not a dict
        found = {name: (list(piece.get_shape()), piece.get_dtype()) for name, piece in slices.items()}
    for name, (shape, dtype) in expected.items():
        if name not in found:
            raise StoreError(f"{record.file} has no tensor {name!r}, which the manifest lists; the manifest or the "
                             "shard was changed by hand; re-harvest")
        if found[name] != (shape, dtype):
            raise StoreError(f"{record.file}: tensor {name!r} is {found[name][1]} {found[name][0]}, but the manifest "
                             f"says {dtype} {shape}; the manifest or the shard was changed by hand; re-harvest")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise StoreError(f"{record.file} holds tensors the manifest does not list ({', '.join(extra)}); the "
                         "manifest or the shard was changed by hand; re-harvest")


def finish_store(folder: Path, manifest: Manifest, n_shards: int) -> Manifest:
    """Collect the sidecars of shards ``0..n_shards-1`` into a complete manifest and write it."""
    records = []
    for index in range(n_shards):
        record = read_sidecar(folder, index)
        if record is None:
            raise StoreError(f"{shard_name(index)} in {folder} was never completed; expected all "
                             f"{n_shards} shards; rerun the same harvest command to complete it")
        records.append(record)
    finished = manifest.finished(records)
    if finished.rows != manifest.settings.n_tokens:
        raise StoreError(f"shards in {folder} hold {finished.rows} rows, expected {manifest.settings.n_tokens}; "
                         "the folder was changed by hand; re-harvest into a new folder")
    write_manifest(folder, finished)
    return finished
