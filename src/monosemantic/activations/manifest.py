"""What an activation store is: its settings (identity), its shards, and the manifest file.

``manifest.json`` is the store's single source of truth for readers. Its ``settings`` are
everything that determines the stored numbers -- the model, the sites, the corpus, the window
plan and even the batch size (batch composition changes float results in the last bits) -- so
that a rerun can tell whether a folder holds the same harvest (resume it) or another one
(refuse to mix them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import StoreError
from .files import atomic_write_json

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Storage dtypes: names as written in manifests. Narrower dtypes halve the disk and read cost.
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def storage_dtype_name(dtype: str | torch.dtype) -> str:
    """The manifest name of a storage dtype; StoreError for anything not storable."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = str(dtype).removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
    if name not in STORAGE_DTYPES:
        raise StoreError(
            f"storage dtype {dtype!r} is not supported; expected one of {', '.join(STORAGE_DTYPES)}; "
            "try float32 or bfloat16"
        )
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _normalised(value: Any) -> Any:
    # Compare settings as they look after a JSON round trip (tuples become lists and so on),
    # so a fresh harvest's settings equal those read back from disk.
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class StoreSettings:
    """Everything that defines a store's content; two harvests with equal settings store equal rows."""

    model: dict
    sites: tuple[str, ...]
    widths: dict
    dtype: str
    context_length: int
    corpus: dict
    prepend_bos: bool
    skip_first: bool
    exclude_special: bool
    n_tokens: int
    windows_per_shard: int
    batch_size: int
    device: str = "cpu"

    def to_json(self) -> dict:
        return _normalised(asdict(self))

    @classmethod
    def from_json(cls, data: dict, where: str) -> StoreSettings:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names >= data.keys() or not (names - {"device"}) <= data.keys():
            raise StoreError(f"{where} has unreadable settings; expected a manifest written by monosemantic; "
                             "re-harvest into a new folder")
        return cls(**{**data, "sites": tuple(data["sites"])})

    def differences(self, other: StoreSettings) -> list[tuple[str, Any, Any]]:
        """``(key, self's value, other's value)`` for each differing setting; nested keys dotted."""
        return _diff(self.to_json(), other.to_json(), "")


def describe_differences(stored: StoreSettings, asked: StoreSettings, limit: int = 3) -> str:
    """``"context_length=64, not 128"`` for the first ``limit`` differences, in one line."""
    diffs = stored.differences(asked)
    parts = [f"{key}={_short(ours)}, not {_short(theirs)}" for key, ours, theirs in diffs[:limit]]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(parts) + more


def _diff(ours: Any, theirs: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in list(ours) + [k for k in theirs if k not in ours]:
            out += _diff(ours.get(key), theirs.get(key), f"{prefix}{key}.")
        return out
    return [] if ours == theirs else [(prefix.rstrip("."), ours, theirs)]


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ShardRecord:
    """One shard file as listed in the manifest (and, without ``file``, in its sidecar)."""

    file: str
    rows: int
    window_start: int
    window_end: int
    sha256: str
    bytes: int

    def sidecar_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "file"}

    @classmethod
    def from_json(cls, file: str, data: dict) -> ShardRecord:
        return cls(file=file, **{k: data[k] for k in ("rows", "window_start", "window_end", "sha256", "bytes")})


@dataclass(frozen=True)
class Manifest:
    """The content of ``manifest.json``."""

    settings: StoreSettings
    shards: tuple[ShardRecord, ...] = ()
    complete: bool = False
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    format_version: int = FORMAT_VERSION

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def finished(self, shards: list[ShardRecord]) -> Manifest:
        """This manifest marked complete with ``shards`` (in index order)."""
        return replace(self, shards=tuple(shards), complete=True, updated=_now())

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "settings": self.settings.to_json(),
            "shards": [asdict(s) for s in self.shards],
            "rows": self.rows,
            "complete": self.complete,
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> Manifest:
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise StoreError(f"{where} has format_version {version!r}, expected {FORMAT_VERSION}; "
                             "use the monosemantic version that wrote it, or re-harvest")
        try:
            shards = tuple(ShardRecord(**s) for s in data["shards"])
            return cls(settings=StoreSettings.from_json(data["settings"], where), shards=shards,
                       complete=bool(data["complete"]), created=data["created"], updated=data["updated"])
        except (KeyError, TypeError) as e:
            raise StoreError(f"{where} is missing or has malformed field {e}; expected a manifest written by "
                             "monosemantic; re-harvest into a new folder") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    atomic_write_json(Path(folder) / MANIFEST_NAME, manifest.to_json())


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``, or None when there is none."""
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); expected a manifest "
                         "written by monosemantic; re-harvest into a new folder") from None
    return Manifest.from_json(data, str(path))
