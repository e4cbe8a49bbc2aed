"""The training package, end to end with real dictionaries, sources, stores and a tiny model.

Ground truth comes from synthetic data: sparse non-negative combinations of known unit
directions, which a working trainer must recover. Resume is tested by killing a training
process with SIGKILL and comparing the resumed run to an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from monosemantic.dictionaries import JumpReLUDictionary, load_dictionary_native, make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.processes import SingleProcess
from monosemantic.training import (
    LiveSource,
    StoreSource,
    TensorSource,
    TrainConfig,
    Trainer,
    build_dictionaries,
    read_metrics,
    sweep,
    sweep_from_store,
    sweep_specs,
    train_from_store,
)
from monosemantic.training.layout import Batch, Layout, check_batch
from monosemantic.training.resample import resample_dead_
from monosemantic.training.schedules import lr_factor, sparsity_scale

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def sparse_data(n: int, d: int, m: int, active: int = 3, seed: int = 100, d_out: int | None = None):
    """Rows = sparse non-negative combinations (magnitudes U(0.5, 1.5)) of m random unit directions.

    With ``d_out`` also returns targets made of the same codes over other directions (a transcoder's task).
    Keep ``seed`` apart from the seeds dictionaries are built with: the directions are drawn with
    randn like a fresh decoder, so equal seeds would start the decoder on the answer.
    """
    g = torch.Generator().manual_seed(seed)
    dirs_MD = torch.randn(m, d, generator=g)
    dirs_MD /= dirs_MD.norm(dim=1, keepdim=True)
    picked_NA = torch.rand(n, m, generator=g).argsort(dim=1)[:, :active]
    codes_NM = torch.zeros(n, m).scatter_(1, picked_NA, torch.rand(n, active, generator=g) + 0.5)
    if d_out is None:
        return codes_NM @ dirs_MD, dirs_MD
    out_MD = torch.randn(m, d_out, generator=g)
    out_MD /= out_MD.norm(dim=1, keepdim=True)
    return codes_NM @ dirs_MD, codes_NM @ out_MD


def mmcs(dictionary, dirs_MD) -> float:
    """Mean over true directions of the best cosine similarity with a decoder row."""
    W_FD = dictionary.W_dec.detach()
    W_FD = W_FD / W_FD.norm(dim=1, keepdim=True)
    return float((dirs_MD @ W_FD.T).max(dim=1).values.mean())


def config(**overrides) -> TrainConfig:
    base = dict(total_tokens=40 * 64, batch_size=64, lr=3e-3, log_every=10, checkpoint_every=None)
    return TrainConfig(**{**base, **overrides})


# ----- learning -------------------------------------------------------------------------------


def test_topk_and_relu_recover_ground_truth_directions_in_one_pass():
    x_ND, dirs_MD = sparse_data(16384, 32, 256)
    torch.manual_seed(0)
    dictionaries = {"topk": make_dictionary("topk", 32, 512, k=3),
                    "relu": make_dictionary("relu", 32, 512, l1_coeff=0.5, weight_l1_by_decoder_norm=True)}
    # Raw scale: the relu's l1_coeff is tuned for these small rows (E||x||^2 ~ 3).
    cfg = TrainConfig(total_tokens=2000 * 256, batch_size=256, log_every=500, normalize_activations=False)
    result = Trainer(dictionaries, cfg, lrs={"topk": 4e-3, "relu": 2e-2}).fit(TensorSource(x_ND), progress=False)
    assert result.steps == 2000 and result.tokens == 512_000
    assert mmcs(result.dictionaries["topk"], dirs_MD) >= 0.95
    assert mmcs(result.dictionaries["relu"], dirs_MD) >= 0.95
    assert result.metrics["topk"]["l0"] == pytest.approx(3.0)
    assert result.metrics["relu"]["l0"] < 25  # sparse, not merely reconstructing


def test_transcoder_learns_a_map_between_sites_and_saves_it_for_raw_activations(tmp_path):
    x_ND, target_NE = sparse_data(8192, 16, 32, d_out=12)
    x_ND, target_NE = x_ND * 40.0, target_NE * 0.25  # different sizes: separate input and output scales
    torch.manual_seed(0)
    transcoder = make_dictionary("topk", 16, 128, d_out=12, k=3)
    cfg = TrainConfig(total_tokens=600 * 256, batch_size=256, lr=1e-2, log_every=50, checkpoint_every=None)
    trainer = Trainer({"tc": transcoder}, cfg, tmp_path)
    result = trainer.fit(TensorSource(x_ND, target_NE), progress=False)
    # The best linear map leaves about half of the variance (0.49): the sparse code does far better.
    assert result.metrics["tc"]["fvu"] < 0.25
    saved = load_dictionary_native(tmp_path / "tc")
    run = json.loads((tmp_path / "training.json").read_text())
    s_in, s_out = run["scale_in"], run["scale_out"]
    assert s_in == pytest.approx(math.sqrt(16) / float(x_ND.norm(dim=1)[:8192].mean()), rel=0.05)
    assert s_in < 1 < s_out
    with torch.no_grad():
        raw = saved(x_ND[:500])
        trained = trainer.dictionaries["tc"].eval()(x_ND[:500] * s_in)
    torch.testing.assert_close(raw.recon, trained.recon / s_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(raw.codes, trained.codes / s_out, rtol=1e-4, atol=1e-5)
    fvu_raw = float((raw.recon - target_NE[:500]).pow(2).sum(1).mean() / target_NE[:500].var(0).sum())
    assert fvu_raw < 0.25


def test_normalisation_is_folded_into_saved_autoencoders(tmp_path):
    x_ND, _ = sparse_data(2048, 16, 64)
    x_ND = x_ND * 200.0 + 3.0
    torch.manual_seed(0)
    trainer = Trainer({"sae": make_dictionary("relu", 16, 64)}, config(), tmp_path)
    result = trainer.fit(TensorSource(x_ND), progress=False)
    scale = json.loads((tmp_path / "training.json").read_text())["scale_in"]
    for saved in (load_dictionary_native(tmp_path / "sae"), result.dictionaries["sae"]):
        with torch.no_grad():
            raw, trained = saved(x_ND[:256]), trainer.dictionaries["sae"].eval()(x_ND[:256] * scale)
        torch.testing.assert_close(raw.recon, trained.recon / scale, rtol=1e-4, atol=1e-3)


def test_crosscoder_trains_on_stacked_sources_with_one_scale_per_source(tmp_path):
    x_ND, _ = sparse_data(2048, 16, 48)
    y_ND, _ = sparse_data(2048, 16, 48, seed=101)
    x_NSD = torch.stack([x_ND * 10.0, (x_ND + y_ND) * 0.1], dim=1)  # sources of very different sizes
    torch.manual_seed(0)
    trainer = Trainer({"cc": make_dictionary("crosscoder", 16, 96, n_sources=2, activation="topk", k=4)},
                      config(total_tokens=100 * 128, batch_size=128), tmp_path)
    result = trainer.fit(TensorSource(x_NSD), progress=False)
    scales = json.loads((tmp_path / "training.json").read_text())["scale_in"]
    assert len(scales) == 2 and scales[0] * 100 == pytest.approx(scales[1], rel=0.5)
    assert result.metrics["cc"]["fvu"] < 0.8
    saved = load_dictionary_native(tmp_path / "cc")
    with torch.no_grad():
        raw = saved(x_NSD[:256]).recon
        trained = trainer.dictionaries["cc"].eval()(x_NSD[:256] * torch.tensor(scales)[:, None]).recon
    torch.testing.assert_close(raw, trained / torch.tensor(scales)[:, None], rtol=1e-4, atol=1e-4)
    with pytest.raises(MonosemanticError, match="resampling .* handles single-site dictionaries only"):
        Trainer(make_dictionary("crosscoder", 16, 96, n_sources=2), config(resample_every=10)).fit(
            TensorSource(x_NSD))


# ----- resume ---------------------------------------------------------------------------------

RESUME_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_training import resume_setup
    dictionaries, cfg, source = resume_setup()

    class Slow:  # slows the killed run down so that it is surely killed mid-way
        layout = source.layout
        def batches(self, *args, **kwargs):
            for batch in source.batches(*args, **kwargs):
                time.sleep(0.02)
                yield batch

    from monosemantic.training import Trainer
    Trainer(dictionaries, cfg, sys.argv[1]).fit(Slow(), progress=False)
""")


def resume_setup():
    """Dictionaries of three kinds (top-k with AuxK, relu, batchtopk with its threshold) and resampling."""
    x_ND, _ = sparse_data(4096, 16, 48)
    specs = sweep_specs("topk", expansions=[4], sparsities=[4])
    specs.update(sweep_specs("relu", expansions=[4], sparsities=[0.5]))
    specs.update(sweep_specs("batchtopk", expansions=[2], sparsities=[3]))
    dictionaries = build_dictionaries(specs, 16, seed=3)
    with torch.no_grad():
        dictionaries["relu_l1_0.5_x4"].b_enc[:10] = -100.0  # dead from the start: resampling has work
    cfg = TrainConfig(total_tokens=300 * 128, batch_size=128, lr=3e-3, log_every=7, checkpoint_every=20,
                      resample_every=50, seed=5)
    return dictionaries, cfg, TensorSource(x_ND)


def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(out), str(Path(__file__).parent)],
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint" / "state.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(0.3)  # past the checkpoint, before the end
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "training.json").exists(), "the run finished before it was killed"
    killed_at = json.loads((out / "checkpoint" / "run.json").read_text())["step"]
    assert 20 <= killed_at < 300

    resumed = Trainer(*resume_setup()[:2], out).fit(resume_setup()[2], progress=False)
    straight = Trainer(*resume_setup()[:2], tmp_path / "straight").fit(resume_setup()[2], progress=False)
    assert resumed.steps == straight.steps == 300
    for name, dictionary in straight.dictionaries.items():
        for key, tensor in dictionary.state_dict().items():
            assert torch.equal(resumed.dictionaries[name].state_dict()[key], tensor), (name, key)
    steps = [r["step"] for r in read_metrics(out) if r["name"] == "topk_k4_x4"]
    assert steps == list(range(7, 300, 7)) + [300]  # what the killed run logged past its checkpoint is replaced
    assert read_metrics(out) == read_metrics(tmp_path / "straight")


def test_resuming_with_other_settings_is_refused(tmp_path):
    x_ND, _ = sparse_data(1024, 8, 16)
    torch.manual_seed(0)
    Trainer({"a": make_dictionary("relu", 8, 16)}, config(checkpoint_every=10), tmp_path).fit(TensorSource(x_ND),
                                                                                             progress=False)
    with pytest.raises(MonosemanticError, match=r"lr=0\.003 vs 0\.001"):
        Trainer({"a": make_dictionary("relu", 8, 16)}, config(lr=1e-3), tmp_path).fit(TensorSource(x_ND))
    with pytest.raises(MonosemanticError, match=r"d_sae=16 vs 32"):
        Trainer({"a": make_dictionary("relu", 8, 32)}, config(), tmp_path).fit(TensorSource(x_ND))
    with pytest.raises(MonosemanticError, match=r"trains dictionaries \['a'\]"):
        Trainer({"b": make_dictionary("relu", 8, 16)}, config(), tmp_path).fit(TensorSource(x_ND))
    # Logging and checkpoint frequency change nothing, so they may differ; the run is complete already.
    done = Trainer({"a": make_dictionary("relu", 8, 16)}, config(log_every=3), tmp_path).fit(TensorSource(x_ND))
    assert done.steps == 40


# ----- sweeps ---------------------------------------------------------------------------------


def test_a_sweep_trains_each_dictionary_as_if_alone(tmp_path):
    x_ND, _ = sparse_data(2048, 16, 48)
    source, cfg = TensorSource(x_ND), config(seed=1)
    swept = sweep("topk", source, cfg, tmp_path, expansions=[1, 2, 4], sparsities=[2, 4, 8], progress=False)
    names = sorted(swept.dictionaries)
    assert names == sorted(f"topk_k{k}_x{e}" for k in (2, 4, 8) for e in (1, 2, 4))
    assert all((tmp_path / name / "weights.safetensors").is_file() for name in names)
    assert {r["name"] for r in read_metrics(tmp_path)} == set(names)
    assert swept.dictionaries["topk_k8_x4"].d_sae == 64
    for k, expansion in ((2, 1), (4, 2), (8, 4)):
        name = f"topk_k{k}_x{expansion}"
        spec = sweep_specs("topk", expansions=[expansion], sparsities=[k])
        alone = Trainer(build_dictionaries(spec, 16, seed=1), cfg).fit(source, progress=False)
        for key, tensor in alone.dictionaries[name].state_dict().items():
            torch.testing.assert_close(swept.dictionaries[name].state_dict()[key], tensor)


# ----- metrics and failures -------------------------------------------------------------------


def test_metrics_agree_with_a_recomputation_on_the_final_weights(tmp_path):
    x_ND, _ = sparse_data(1024, 16, 48)
    torch.manual_seed(0)
    relu = make_dictionary("relu", 16, 64, l1_coeff=0.3, weight_l1_by_decoder_norm=True)
    with torch.no_grad():
        relu.b_enc[:12] = -100.0  # these never fire (and get no gradient to come back)
    # The dead window is one epoch (8 batches), so "dead" means "fired on no row of the last epoch".
    cfg = config(total_tokens=200 * 128, batch_size=128, log_every=20, dead_after_tokens=1024,
                 normalize_activations=False)
    result = Trainer({"relu": relu}, cfg, tmp_path).fit(TensorSource(x_ND), progress=False)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(20, 201, 20))
    assert set(records[0]) == {"step", "tokens", "name", "loss", "mse", "sparsity", "aux", "fvu", "l0",
                               "dead_fraction", "lr", "sparsity_scale"}
    for r in records:
        assert r["loss"] == pytest.approx(r["mse"] + r["sparsity"], rel=1e-5)
        assert 0 < r["fvu"] < 1.5 and 0 < r["l0"] < 64 and 12 / 64 <= r["dead_fraction"] <= 1
    assert records[0]["fvu"] > records[-1]["fvu"]
    last = records[-1]
    final = result.dictionaries["relu"]
    with torch.no_grad():
        recon_ND, codes_NF, _ = final(x_ND)
    fvu = float((recon_ND - x_ND).pow(2).sum(1).mean() / (x_ND - x_ND.mean(0)).pow(2).sum(1).mean())
    assert last["fvu"] == pytest.approx(fvu, rel=0.1)
    assert last["l0"] == pytest.approx(float((codes_NF > 0).sum(1).float().mean()), rel=0.1)
    never_fired = float((~(codes_NF > 0).any(0)).float().mean())
    assert abs(last["dead_fraction"] - never_fired) <= 2 / 64


def test_nan_in_the_data_stops_training_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    x_ND, _ = sparse_data(16384, 8, 16)
    x_ND[:, 0] = torch.arange(16384.0)  # tag rows to find where one lands
    source = TensorSource(x_ND)
    batch_12 = next(source.batches(1024, seed=0, start_step=12)).x
    bad_row = int(batch_12[100, 0])
    x_ND[bad_row, 3] = float("nan")
    torch.manual_seed(0)
    trainer = Trainer({"sae": make_dictionary("topk", 8, 16, k=2)},
                      config(total_tokens=30 * 1024, batch_size=1024, checkpoint_every=5, normalize_activations=False),
                      tmp_path)
    with pytest.raises(MonosemanticError, match=r"at step 12 \(first at training row 12388,") as err:
        trainer.fit(source, progress=False)
    assert "\n" not in str(err.value)
    assert json.loads((tmp_path / "checkpoint" / "run.json").read_text())["step"] == 10
    kept = load_dictionary_native(tmp_path / "checkpoint" / "sae")
    assert all(bool(torch.isfinite(t).all()) for t in kept.state_dict().values() if t.is_floating_point())
    assert not (tmp_path / "sae").exists()


def test_batch_check_finds_every_non_finite_value_and_passes_huge_finite_ones():
    layout = Layout((4,), None, "tensor rows")
    huge = torch.full((8, 4), 3e38)  # finite, but their sum overflows to inf
    check_batch(Batch(huge, None), layout, 0, 8)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(8, 4)
        x[5, 2] = bad
        with pytest.raises(MonosemanticError,
                           match=r"input rows hold NaN or inf at step 3 \(first at training row 29,"):
            check_batch(Batch(x, None), layout, 3, 8)
        # Either part: a bad target is found as well.
        with pytest.raises(MonosemanticError,
                           match=r"target rows hold NaN or inf at step 3 \(first at training row 29,"):
            check_batch(Batch(torch.zeros(8, 4), x), Layout((4,), 4, "tensor rows"), 3, 8)
    # inf and -inf together sum to NaN, and inf with finite values to inf: both still caught.
    x = torch.ones(8, 4)
    x[1, 0], x[6, 3] = float("inf"), -float("inf")
    with pytest.raises(MonosemanticError, match=r"first at training row 1,"):
        check_batch(Batch(x, None), layout, 0, 8)


def test_shape_mismatches_are_reported_before_training(tmp_path):
    x_ND, _ = sparse_data(512, 12, 16)
    with pytest.raises(MonosemanticError, match=r"tensor rows have width 12 but dictionary 'dictionary' expects "
                                                r"d_in=16"):
        Trainer(make_dictionary("relu", 16, 32), config()).fit(TensorSource(x_ND))
    with pytest.raises(MonosemanticError, match=r"transcoder but tensor gives no target rows"):
        Trainer(make_dictionary("relu", 12, 32, d_out=5), config()).fit(TensorSource(x_ND))
    with pytest.raises(MonosemanticError,
                       match=r"target rows have width 4 but dictionary 'dictionary' expects d_out=5"):
        Trainer(make_dictionary("relu", 12, 32, d_out=5), config()).fit(TensorSource(x_ND, x_ND[:, :4]))
    with pytest.raises(MonosemanticError, match="fewer than one batch"):
        Trainer(make_dictionary("relu", 12, 32), config(batch_size=1024, total_tokens=2048)).fit(TensorSource(x_ND))
    with pytest.raises(MonosemanticError, match="cannot name a folder"):
        Trainer({"../x": make_dictionary("relu", 12, 32)}, config())
    with pytest.raises(MonosemanticError, match="lrs names"):
        Trainer({"a": make_dictionary("relu", 12, 32)}, config(), lrs={"b": 1e-3})


def test_wandb_is_optional_and_asked_for_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    x_ND, _ = sparse_data(256, 8, 16)
    with pytest.raises(MonosemanticError, match="wandb_project='runs' was given but wandb is not installed"):
        Trainer(make_dictionary("relu", 8, 16), config(wandb_project="runs")).fit(TensorSource(x_ND))


# ----- sources --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_store(tiny_model_dir, tmp_path_factory):
    from monosemantic.activations import harvest
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    store = harvest(lm, ["blocks.1.resid_post", "blocks.2.mlp_out"], tmp_path_factory.mktemp("store"),
                    n_tokens=3000, context_length=32, shard_rows=512, progress=False)
    return lm, store


def _same_batches(source, start: int, count: int = 6, batch_size: int = 64) -> None:
    whole = [b for _, b in zip(range(start + count), source.batches(batch_size, seed=4))][start:]
    later = [b for _, b in zip(range(count), source.batches(batch_size, seed=4, start_step=start))]
    for a, b in zip(whole, later, strict=True):
        assert torch.equal(a.x, b.x)
        if a.target is None or b.target is None:
            assert a.target is None and b.target is None
        else:
            assert torch.equal(a.target, b.target)


def test_sources_start_at_any_step_with_the_same_batches(tiny_store):
    lm, store = tiny_store
    x_ND, _ = sparse_data(300, 8, 16)
    _same_batches(TensorSource(x_ND), 7)  # crosses an epoch boundary (4 batches an epoch)
    store_source = StoreSource(store, "blocks.1.resid_post", "blocks.2.mlp_out")
    assert store_source.layout.input_shape == (64,) and store_source.layout.target_width == 64
    per_epoch = len(store.batches(store_source.sites, 64, drop_last=True))
    _same_batches(store_source, per_epoch - 2)  # across an epoch boundary
    crosscoder_rows = StoreSource(store, sites=["blocks.1.resid_post", "blocks.2.mlp_out"])
    assert next(crosscoder_rows.batches(64, seed=0)).x.shape == (64, 2, 64)
    live = LiveSource(lm, "blocks.1.resid_post", corpus="stdlib", context_length=32, buffer_batches=2)
    _same_batches(live, 3, count=3)
    first = next(live.batches(64, seed=4)).x
    assert first.shape == (64, 64) and not torch.equal(first, next(live.batches(64, seed=5)).x)


def test_store_partitions_make_global_batches_from_each_ranks_own_shards(tiny_store):
    _, store = tiny_store
    source = StoreSource(store, "blocks.1.resid_post", "blocks.2.mlp_out", partitions=2)
    _same_batches(source, 5)
    whole = [b for _, b in zip(range(4), source.batches(64, seed=4))]
    ranks = [[b for _, b in zip(range(4), source.local_batches(64, seed=4, rank=r, world=2))] for r in (0, 1)]
    for step, batch in enumerate(whole):
        assert torch.equal(batch.x, torch.cat([ranks[0][step].x, ranks[1][step].x]))
        target, target0, target1 = batch.target, ranks[0][step].target, ranks[1][step].target
        assert target is not None and target0 is not None and target1 is not None
        assert torch.equal(target, torch.cat([target0, target1]))
    # Rank 0's rows come only from even shards: every one of them is a row of an even shard.
    even = torch.cat([store.read_shard(i)["blocks.1.resid_post"] for i in range(0, store.num_shards, 2)])
    rows = torch.cat([b.x for b in ranks[0]])
    assert bool((rows[:, None, :] == even[None]).all(-1).any(1).all())
    with pytest.raises(MonosemanticError, match="do not divide among 2"):
        next(StoreSource(store, "blocks.1.resid_post", partitions=3).local_batches(64, seed=0, rank=0, world=2))
    with pytest.raises(MonosemanticError, match="fewer than the 64 partitions"):
        next(StoreSource(store, "blocks.1.resid_post", partitions=64).batches(64, seed=0))
    with pytest.raises(MonosemanticError, match="partitions=0"):
        StoreSource(store, "blocks.1.resid_post", partitions=0)


def test_training_from_a_store_sae_and_transcoder(tiny_store, tmp_path):
    _, store = tiny_store
    cfg = config(total_tokens=30 * 64, batch_size=64, checkpoint_every=10)
    sae = train_from_store(store.path, tmp_path / "sae", arch="topk", config=cfg, site_in="blocks.1.resid_post",
                           expansion=2, options={"k": 8}, progress=False)
    assert list(sae.dictionaries) == ["topk_k8_x2"]
    saved = load_dictionary_native(tmp_path / "sae" / "topk_k8_x2")
    assert saved.config.site_in == "blocks.1.resid_post" and saved.config.model is not None
    assert saved.d_sae == 128 and sae.metrics["topk_k8_x2"]["fvu"] < 1
    tc = train_from_store(store, tmp_path / "tc", arch="relu", config=cfg, site_in="blocks.1.resid_post",
                          site_out="blocks.2.mlp_out", expansion=1, progress=False)
    saved = load_dictionary_native(tmp_path / "tc" / "relu_x1")
    assert saved.config.is_transcoder and saved.config.site_out == "blocks.2.mlp_out"
    with pytest.raises(MonosemanticError, match=r"store site 'blocks.1.resid_post' rows have width 64 but dictionary "
                                                r"'dictionary' expects d_in=32"):
        Trainer(make_dictionary("relu", 32, 64), cfg).fit(StoreSource(store, "blocks.1.resid_post"))
    assert tc.steps == 30
    sites = ["blocks.1.resid_post", "blocks.2.mlp_out"]
    cc = sweep_from_store(store, tmp_path / "cc", arch="crosscoder", config=cfg, sites=sites, expansions=[1],
                          sparsities=[4, 8], options={"activation": "topk"}, progress=False)
    assert sorted(cc.dictionaries) == ["crosscoder_k4_x1", "crosscoder_k8_x1"]
    assert load_dictionary_native(tmp_path / "cc" / "crosscoder_k8_x1").options["sites"] == sites


def test_live_training_without_a_store(tiny_store, tmp_path):
    lm, _ = tiny_store
    torch.manual_seed(0)
    source = LiveSource(lm, "blocks.1.resid_post", corpus="stdlib", context_length=32, buffer_batches=2)
    result = Trainer(make_dictionary("topk", 64, 128, k=8), config(total_tokens=12 * 64), tmp_path).fit(
        source, progress=False)
    assert result.steps == 12 and math.isfinite(result.metrics["dictionary"]["fvu"])


# ----- pieces ---------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_bad_values():
    betas: Any = [0.9, 0.99]  # a list, as JSON gives it (Any: the field is typed as the tuple it becomes)
    cfg = TrainConfig(total_tokens=10_000, batch_size=100, resample_every=50, betas=betas)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.total_steps == 100 and cfg.warmup_steps == 5 and cfg.sparsity_warmup == 5
    assert TrainConfig(total_tokens=10**10).warmup_steps == 1000
    for bad, match in [(dict(lr=0), "lr=0"), (dict(b_dec_init="median"), "b_dec_init"),
                       (dict(total_tokens=10), "less than one batch"), (dict(betas=(0.9,)), "betas"),
                       (dict(grad_clip=0), "grad_clip"), (dict(grad_clip=float("nan")), "grad_clip")]:
        with pytest.raises(MonosemanticError, match=match):
            TrainConfig(**{"total_tokens": 10_000, **bad})
    with pytest.raises(MonosemanticError, match="unknown field"):
        TrainConfig.from_dict({"total_tokens": 100, "learning_rate": 1})


def test_gradient_clipping_acts_only_above_its_norm():
    x, _ = sparse_data(2048, 16, 24)

    def trained(**clip) -> dict:
        torch.manual_seed(0)
        d = make_dictionary("relu", 16, 64, weight_l1_by_decoder_norm=True)
        config = TrainConfig(total_tokens=8 * 256, batch_size=256, lr=1e-2, log_every=100, checkpoint_every=None,
                             **clip)
        return Trainer({"d": d}, config).fit(TensorSource(x), progress=False).dictionaries["d"].state_dict()

    plain, loose, tight = trained(grad_clip=None), trained(grad_clip=1e9), trained(grad_clip=1e-3)
    assert all(torch.equal(plain[k], loose[k]) for k in plain)  # a bound never reached changes nothing
    assert not torch.allclose(plain["W_dec"], tight["W_dec"])  # a bound always reached reweights the steps


def test_schedules():
    cfg = TrainConfig(total_tokens=100, batch_size=1, lr_warmup_steps=10, lr_decay_start=0.8, sparsity_warmup_steps=20)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1 and factors[79] == 1
    assert factors[80] == 1 and factors[99] == pytest.approx(0.05) and factors[90] == pytest.approx(0.5)
    assert sparsity_scale(0, cfg) == pytest.approx(0.05) and sparsity_scale(19, cfg) == 1 == sparsity_scale(50, cfg)


def test_resampling_reinitialises_dead_latents_toward_badly_reconstructed_rows():
    x_ND, _ = sparse_data(256, 8, 16)
    torch.manual_seed(0)
    relu = make_dictionary("relu", 8, 32)
    optimizer = torch.optim.Adam(relu.parameters(), lr=1e-3)
    relu.loss(x_ND).loss.backward()
    optimizer.step()
    dead_F = torch.zeros(32, dtype=torch.bool)
    dead_F[[3, 17]] = True
    before = relu.W_enc.detach().clone()
    n = resample_dead_(relu, optimizer, dead_F, Batch(x_ND, None), torch.Generator().manual_seed(0), SingleProcess())
    assert n == 2
    alive_norm = before[:, ~dead_F].norm(dim=0).mean()
    torch.testing.assert_close(relu.W_enc[:, dead_F].norm(dim=0), torch.full((2,), 0.2) * alive_norm)
    torch.testing.assert_close(relu.W_dec[dead_F].norm(dim=1), torch.ones(2))
    assert torch.equal(relu.W_enc[:, ~dead_F], before[:, ~dead_F]) and (relu.b_enc[dead_F] == 0).all()
    # Each new decoder row is a (centred) input row.
    centred_ND = x_ND - relu.b_dec
    cos = (relu.W_dec[dead_F] @ (centred_ND / centred_ND.norm(dim=1, keepdim=True)).T).max(dim=1).values
    torch.testing.assert_close(cos, torch.ones(2))
    moments = optimizer.state[relu.W_dec]
    assert (moments["exp_avg"][dead_F] == 0).all() and (moments["exp_avg_sq"][dead_F] == 0).all()
    assert (moments["exp_avg_sq"][~dead_F] != 0).any()


def test_one_dead_latent_window_resolved_against_the_run_length():
    short = TrainConfig(total_tokens=1_000_000, batch_size=4096)
    assert short.dead_window == 200_000  # a fifth of a short run
    assert TrainConfig(total_tokens=500_000_000, batch_size=4096).dead_window == 10_000_000
    resampled = TrainConfig(total_tokens=1_000_000, batch_size=4096, resample_every=20)
    assert resampled.dead_window == 10 * 4096  # silent over the last half of a resampling interval
    assert TrainConfig(total_tokens=1_000_000, batch_size=4096, dead_after_tokens=12_345).dead_window == 12_345
    assert TrainConfig(total_tokens=1_000, batch_size=512).dead_window == 512  # at least one batch


def test_auxk_acts_in_a_short_run_and_the_logged_dead_fraction_uses_the_same_window(tmp_path):
    # Until the trainer owned the definition, AuxK waited for 10M rows, so it never acted in a
    # short run. Latents 0..15 can never win a top-k slot here: once dead_window rows pass they
    # are dead for AuxK (logged "aux" > 0) and for the dead fraction at the same step.
    x_ND, _ = sparse_data(4096, 16, 48)
    torch.manual_seed(0)
    topk = make_dictionary("topk", 16, 64, k=2)
    with torch.no_grad():
        topk.W_enc[:, :16] *= 1e-4
        topk.b_enc[:16] = -10.0
    cfg = config(total_tokens=60 * 64, log_every=1, lr=1e-3)
    Trainer({"topk": topk}, cfg, tmp_path).fit(TensorSource(x_ND), progress=False)
    records = read_metrics(tmp_path)
    window_steps = cfg.dead_window // cfg.batch_size
    before = [r for r in records if r["step"] < window_steps]
    after = [r for r in records if r["step"] > window_steps + 1]
    assert all(r["aux"] == 0 and r["dead_fraction"] == 0 for r in before)
    assert all(r["aux"] > 0 and r["dead_fraction"] >= 16 / 64 for r in after)


def test_a_checkpoint_from_before_the_trainer_owned_firing_counts_resumes_exactly(tmp_path):
    # Before, top-k dictionaries kept their firing counter among their weights (tokens_since_fired)
    # and a dead_after_tokens option; the trainer's state had no count for them.
    from safetensors.torch import load_file, save_file

    from conftest import Interrupted, StopsAfter

    x_ND, _ = sparse_data(4096, 16, 48)
    cfg = config(total_tokens=40 * 64, checkpoint_every=10, log_every=5)

    def fresh():
        torch.manual_seed(0)
        topk = make_dictionary("topk", 16, 64, k=2)
        with torch.no_grad():
            topk.W_enc[:, :16] *= 1e-4  # (almost) never selected: dead from step 8 on, so AuxK reads the counts
        return {"topk": topk}

    straight = Trainer(fresh(), cfg, tmp_path / "straight").fit(TensorSource(x_ND), progress=False)
    out = tmp_path / "old"
    with pytest.raises(Interrupted):
        Trainer(fresh(), cfg, out).fit(StopsAfter(TensorSource(x_ND), 25), progress=False)
    checkpoint = out / "checkpoint"
    run = json.loads((checkpoint / "run.json").read_text())
    assert run["step"] == 20
    run["dictionaries"]["topk"]["config"]["options"]["dead_after_tokens"] = 10_000_000
    (checkpoint / "run.json").write_text(json.dumps(run))
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    counts_F = state["firing"].pop("topk")
    assert (counts_F > 0).any()
    torch.save(state, checkpoint / "state.pt")
    weights = load_file(checkpoint / "topk" / "weights.safetensors")
    save_file({**weights, "tokens_since_fired": counts_F}, checkpoint / "topk" / "weights.safetensors")

    resumed = Trainer(fresh(), cfg, out).fit(TensorSource(x_ND), progress=False)
    for key, tensor in straight.dictionaries["topk"].state_dict().items():
        assert torch.equal(resumed.dictionaries["topk"].state_dict()[key], tensor), key


def test_a_jumprelu_checkpoint_from_before_threshold_lr_scale_resumes_with_its_old_value(tmp_path):
    # Before, JumpReLU had no threshold_lr_scale option (its thresholds trained at the run's lr)
    # and its optimizer held every parameter in one group.
    from conftest import Interrupted, StopsAfter

    x_ND, _ = sparse_data(4096, 16, 48)
    cfg = config(total_tokens=40 * 64, checkpoint_every=10, log_every=5)

    def fresh(**options):
        torch.manual_seed(0)
        return {"jr": make_dictionary("jumprelu", 16, 64, **options)}

    straight = Trainer(fresh(threshold_lr_scale=1.0), cfg, tmp_path / "straight").fit(TensorSource(x_ND),
                                                                                      progress=False)
    out = tmp_path / "old"
    with pytest.raises(Interrupted):
        Trainer(fresh(threshold_lr_scale=1.0), cfg, out).fit(StopsAfter(TensorSource(x_ND), 25), progress=False)
    checkpoint = out / "checkpoint"
    run = json.loads((checkpoint / "run.json").read_text())
    del run["dictionaries"]["jr"]["config"]["options"]["threshold_lr_scale"]
    (checkpoint / "run.json").write_text(json.dumps(run))
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    (group,) = state["optimizers"]["jr"]["param_groups"]  # scale 1: one group, as before
    del group["lr_scale"]
    torch.save(state, checkpoint / "state.pt")

    with pytest.raises(MonosemanticError, match=r"threshold_lr_scale"):
        Trainer(fresh(threshold_lr_scale=7.0), cfg, out).fit(TensorSource(x_ND), progress=False)
    resumed = Trainer(fresh(threshold_lr_scale=1.0), cfg, out).fit(TensorSource(x_ND), progress=False)
    for key, tensor in straight.dictionaries["jr"].state_dict().items():
        assert torch.equal(resumed.dictionaries["jr"].state_dict()[key], tensor), key


def test_a_threshold_lr_scale_moves_jumprelu_thresholds_faster():
    x_ND, _ = sparse_data(4096, 16, 48)
    moved = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        dictionary = make_dictionary("jumprelu", 16, 64, threshold_lr_scale=scale)
        assert isinstance(dictionary, JumpReLUDictionary)
        start_F = dictionary.log_threshold.detach().clone()
        Trainer({"jr": dictionary}, config(lr=1e-3, normalize_activations=False)).fit(TensorSource(x_ND),
                                                                                     progress=False)
        moved[scale] = float((dictionary.log_threshold.detach() - start_F).abs().max())
        assert moved[scale] <= 1e-3 * scale * 40 * 1.01  # Adam moves a parameter by at most about lr a step
    assert moved[10.0] > 3 * moved[1.0]
