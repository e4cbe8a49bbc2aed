"""Data-parallel training under torchrun (gloo, two CPU processes) equals single-process training.

Both runs see the same global batches; the two ranks each train on half of every batch and
average gradients, so the weights must agree with one process's up to float rounding. BatchTopK
selects over the global batch, so it agrees too.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from monosemantic.training import Trainer, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"

SETUP = textwrap.dedent("""
    import torch
    from monosemantic.training import TensorSource, TrainConfig, build_dictionaries, sweep_specs

    def setup(data_path):
        specs = {**sweep_specs("relu", expansions=[4], sparsities=[0.3]),
                 **sweep_specs("topk", expansions=[4], sparsities=[3]),
                 **sweep_specs("batchtopk", expansions=[4], sparsities=[3])}
        dictionaries = build_dictionaries(specs, 12, seed=7)
        with torch.no_grad():
            dictionaries["relu_l1_0.3_x4"].b_enc[:6] = -50.0  # dead: resampling draws rows from every rank
        cfg = TrainConfig(total_tokens=40 * 64, batch_size=64, lr=2e-3, log_every=10, checkpoint_every=25,
                          resample_every=20, seed=2)
        return dictionaries, cfg, TensorSource(torch.load(data_path))
""")

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from ddp_setup import setup
    from monosemantic.training import Trainer
    import torch.distributed as dist
    dictionaries, cfg, source = setup(sys.argv[1])
    Trainer(dictionaries, cfg, sys.argv[2]).fit(source, progress=False)
    # The trainer leaves no process group behind, and never made one in a single process.
    assert not dist.is_initialized()
""")


# Port races with other jobs on the machine: the launch is tried again, never the training.
_NETWORK_TROUBLE = re.compile(r"address already in use|EADDRINUSE|DistNetworkError|RendezvousConnectionError|"
                              r"Connection (reset|refused)", re.IGNORECASE)


def _torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *args]
    for _ in range(3):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0 or not _NETWORK_TROUBLE.search(done.stderr):
            break
    return done


def test_two_processes_train_like_one(tmp_path):
    g = torch.Generator().manual_seed(11)
    x_ND = torch.relu(torch.randn(640, 12, generator=g)) * torch.rand(640, 1, generator=g)
    torch.save(x_ND, tmp_path / "x.pt")
    (tmp_path / "ddp_setup.py").write_text(SETUP)
    (tmp_path / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = _torchrun([str(tmp_path / "script.py"), str(tmp_path / "x.pt"), str(tmp_path / "ddp"), str(tmp_path)], env)
    assert done.returncode == 0, done.stderr[-3000:]

    sys.path.insert(0, str(tmp_path))
    try:
        setup = importlib.import_module("ddp_setup").setup  # written above, so not importable statically
    finally:
        sys.path.remove(str(tmp_path))
    dictionaries, cfg, source = setup(tmp_path / "x.pt")
    single = Trainer(dictionaries, cfg, tmp_path / "single").fit(source, progress=False)

    from monosemantic.dictionaries import load_dictionary_native

    for name, expected in single.dictionaries.items():
        got = load_dictionary_native(tmp_path / "ddp" / name)
        for key, tensor in expected.state_dict().items():
            if tensor.is_floating_point():
                torch.testing.assert_close(got.state_dict()[key], tensor, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
            else:
                assert torch.equal(got.state_dict()[key], tensor), f"{name}.{key}"
    # Rank 0 alone wrote metrics, with the global batch's numbers.
    ddp, one = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    assert [(r["step"], r["name"]) for r in ddp] == [(r["step"], r["name"]) for r in one]
    for a, b in zip(ddp, one, strict=True):
        for key in ("loss", "fvu", "l0", "dead_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], a["name"], key)
    assert json.loads((tmp_path / "ddp" / "training.json").read_text())["steps"] == 40


STORE_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    from monosemantic.activations import ActivationStore
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.training import StoreSource, Trainer, TrainConfig

    class LoggedStore(ActivationStore):
        # The real store, noting which shards this process reads.
        read = []
        def read_shard(self, index, *args, **kwargs):
            self.read.append(index)
            return super().read_shard(index, *args, **kwargs)

    torch.manual_seed(3)
    dictionary = make_dictionary("topk", 64, 128, k=4)
    cfg = TrainConfig(total_tokens=12 * 64, batch_size=64, lr=2e-3, log_every=4, seed=5)
    Trainer(dictionary, cfg, sys.argv[2]).fit(StoreSource(LoggedStore(sys.argv[1]), "blocks.1.resid_post"),
                                              progress=False)
    with open(os.path.join(sys.argv[3], "read_%s.json" % os.environ["RANK"]), "w") as f:
        json.dump(sorted(set(LoggedStore.read)), f)
""")


def test_two_processes_read_their_own_shards_and_train_like_one(tiny_model_dir, tmp_path):
    """Each rank reads only its own shards of the store, and the result equals one process reading
    the same two partitions."""
    from monosemantic.activations import harvest
    from monosemantic.dictionaries import load_dictionary_native, make_dictionary
    from monosemantic.models import load_model
    from monosemantic.training import StoreSource, TrainConfig

    lm = load_model(str(tiny_model_dir("llama")))
    store = harvest(lm, ["blocks.1.resid_post"], tmp_path / "store", n_tokens=3000, context_length=32,
                    shard_rows=256, progress=False)
    assert store.num_shards >= 8
    (tmp_path / "script.py").write_text(STORE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = _torchrun([str(tmp_path / "script.py"), str(store.path), str(tmp_path / "ddp"), str(tmp_path)], env)
    assert done.returncode == 0, done.stderr[-3000:]

    reads = [json.loads((tmp_path / f"read_{rank}.json").read_text()) for rank in (0, 1)]
    for rank, shards in enumerate(reads):
        assert shards and all(index % 2 == rank for index in shards), (rank, shards)

    torch.manual_seed(3)
    dictionary = make_dictionary("topk", 64, 128, k=4)
    cfg = TrainConfig(total_tokens=12 * 64, batch_size=64, lr=2e-3, log_every=4, seed=5)
    single = Trainer(dictionary, cfg, tmp_path / "single").fit(
        StoreSource(store, "blocks.1.resid_post", partitions=2), progress=False)
    got = load_dictionary_native(tmp_path / "ddp" / "dictionary")
    for key, tensor in single.dictionaries["dictionary"].state_dict().items():
        torch.testing.assert_close(got.state_dict()[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
