"""The per-architecture table (formats/architectures.py) and the format registry (formats/registry.py).

Every architecture with a row is exported to each format its row names and read back with the
same outputs, so a new row is tested as soon as its architecture is registered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from monosemantic.dictionaries import ARCHITECTURES as REGISTERED
from monosemantic.dictionaries import Dictionary, DictionaryConfig, dictionary_from_config, make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.formats import detect_format, load_dictionary, save_dictionary_as
from monosemantic.formats.architectures import ARCHITECTURES, arch_reading, names_read
from monosemantic.formats.registry import REGISTRY, Format, register_format

D, F = 16, 32
READ_FORMATS = ("saelens", "dictionary_learning", "sparsify", "openai")


def _held(arch: str, fmt: str) -> bool:
    row = ARCHITECTURES[arch]
    return {"saelens": row.saelens[0] is not None, "dictionary_learning": bool(row.dictionary_learning),
            "sparsify": row.sparsify is not None}[fmt]


def _dictionary(arch: str) -> Dictionary:
    torch.manual_seed(sum(map(ord, arch)))
    # EXAMPLE: the options that make a small working instance, stated by the class.
    dictionary = make_dictionary(arch, D, F, site_in="blocks.2.resid_post", model="tiny", **REGISTERED[arch].EXAMPLE)
    with torch.no_grad():
        for _, param in dictionary.named_parameters():
            param.copy_(torch.randn_like(param) * 0.3)
        threshold = getattr(dictionary, "threshold", None)
        if threshold is not None and threshold.ndim == 0:
            threshold.fill_(0.25)
    return dictionary.eval()


def _outputs(dictionary, x):
    with torch.no_grad():
        codes = dictionary.encode(x)
        return codes, dictionary.decode(codes, x)


def test_each_name_a_format_uses_reads_as_one_architecture():
    for fmt in READ_FORMATS:
        names = names_read(fmt)
        assert names and len(names) == len(set(names)), (fmt, names)


def test_every_name_written_reads_back_as_an_architecture_computing_the_same():
    for arch, row in ARCHITECTURES.items():
        written = {"saelens": [n for n in row.saelens if n], "dictionary_learning": list(row.dictionary_learning),
                   "sparsify": [row.sparsify] if row.sparsify else []}
        for fmt, names in written.items():
            for name in names:
                back = arch_reading(fmt, name)
                assert back is not None, (arch, fmt, name)
                # SAELens stores a shared (BatchTopK) threshold repeated per latent: a jumprelu.
                expected = "jumprelu" if (fmt, row.activation) == ("saelens", "threshold") else row.activation
                assert ARCHITECTURES[back].activation == expected, (arch, fmt, name, back)


TESTED = sorted(set(ARCHITECTURES) & set(REGISTERED))


@pytest.mark.parametrize("fmt", ["saelens", "dictionary_learning", "sparsify"])
@pytest.mark.parametrize("arch", TESTED)
def test_architecture_round_trips_through_each_format_its_row_names(tmp_path, arch, fmt):
    original = _dictionary(arch)
    folder = tmp_path / "export"
    if not _held(arch, fmt):
        with pytest.raises(MonosemanticError, match="stores|has no"):
            save_dictionary_as(original, folder, to=fmt)
        return
    save_dictionary_as(original, folder, to=fmt)
    loaded = load_dictionary(folder)
    row = ARCHITECTURES[arch]
    if row.names_read(fmt):
        assert loaded.config.arch in (arch, "jumprelu")  # jumprelu: BatchTopK through SAELens
    else:  # an architecture that is another one at inference comes back as that one
        assert ARCHITECTURES[loaded.config.arch].activation == row.activation
    x = torch.randn(48, D) * 2 + 0.3
    codes, recon = _outputs(original, x)
    assert (codes > 0).any() and (codes == 0).any()
    codes2, recon2 = _outputs(loaded, x)
    torch.testing.assert_close(codes2, codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon2, recon, rtol=1e-5, atol=1e-5)


def test_p_anneal_exports_as_a_relu_dictionary(tmp_path):
    if "p_anneal" not in REGISTERED:
        pytest.skip("the p_anneal architecture is not registered in this tree yet")
    original = _dictionary("p_anneal")
    x = torch.randn(48, D) * 2 + 0.3
    for fmt in ("saelens", "dictionary_learning"):
        save_dictionary_as(original, tmp_path / fmt, to=fmt)
        loaded = load_dictionary(tmp_path / fmt)
        assert loaded.config.arch == "relu"
        for got, want in zip(_outputs(loaded, x), _outputs(original, x)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----- the format registry ----------------------------------------------------------------------------


def _save_tiny(dictionary: Dictionary, folder, *, overwrite: bool = False) -> Path:
    """A made-up format: the config as tiny.json, every tensor in tiny.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=overwrite)
    (folder / "tiny.json").write_text(json.dumps(dictionary.config.to_dict()))
    save_file({name: t.contiguous() for name, t in dictionary.state_dict().items()}, folder / "tiny.safetensors")
    return folder


def _load_tiny(folder: Path) -> Dictionary:
    config = DictionaryConfig.from_dict(json.loads((folder / "tiny.json").read_text()))
    dictionary = dictionary_from_config(config)
    dictionary.load_state_dict(load_file(folder / "tiny.safetensors"))
    return dictionary


@pytest.fixture
def tiny_format():
    fmt = register_format(Format("tiny", ("tiny.json", "tiny.safetensors"), _load_tiny, _save_tiny))
    yield fmt
    del REGISTRY["tiny"]


def test_a_registered_format_is_detected_read_and_written(tmp_path, tiny_format):
    original = _dictionary("topk")
    save_dictionary_as(original, tmp_path / "t", to="tiny")
    assert detect_format(tmp_path / "t") == "tiny"
    loaded = load_dictionary(tmp_path / "t")
    assert not loaded.training  # load_dictionary's own promise, kept for every format
    x = torch.randn(8, D)
    torch.testing.assert_close(loaded.encode(x), original.encode(x))
    with pytest.raises(MonosemanticError, match="input_scale applies to saelens folders only; .* is tiny"):
        load_dictionary(tmp_path / "t", input_scale=2.0)
    with pytest.raises(ValueError, match="already registered"):
        register_format(Format("tiny", ("other.json",), _load_tiny))
