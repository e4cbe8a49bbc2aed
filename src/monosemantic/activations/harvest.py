"""Harvesting: run a language model over a corpus and store the activations of some sites.

The work is split into shards fixed by the tokens alone (see :mod:`.plan`), each written
atomically with a sidecar marking it done (see :mod:`.shards`). That makes a harvest resumable
after any crash, splittable across torchrun processes, and reproducible bit for bit: a shard's
windows always run in the same batches, whoever computes it and whenever.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..data import CorpusSpec, text_source, token_windows
from ..errors import StoreError
from ..locks import folder_lock
from ..processes import SingleProcess, join_processes
from .files import TMP_SUFFIX, remove_tmp_files
from .manifest import (
    MANIFEST_NAME,
    STORAGE_DTYPES,
    Manifest,
    StoreSettings,
    describe_differences,
    read_manifest,
    storage_dtype_name,
    write_manifest,
)
from .plan import ShardPlan, plan_shards
from .shards import RESERVED, finish_store, read_sidecar
from .store import ActivationStore
from .writer import ShardJob, ShardWriter, start_host_copy


def harvest(lm, sites: Sequence[str] | str, out_dir: str | Path, *, corpus: CorpusSpec = "stdlib", n_tokens: int,
            context_length: int = 128, batch_size: int = 32, dtype: str | torch.dtype = torch.float32,
            prepend_bos: bool = False, skip_first: bool = True, exclude_special: bool = True,
            shard_rows: int = 16384, progress: bool = True, text_column: str = "text") -> ActivationStore:
    """Store the activations of ``sites`` for the first ``n_tokens`` storable tokens of ``corpus``.

    Rerunning with the same arguments resumes an interrupted harvest (or returns the finished
    store at once); other settings on an existing store raise :class:`StoreError`.
    """
    n_tokens, context_length, batch_size, shard_rows = _check_numbers(
        n_tokens=n_tokens, context_length=context_length, batch_size=batch_size, shard_rows=shard_rows).values()
    folder = Path(out_dir).expanduser()
    # Rank 0 holds it under torchrun; the other ranks write nothing before its first barrier.
    with folder_lock(folder):
        source = text_source(corpus, text_column=text_column)
        settings = _settings(lm, sites, source, dtype=dtype, context_length=context_length, prepend_bos=prepend_bos,
                             skip_first=skip_first, exclude_special=exclude_special, n_tokens=n_tokens,
                             shard_rows=shard_rows, batch_size=batch_size)
        existing = _existing_manifest(folder, settings)
        if existing is not None and existing.complete:
            finished = ActivationStore(folder)
            finished.verify()  # a rerun on a damaged store says so rather than returning it
            return finished

        special_ids = sorted(set(lm.tokenizer.all_special_ids)) if exclude_special else []
        plans = _plan(lm.tokenizer, source, settings, special_ids)
        ranks = join_processes()  # gloo even beside a GPU: it only carries barriers here
        try:
            ranks.barrier()  # every rank has looked at the folder before rank 0 changes it
            if ranks.is_main:
                _prepare_folder(folder, existing, settings)
            ranks.barrier()  # no rank writes a shard before the folder is ready
            todo = _shards_to_compute(folder, plans, ranks)
            _compute_shards(lm, folder, todo, settings, special_ids, plans, ranks, progress)
            ranks.barrier()  # every shard of every rank is on disk
            if ranks.is_main:
                manifest = read_manifest(folder)
                assert manifest is not None  # _prepare_folder wrote it
                finish_store(folder, manifest, len(plans))
            ranks.barrier()  # the final manifest is on disk before any rank opens the store
        finally:
            ranks.close()
        return ActivationStore(folder)


def _settings(lm, sites, source, *, dtype, context_length: int, prepend_bos: bool, skip_first: bool,
              exclude_special: bool, n_tokens: int, shard_rows: int, batch_size: int) -> StoreSettings:
    """The store identity of this harvest; validates the sites and the context length on the way."""
    sites = lm.resolve_sites(sites)
    _check_site_names(sites)
    if lm.max_context is not None and context_length > lm.max_context:
        raise StoreError(f"context_length {context_length} is longer than {lm.name} allows ({lm.max_context} "
                         f"positions); use --context {lm.max_context} or less")
    return StoreSettings(
        model=lm.describe(), sites=tuple(sites), widths={s: lm.width(s) for s in sites},
        dtype=storage_dtype_name(dtype), context_length=context_length, corpus=source.describe(),
        prepend_bos=prepend_bos, skip_first=skip_first, exclude_special=exclude_special, n_tokens=n_tokens,
        windows_per_shard=max(1, shard_rows // context_length), batch_size=batch_size,
        # Rows computed on another kind of device differ in the last bits: no mixing on resume.
        device=torch.device(lm.device).type)


_EXAMPLES = {"n_tokens": 1_000_000, "context_length": 128, "batch_size": 32, "shard_rows": 16384}


def _check_numbers(**values) -> dict[str, int]:
    """The values as plain ints (numpy integers are fine); StoreError for anything else or too small."""
    checked = {}
    for name, value in values.items():
        least = 2 if name == "context_length" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise StoreError(f"{name}={value!r} is not allowed; expected an integer >= {least}; "
                             f"try {_EXAMPLES[name]}")
        checked[name] = int(value)
    return checked


def _check_site_names(sites: list[str]) -> None:
    clash = RESERVED.intersection(sites)
    if clash:
        raise StoreError(f"site name {sorted(clash)[0]!r} is reserved for row metadata in stores; "
                         "expected a model site such as blocks.6.resid_post; name the module path instead")


def _existing_manifest(folder: Path, settings: StoreSettings) -> Manifest | None:
    """The manifest of a same-settings store already in ``folder``; StoreError for anything else there."""
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"store path {folder} is a file; expected a folder (new or empty); use another --out")
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        # A crash while writing the first manifest leaves only its .tmp: still ours, still empty.
        foreign = [p.name for p in folder.iterdir() if p.name != MANIFEST_NAME + TMP_SUFFIX] if folder.is_dir() else []
        if foreign:
            raise StoreError(f"folder {folder} is not empty and holds no activation store (no {MANIFEST_NAME}); "
                             "expected a new or empty folder; use another --out")
        return None
    if manifest.settings.to_json() != settings.to_json():
        raise StoreError(f"store at {folder} was made with {describe_differences(manifest.settings, settings)}; "
                         "use another --out or the same settings")
    return manifest


class _CountingSource:
    """Wraps a corpus to tell an empty corpus apart from one too short for a single window."""

    def __init__(self, source: Iterable[str]):
        self.source, self.characters = source, 0

    def __iter__(self) -> Iterator[str]:
        for doc in self.source:
            self.characters += len(doc.strip())
            yield doc


def _plan(tokenizer, source, settings: StoreSettings, special_ids: Collection[int]) -> list[ShardPlan]:
    counted = _CountingSource(source)
    windows = token_windows(counted, tokenizer, settings.context_length, prepend_bos=settings.prepend_bos)
    plans, rows = plan_shards(windows, special_ids, n_tokens=settings.n_tokens,
                              windows_per_shard=settings.windows_per_shard, skip_first=settings.skip_first)
    name = _corpus_label(settings.corpus)
    if counted.characters == 0:
        raise StoreError(f"corpus {name} is empty; expected documents with text; pass another --corpus")
    if rows < settings.n_tokens:
        raise StoreError(f"corpus {name} yields only {rows} storable tokens at context_length="
                         f"{settings.context_length} ({sum(len(p.windows_WS) for p in plans)} windows), fewer "
                         f"than the {settings.n_tokens} asked; ask for at most {rows} tokens or use a bigger corpus")
    return plans


def _corpus_label(corpus: dict) -> str:
    for key in ("path", "dataset", "id", "root"):
        if corpus.get(key):
            return f"{corpus.get('kind', '')}:{corpus[key]}".lstrip(":")
    return str(corpus.get("kind", corpus))


def _prepare_folder(folder: Path, existing: Manifest | None, settings: StoreSettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    remove_tmp_files(folder)  # torn writes of a crashed run; their shards have no sidecar
    if existing is None:
        write_manifest(folder, Manifest(settings=settings))


def _shards_to_compute(folder: Path, plans: list[ShardPlan], ranks: SingleProcess) -> list[ShardPlan]:
    todo = []
    for plan in plans:
        if not ranks.mine(plan.index):
            continue
        done = read_sidecar(folder, plan.index)
        if done is None:
            todo.append(plan)
        elif (done.window_start, done.window_end, done.rows) != (plan.window_start, plan.window_end, plan.rows):
            raise StoreError(f"{done.file} in {folder} covers windows {done.window_start}-{done.window_end} "
                             f"({done.rows} rows) but this harvest plans {plan.window_start}-{plan.window_end} "
                             f"({plan.rows} rows): the corpus changed; use another --out")
    return todo


def _compute_shards(lm, folder: Path, todo: list[ShardPlan], settings: StoreSettings,
                    special_ids: Collection[int], plans: list[ShardPlan], ranks: SingleProcess, progress: bool) -> None:
    mine = [p for p in plans if ranks.mine(p.index)]
    bar = tqdm(total=sum(p.rows for p in mine), initial=sum(p.rows for p in mine) - sum(p.rows for p in todo),
               unit="tok", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"harvest{f' rank {ranks.rank}' if ranks.world > 1 else ''}")
    writer = ShardWriter(folder)
    try:
        with torch.inference_mode():
            for plan in todo:
                mask_WS = plan.mask(special_ids, settings.skip_first)
                acts_ND = _forward_shard(lm, plan, mask_WS, settings, bar)
                writer.submit(ShardJob(plan, mask_WS, start_host_copy(acts_ND)))
    except BaseException:
        writer.abandon()
        bar.close()
        raise
    writer.close()
    bar.close()


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    # From pinned memory the copy is asynchronous, so the CPU keeps queueing GPU work.
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _forward_shard(lm, plan: ShardPlan, mask_WS: Tensor, settings: StoreSettings, bar) -> dict[str, Tensor]:
    """The stored rows of one shard, ``{site: [rows, D]}`` in the storage dtype on ``lm.device``.

    Batches always start at the shard's first window, so a rerun batches windows identically.
    """
    device = torch.device(lm.device)
    storage = STORAGE_DTYPES[settings.dtype]
    out_ND = {s: torch.empty(plan.rows, settings.widths[s], dtype=storage, device=device) for s in settings.sites}
    row = 0
    for b0 in range(0, plan.windows_WS.shape[0], settings.batch_size):
        batch_mask_BS = mask_WS[b0:b0 + settings.batch_size]
        n_rows = int(batch_mask_BS.sum())
        if n_rows == 0:
            continue  # nothing to store; skipping cannot change other batches' results
        ids_BS = _to_device(plan.windows_WS[b0:b0 + settings.batch_size].long(), device)
        # Row indices are computed on the CPU: a boolean index on the GPU would force a sync.
        rows_N = _to_device(batch_mask_BS.flatten().nonzero().squeeze(1), device)
        acts_BSD = lm.capture(ids_BS, list(settings.sites))
        for site in settings.sites:
            out_ND[site][row:row + n_rows] = acts_BSD[site].flatten(0, 1).index_select(0, rows_N)
        row += n_rows
        bar.update(n_rows)
    assert row == plan.rows, f"shard {plan.index}: computed {row} rows, planned {plan.rows}"
    return out_ND
