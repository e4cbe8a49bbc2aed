"""Activation stores read back exactly what the shard writer wrote, and batch it correctly.

Stores here are built from synthetic tensors through the real writer (``write_shard`` and
``finish_store``), so reading, checksums, shuffling, splits and the memory bound are tested
without a model.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from monosemantic.activations import (
    ActivationStore,
    Manifest,
    StoreSettings,
    finish_store,
    held_out,
    read_manifest,
    row_fields,
    write_shard,
)
from monosemantic.activations.manifest import describe_differences, write_manifest
from monosemantic.errors import MonosemanticError, StoreError

CONTEXT = 8
SITES = {"blocks.0.resid_post": 6, "blocks.1.mlp_out": 3}
WINDOWS_PER_SHARD = (3, 5, 2, 4)  # shards of different sizes; 7 rows per window (position 0 skipped)


def _settings(n_tokens: int, dtype: str = "float32") -> StoreSettings:
    return StoreSettings(model={"name": "synthetic"}, sites=tuple(SITES), widths=dict(SITES), dtype=dtype,
                         context_length=CONTEXT, corpus={"kind": "synthetic"}, prepend_bos=False, skip_first=True,
                         exclude_special=False, n_tokens=n_tokens, windows_per_shard=max(WINDOWS_PER_SHARD),
                         batch_size=1)


def _write_shards(folder, dtype=torch.float32, finish=True, windows_per_shard=WINDOWS_PER_SHARD):
    """Write a store whose column 0 of every site holds the global row number (to identify rows)."""
    gen = torch.Generator().manual_seed(0)
    written = {site: [] for site in SITES}
    tokens = {"token_id": [], "position": [], "window": []}
    row, window = 0, 0
    n_rows = sum(windows_per_shard) * (CONTEXT - 1)
    write_manifest(folder, Manifest(settings=_settings(n_rows, str(dtype).removeprefix("torch."))))
    for index, n_windows in enumerate(windows_per_shard):
        windows_WS = torch.randint(0, 1000, (n_windows, CONTEXT), generator=gen)
        mask_WS = torch.ones(n_windows, CONTEXT, dtype=torch.bool)
        mask_WS[:, 0] = False
        fields = row_fields(windows_WS, mask_WS, window)
        n = int(mask_WS.sum())
        acts = {}
        for site, width in SITES.items():
            acts_ND = torch.randn(n, width, generator=gen)
            acts_ND[:, 0] = torch.arange(row, row + n, dtype=torch.float32)
            acts[site] = acts_ND.to(dtype)
            written[site].append(acts[site])
        for name in tokens:
            tokens[name].append(fields[name])
        write_shard(folder, index, {**acts, **fields}, window, window + n_windows)
        row, window = row + n, window + n_windows
    if finish:
        manifest = read_manifest(folder)
        assert manifest is not None
        finish_store(folder, manifest, len(windows_per_shard))
    return ({s: torch.cat(t) for s, t in written.items()}, {k: torch.cat(v) for k, v in tokens.items()})


@pytest.fixture
def store(tmp_path):
    written, tokens = _write_shards(tmp_path)
    return ActivationStore(tmp_path), written, tokens


def _ids(batch) -> list[int]:
    return batch[:, 0].round().long().tolist()


def test_read_back_equals_written(store):
    store, written, tokens = store
    assert len(store) == sum(WINDOWS_PER_SHARD) * (CONTEXT - 1)
    assert store.sites == list(SITES) and store.width("blocks.1.mlp_out") == 3
    assert store.context_length == CONTEXT and store.dtype == torch.float32 and store.num_shards == 4
    for site in SITES:
        assert torch.equal(store.rows(site, 0, len(store)), written[site])
        assert torch.equal(store.rows(site, 10, 40), written[site][10:40])  # spans shard boundaries
        assert store.rows(site, 5, 5).shape == (0, SITES[site])
    got = store.tokens()
    for name in ("token_id", "position", "window"):
        assert torch.equal(getattr(got, name), tokens[name])
    shard = store.read_shard(1)
    assert shard["window_tokens"].shape == (5, CONTEXT) and shard["window"][0] == 3
    # window_tokens gives each row's context back: its token sits at its position.
    assert torch.equal(shard["window_tokens"][shard["window"] - 3, shard["position"].long()], shard["token_id"])
    store.verify()
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == len(store) and manifest["format_version"] == 1
    assert [s["file"] for s in manifest["shards"]] == [f"shard_{i:05d}.safetensors" for i in range(4)]


def test_bfloat16_store_reads_back_exactly(tmp_path):
    written, _ = _write_shards(tmp_path, dtype=torch.bfloat16, windows_per_shard=(2, 1))
    store = ActivationStore(tmp_path)
    assert store.dtype == torch.bfloat16
    assert torch.equal(store.rows("blocks.0.resid_post"), written["blocks.0.resid_post"])
    batch = next(iter(store.batches("blocks.0.resid_post", 4, dtype=torch.float32)))
    assert batch.dtype == torch.float32


def test_batches_cover_every_row_once_with_sites_aligned(store):
    store, written, _ = store
    batches = list(store.batches(list(SITES), 5, split="all", seed=3))
    assert all(len(b["blocks.0.resid_post"]) == 5 for b in batches[:-1])
    ids = [i for b in batches for i in _ids(b["blocks.0.resid_post"])]
    assert sorted(ids) == list(range(len(store)))
    for b in batches:  # rows aligned across sites: same row numbers, and the right values
        assert _ids(b["blocks.1.mlp_out"]) == _ids(b["blocks.0.resid_post"])
        assert torch.equal(b["blocks.0.resid_post"], written["blocks.0.resid_post"][_ids(b["blocks.0.resid_post"])])
    assert len(store.batches(list(SITES), 5, split="all")) == len(batches)


def test_batch_order_is_fixed_by_the_seed(store):
    store, _, _ = store

    def order(seed):
        return [i for b in store.batches("blocks.0.resid_post", 4, seed=seed, split="all") for i in _ids(b)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(order(2))
    unshuffled = [i for b in store.batches("blocks.0.resid_post", 4, shuffle=False, split="all") for i in _ids(b)]
    assert unshuffled == list(range(len(store)))


def test_train_and_holdout_split_by_window(store):
    store, _, tokens = store
    window_of = tokens["window"]
    ids = {split: [i for b in store.batches("blocks.1.mlp_out", 8, split=split, holdout=0.3) for i in _ids(b)]
           for split in ("train", "holdout")}
    assert ids["train"] and ids["holdout"]
    assert sorted(ids["train"] + ids["holdout"]) == list(range(len(store)))
    train_windows = set(window_of[ids["train"]].tolist())
    holdout_windows = set(window_of[ids["holdout"]].tolist())
    assert not train_windows & holdout_windows
    assert holdout_windows == set(torch.unique(window_of[held_out(window_of, 0.3)]).tolist())
    # The split ignores the shuffle seed.
    again = [i for b in store.batches("blocks.1.mlp_out", 8, split="holdout", holdout=0.3, seed=9) for i in _ids(b)]
    assert sorted(again) == sorted(ids["holdout"])
    with pytest.raises(StoreError, match="holdout=0"):
        store.batches("blocks.1.mlp_out", 8, split="holdout", holdout=0)


def test_holdout_fraction_is_close_to_asked():
    window = torch.arange(20_000)
    assert abs(held_out(window, 0.05).float().mean().item() - 0.05) < 0.005


def test_shuffle_buffer_holds_at_most_buffer_shards(store):
    store, _, _ = store
    biggest = max(WINDOWS_PER_SHARD) * (CONTEXT - 1)
    one = store.batches("blocks.0.resid_post", 4, split="all", buffer_shards=1)
    assert sum(len(b) for b in one) == len(store)
    assert one.peak_rows <= biggest + 4 - 1  # one shard, plus fewer than a batch carried over
    everything = store.batches("blocks.0.resid_post", 4, split="all", buffer_shards=4)
    list(everything)
    assert everything.peak_rows == len(store)
    # With one shard buffered, a batch mixes at most its shard and the few rows carried over
    # from the previous one; with all shards buffered, batches mix many shards.
    starts = torch.tensor([sum(WINDOWS_PER_SHARD[:i + 1]) * (CONTEXT - 1) for i in range(4)])

    def most_shards_in_a_batch(buffer_shards):
        return max(len(set(torch.searchsorted(starts, torch.tensor(_ids(b)), right=True).tolist()))
                   for b in store.batches("blocks.0.resid_post", 8, split="all", buffer_shards=buffer_shards))

    assert most_shards_in_a_batch(1) <= 2
    assert most_shards_in_a_batch(4) >= 3


def test_flipped_byte_is_caught_and_names_the_shard(store):
    store, _, _ = store
    path = store.path / "shard_00002.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # in the tensor data: safetensors itself would load it silently
    path.write_bytes(bytes(data))
    store.read_shard(1)
    with pytest.raises(StoreError, match="shard_00002.safetensors checksum does not match"):
        store.read_shard(2)
    with pytest.raises(StoreError, match="shard_00002.safetensors"):
        store.verify()
    with pytest.raises(StoreError, match="shard_00002.safetensors"):
        list(store.batches("blocks.0.resid_post", 4, split="all"))


def test_truncated_or_missing_shard_is_an_error(store):
    store, _, _ = store
    path = store.path / "shard_00001.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="shard_00001.safetensors checksum"):
        store.rows("blocks.0.resid_post", 25, 30)
    path.unlink()
    with pytest.raises(StoreError, match="shard_00001.safetensors is missing"):
        store.verify()


def _more_rows_here_fewer_there(m):
    m["shards"][0]["rows"] += 7
    m["shards"][1]["rows"] -= 7


def _wider(m):
    m["settings"]["widths"]["blocks.1.mlp_out"] += 1


def _half(m):
    m["settings"]["dtype"] = "float16"


MANIFEST_EDITS = {
    "a shard's row count": (lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1), "rows"),
    "rows moved between shards": (_more_rows_here_fewer_there,
                                  "'blocks.0.resid_post' is F32 \\[21, 6\\], but the manifest says F32 \\[28, 6\\]"),
    "a width": (_wider, "'blocks.1.mlp_out' is F32 \\[21, 3\\], but the manifest says F32 \\[21, 4\\]"),
    "the dtype": (_half, "says F16"),
    "a shard dropped from the list": (lambda m: m["shards"].pop(), "does not list \\(shard_00003.safetensors\\)"),
    "a shard listed twice": (lambda m: m["shards"].insert(1, m["shards"][0]), "lists 'shard_00000.safetensors' as "
                             "shard 1"),
    "a shard path outside the store": (lambda m: m["shards"][1].update(file="../shard_00001.safetensors"),
                                       "lists '../shard_00001.safetensors'"),
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS)
def test_store_verify_fails_on_each_manifest_edit(store, edit):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    store, _, _ = store
    change, message = MANIFEST_EDITS[edit]
    path = store.path / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["store", str(store.path), "--verify"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert re.search(message, result.output), result.output


def test_row_tokens_of_a_torn_shard_are_a_store_error(store):
    store, _, _ = store
    path = store.path / "shard_00001.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match="shard_00001.safetensors in .* is not a readable safetensors file"):
        store.tokens()
    path.unlink()
    with pytest.raises(StoreError, match="shard_00001.safetensors is missing"):
        store.tokens()


def test_incomplete_store_is_refused(tmp_path):
    _write_shards(tmp_path, finish=False)
    with pytest.raises(StoreError, match="harvest did not finish; rerun the same harvest command"):
        ActivationStore(tmp_path)


def test_missing_store_and_bad_arguments(store, tmp_path):
    store, _, _ = store
    with pytest.raises(StoreError, match="no activation store"):
        ActivationStore(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="has no site 'blocks.9.mlp_out'"):
        store.batches("blocks.9.mlp_out", 4)
    with pytest.raises(StoreError, match="batch_size"):
        store.batches("blocks.0.resid_post", 0)
    with pytest.raises(StoreError, match="split 'test'"):
        store.batches("blocks.0.resid_post", 4, split="test")
    with pytest.raises(StoreError, match="out of range"):
        store.rows("blocks.0.resid_post", 0, len(store) + 1)
    with pytest.raises(StoreError, match="out of range"):
        store.read_shard(4)
    assert issubclass(StoreError, MonosemanticError) and issubclass(StoreError, ValueError)


def test_shard_writer_refuses_misaligned_rows_and_leaves_nothing(tmp_path):
    fields = row_fields(torch.zeros(2, CONTEXT, dtype=torch.long), torch.ones(2, CONTEXT, dtype=torch.bool), 0)
    with pytest.raises(StoreError, match="has 3 rows, expected 16"):
        write_shard(tmp_path, 0, {"blocks.0.resid_post": torch.zeros(3, 4), **fields}, 0, 2)
    assert list(tmp_path.iterdir()) == []


def test_manifest_round_trip_and_differences(tmp_path):
    settings = _settings(100)
    write_manifest(tmp_path, Manifest(settings=settings))
    back = read_manifest(tmp_path)
    assert back is not None
    assert back.settings == settings and not back.complete and back.rows == 0
    assert back.settings.dtype == "float32"
    other = StoreSettings(**{**settings.__dict__, "context_length": 64, "model": {"name": "other"}})
    message = describe_differences(settings, other)
    assert "context_length=8, not 64" in message and "model.name=synthetic, not other" in message
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        read_manifest(tmp_path)
