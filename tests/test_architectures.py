"""Conformance: every registered architecture goes through the whole life of a dictionary.

Training in the Trainer, sweep naming, a checkpoint and an exact resume, save and load, and
export to every format that accepts it. A new architecture is covered by registering it: the
test asks the class for its facts (``EXAMPLE``, ``sparsity_option``, ``input_shape``) and
nothing here names an architecture.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import Interrupted, StopsAfter
from monosemantic.dictionaries import ARCHITECTURES, load_dictionary_native, make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.training import TensorSource, TrainConfig, Trainer, build_dictionaries, sweep_specs
from monosemantic.training.metrics import read_metrics

D = 12
EXPANSION = 4
TRAINABLE = sorted(name for name, cls in ARCHITECTURES.items() if cls.TRAINABLE)


def _rows(input_shape: tuple[int, ...], n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Sparse non-negative mixtures of a few directions, so that every architecture has codes to find.
    dirs = torch.randn(24, *input_shape, generator=g)
    active = (torch.rand(n, 24, generator=g) < 0.15) * torch.rand(n, 24, generator=g)
    return torch.einsum("nm,m...->n...", active, dirs) + 0.01 * torch.randn(n, *input_shape, generator=g)


def _specs(arch: str):
    cls = ARCHITECTURES[arch]
    option = cls.sparsity_option(cls.EXAMPLE)
    assert option is not None, f"{arch} names no sparsity option: sweeps cannot vary it"
    value = make_dictionary(arch, D, D * EXPANSION, **cls.EXAMPLE).options[option]
    others = {k: v for k, v in cls.EXAMPLE.items() if k != option}
    return sweep_specs(arch, expansions=[EXPANSION], sparsities=[value], options=others, seeds=[0]), option, value


@pytest.mark.parametrize("arch", TRAINABLE)
def test_every_architecture_trains_resumes_exactly_sweeps_saves_and_loads(arch, tmp_path):
    cls = ARCHITECTURES[arch]
    assert cls.SUMMARY, f"{arch} has no SUMMARY for the command line"
    specs, option, value = _specs(arch)
    (name, spec), = specs.items()
    assert name.startswith(f"{arch}_") and name.endswith(f"_x{EXPANSION}_s0") and f"{value:g}" in name

    probe = build_dictionaries(specs, D)[name]
    x = _rows(probe.input_shape, 2048, seed=1)
    # A transcoder learns a map to other rows: here a fixed linear one of its input.
    mixing = torch.randn(D, D, generator=torch.Generator().manual_seed(4)) / D ** 0.5
    target = x @ mixing if probe.is_transcoder else None
    config = TrainConfig(total_tokens=24 * 64, batch_size=64, lr=3e-3, log_every=4, checkpoint_every=8, seed=2)

    straight = Trainer(build_dictionaries(specs, D), config, tmp_path / "straight").fit(TensorSource(x, target),
                                                                                      progress=False)
    with pytest.raises(Interrupted):
        Trainer(build_dictionaries(specs, D), config, tmp_path / "resumed").fit(
            StopsAfter(TensorSource(x, target), 13), progress=False)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "run.json").read_text())["step"] == 8
    resumed = Trainer(build_dictionaries(specs, D), config, tmp_path / "resumed").fit(TensorSource(x, target),
                                                                                     progress=False)
    assert straight.steps == resumed.steps == 24
    for key, tensor in straight.dictionaries[name].state_dict().items():
        assert torch.equal(resumed.dictionaries[name].state_dict()[key], tensor), key
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "resumed")
    record = straight.metrics[name]
    assert {"loss", "mse", "fvu", "l0", "dead_fraction"} <= record.keys() and 0 < record["fvu"] < 1.5

    trained = straight.dictionaries[name]
    loaded = load_dictionary_native(tmp_path / "straight" / name)
    assert loaded.config == trained.config and loaded.config.options[option] == value
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:64]).recon, trained(x[:64]).recon)
        assert torch.equal(loaded.encode(x[:64]), trained.encode(x[:64]))


@pytest.mark.parametrize("arch", TRAINABLE)
def test_every_architecture_exports_where_a_format_takes_it(arch, tmp_path):
    from monosemantic.formats import load_dictionary, save_dictionary_as
    from monosemantic.formats.load import WRITABLE

    torch.manual_seed(0)
    cls = ARCHITECTURES[arch]
    dictionary = make_dictionary(arch, D, D * EXPANSION, site_in="blocks.1.resid_post", **cls.EXAMPLE).eval()
    with torch.no_grad():
        for param in dictionary.parameters():
            param.add_(0.05 * torch.randn_like(param))  # no longer a fresh init: biases and thresholds matter
    x = _rows(dictionary.input_shape, 64, seed=3)
    exported, refused = [], {}
    for fmt in WRITABLE:
        try:
            folder = save_dictionary_as(dictionary, tmp_path / fmt, fmt)
        except MonosemanticError as error:
            refused[fmt] = str(error)
            continue
        back = load_dictionary(folder)
        with torch.no_grad():
            torch.testing.assert_close(back.encode(x), dictionary.encode(x), rtol=1e-4, atol=1e-5, msg=fmt)
        exported.append(fmt)
    for fmt, reason in refused.items():
        assert arch in reason or "several" in reason or "site" in reason, (fmt, reason)
    if dictionary.n_sites == 1:
        assert exported, f"{arch} exports to no format: {refused}"


def test_the_command_line_lists_every_trainable_architecture_from_its_class():
    from typer.testing import CliRunner

    from monosemantic.cli import app

    result = CliRunner().invoke(app, ["archs"])
    assert result.exit_code == 0, result.output
    listed = [line.split(":")[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert listed == TRAINABLE
    for name in TRAINABLE:
        cls = ARCHITECTURES[name]
        assert f"{name}: {cls.SUMMARY}" in result.output
        assert f"sweeps vary: {cls.sparsity_option(cls.EXAMPLE)};" in result.output
