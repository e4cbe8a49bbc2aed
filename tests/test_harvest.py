"""Harvesting on tiny random models: rows equal plain transformers, and survive SIGKILL and torchrun."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from monosemantic.activations import ActivationStore, harvest, read_manifest
from monosemantic.activations.plan import ShardPlan
from monosemantic.activations.writer import ShardJob, ShardWriter
from monosemantic.data import storable_mask, text_source, token_windows
from monosemantic.errors import StoreError
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SITES = ["blocks.1.resid_post", "blocks.2.mlp_out"]
# Module whose output each site is, per family, in plain transformers terms.
MODULES = {
    "llama": {"blocks.1.resid_post": "model.layers.1", "blocks.2.mlp_out": "model.layers.2.mlp"},
    "gpt2": {"blocks.1.resid_post": "transformer.h.1", "blocks.2.mlp_out": "transformer.h.2.mlp"},
    "gpt_neox": {"blocks.1.resid_post": "gpt_neox.layers.1", "blocks.2.mlp_out": "gpt_neox.layers.2.mlp"},
}
SMALL: dict[str, Any] = dict(n_tokens=200, context_length=32, batch_size=3, shard_rows=64, progress=False)
# Many small shards, so a process can be killed between two of them.
MANY_SHARDS: dict[str, Any] = dict(corpus="stdlib", n_tokens=24_000, context_length=64, batch_size=4, shard_rows=128,
                                   progress=False)

_CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[4]))
from monosemantic.activations import harvest
from monosemantic.models import load_model
harvest(load_model(sys.argv[1]), json.loads(sys.argv[3]), sys.argv[2], **json.loads(sys.argv[5]))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few KB of made-up prose as a .jsonl corpus (about 1,500 tokens)."""
    rng = random.Random(0)
    words = ["the", "model", "reads", "every", "token", "and", "writes", "a", "residual", "stream", "that", "later",
             "layers", "refine", "into", "features", "such", "as", "syntax", "numbers", "names", "places", "code",
             "comments", "and", "plain", "English", "prose"]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 60))).capitalize() + "." for _ in range(60)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(path)


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dir):
    return str(tiny_model_dir("llama"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, llama_dir):
    """An uninterrupted single-process harvest with MANY_SHARDS settings."""
    return harvest(load_model(llama_dir), SITES, tmp_path_factory.mktemp("reference"), **MANY_SHARDS)


def _plain_forward(model_dir: str, modules: dict[str, str], windows_WS: torch.Tensor) -> dict[str, torch.Tensor]:
    """Site activations from transformers alone, via forward hooks on the modules."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    acts = {}
    for site, path in modules.items():
        def hook(_module, _args, out, site=site):
            acts[site] = out[0] if isinstance(out, tuple) else out

        model.get_submodule(path).register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids=windows_WS.long())
    return acts


def _assert_same_store(a: ActivationStore, b: ActivationStore) -> None:
    assert len(a) == len(b) and a.num_shards == b.num_shards
    for site in SITES:
        assert torch.equal(a.rows(site), b.rows(site)), site
    for x, y in zip(a.tokens(), b.tokens()):
        assert torch.equal(x, y)
    for i in range(a.num_shards):
        assert torch.equal(a.read_shard(i)["window_tokens"], b.read_shard(i)["window_tokens"])
    # Bit-exact rows and equal metadata make the shard files byte-identical.
    assert [s.sha256 for s in a.manifest.shards] == [s.sha256 for s in b.manifest.shards]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_rows_equal_a_plain_transformers_forward(family, tiny_model_dir, corpus, tmp_path):
    model_dir = str(tiny_model_dir(family))
    lm = load_model(model_dir)
    store = harvest(lm, SITES, tmp_path / "store", corpus=corpus, **SMALL)
    assert len(store) == 200 and store.sites == SITES and store.num_shards > 3
    windows_WS = torch.cat([store.read_shard(i)["window_tokens"] for i in range(store.num_shards)])
    token_id, position, window = store.tokens()
    expected = _plain_forward(model_dir, MODULES[family], windows_WS)
    for site in SITES:
        rows_ND = store.rows(site)
        assert rows_ND.shape == (200, lm.width(site))
        torch.testing.assert_close(rows_ND, expected[site][window, position.long()], rtol=0, atol=1e-5)
    # The windows and rows are the plan: the corpus's first windows, its storable positions in
    # order, cut at exactly n_tokens.
    first: list[torch.Tensor] = [w for w, _ in zip(token_windows(text_source(corpus), lm.tokenizer, 32),
                                                   range(len(windows_WS)))]
    assert torch.equal(windows_WS.long(), torch.stack(first))
    assert isinstance(lm.tokenizer, PreTrainedTokenizerBase)
    mask_WS = storable_mask(windows_WS, lm.tokenizer.all_special_ids)
    planned_window, planned_position = mask_WS.nonzero(as_tuple=True)
    assert torch.equal(window, planned_window[:200]) and torch.equal(position.long(), planned_position[:200])
    assert torch.equal(token_id, windows_WS[window, position.long()])
    assert mask_WS[:-1].sum() < 200 <= mask_WS.sum()  # no window beyond the one that reaches n_tokens


def test_bfloat16_storage_rounds_the_float32_rows(llama_dir, corpus, tmp_path):
    lm = load_model(llama_dir)
    full = harvest(lm, SITES, tmp_path / "f32", corpus=corpus, **SMALL)
    half = harvest(lm, SITES, tmp_path / "bf16", corpus=corpus, dtype="bfloat16", **SMALL)
    assert half.dtype == torch.bfloat16 and half.manifest.settings.dtype == "bfloat16"
    assert torch.equal(half.rows(SITES[0]), full.rows(SITES[0]).to(torch.bfloat16))


def test_rerun_of_a_complete_store_does_no_work(llama_dir, corpus, tmp_path):
    lm = load_model(llama_dir)
    harvest(lm, SITES, tmp_path, corpus=corpus, **SMALL)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = harvest(lm, SITES, tmp_path, corpus=corpus, **SMALL)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    again.verify()


def test_rerun_on_a_damaged_complete_store_reports_it(llama_dir, corpus, tmp_path):
    lm = load_model(llama_dir)
    harvest(lm, SITES, tmp_path / "s", corpus=corpus, **SMALL)
    shard = tmp_path / "s" / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard_00001.safetensors checksum does not match"):
        harvest(lm, SITES, tmp_path / "s", corpus=corpus, **SMALL)


def test_sigkill_then_rerun_gives_the_uninterrupted_rows(llama_dir, reference, tmp_path):
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, llama_dir, str(out), json.dumps(SITES),
                              "1", json.dumps(MANY_SHARDS)])
    try:
        deadline = time.monotonic() + 120
        while not (out / "shard_00002.json").exists():
            assert child.poll() is None, "the harvest process ended before writing any shard"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    manifest = read_manifest(out)
    assert manifest is not None
    assert not manifest.complete, "the harvest finished before it could be killed"
    sidecars = sorted(out.glob("shard_*.json"))
    assert 3 <= len(sidecars) < reference.num_shards
    # Also what a kill between writing a shard and its sidecar leaves, and a torn temporary file.
    sidecars[-1].unlink()
    (out / "shard_00001.safetensors.tmp").write_bytes(b"torn")
    with pytest.raises(StoreError, match="harvest did not finish"):
        ActivationStore(out)
    resumed = harvest(load_model(llama_dir), SITES, out, **MANY_SHARDS)
    assert not list(out.glob("*.tmp"))
    _assert_same_store(resumed, reference)
    resumed.verify()


def test_torchrun_two_processes_give_the_single_process_rows(llama_dir, reference, tmp_path):
    script = tmp_path / "harvest_child.py"
    script.write_text(_CHILD)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script),
         llama_dir, str(out), json.dumps(SITES), "1", json.dumps(MANY_SHARDS)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_store(ActivationStore(out), reference)


def test_other_settings_on_an_existing_store_are_refused(llama_dir, corpus, tmp_path):
    lm = load_model(llama_dir)
    store = harvest(lm, SITES, tmp_path, corpus=corpus, **SMALL)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(StoreError, match=r"made with context_length=32, not 16;.* use another --out or the same"):
        harvest(lm, SITES, tmp_path, corpus=corpus, **{**SMALL, "context_length": 16})
    with pytest.raises(StoreError, match=r"batch_size=3, not 4"):
        harvest(lm, SITES, tmp_path, corpus=corpus, **{**SMALL, "batch_size": 4})
    with pytest.raises(StoreError, match=r"sites="):
        harvest(lm, SITES[:1], tmp_path, corpus=corpus, **SMALL)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    store.verify()


def test_a_folder_of_other_files_is_refused(llama_dir, corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and holds no activation store"):
        harvest(load_model(llama_dir), SITES, tmp_path, corpus=corpus, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_bad_input_is_refused_before_anything_is_written(llama_dir, corpus, tmp_path):
    lm = load_model(llama_dir)
    out = tmp_path / "out"
    with pytest.raises(StoreError, match=r"yields only \d+ storable tokens at context_length=32"):
        harvest(lm, SITES, out, corpus=corpus, **{**SMALL, "n_tokens": 100_000})
    with pytest.raises(StoreError, match="context_length 512 is longer than .* allows \\(256 positions\\)"):
        harvest(lm, SITES, out, corpus=corpus, **{**SMALL, "context_length": 512})
    with pytest.raises(StoreError, match="n_tokens=0"):
        harvest(lm, SITES, out, corpus=corpus, **{**SMALL, "n_tokens": 0})
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(StoreError, match="is empty"):
        harvest(lm, SITES, out, corpus=str(empty), **SMALL)
    with pytest.raises(StoreError, match="storage dtype"):
        harvest(lm, SITES, out, corpus=corpus, dtype="int8", **SMALL)
    assert not out.exists()


def test_a_failed_shard_write_surfaces_in_the_harvesting_thread(tmp_path):
    writer = ShardWriter(tmp_path / "missing-folder")
    plan = ShardPlan(index=0, window_start=0, windows_WS=torch.full((1, 4), 7, dtype=torch.int32), rows=3)
    writer.submit(ShardJob(plan, plan.mask([], skip_first=True), lambda: {"blocks.0.resid_post": torch.zeros(3, 2)}))
    with pytest.raises(FileNotFoundError):
        writer.close()


@pytest.mark.slow
def test_smollm2_rows_equal_a_plain_transformers_forward(smollm2, smol_tokenizer_dir, tmp_path):
    """The real embedded model, default corpus: layer-6 residual and layer-3 MLP output rows."""
    modules = {"blocks.6.resid_post": "model.layers.6", "blocks.3.mlp_out": "model.layers.3.mlp"}
    store = harvest(smollm2, list(modules), tmp_path / "store", corpus="stdlib", n_tokens=1500,
                    context_length=128, batch_size=4, progress=False)
    windows_WS = torch.cat([store.read_shard(i)["window_tokens"] for i in range(store.num_shards)])
    _, position, window = store.tokens()
    expected = _plain_forward(str(smol_tokenizer_dir), modules, windows_WS)
    for site in modules:
        torch.testing.assert_close(store.rows(site), expected[site][window, position.long()], rtol=1e-4, atol=1e-4)
    # Position 0 is never stored, and no row is a special token.
    assert int(position.min()) == 1
    assert not torch.isin(store.tokens()[0], torch.tensor(smollm2.tokenizer.all_special_ids)).any()
