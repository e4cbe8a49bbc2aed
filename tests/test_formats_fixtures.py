"""Files written by the real libraries load here and give the outputs those libraries gave.

Each fixture folder under tests/fixtures/formats/ was written by the library's own save code
(see make_fixtures.py and README.md there); its ``expected.safetensors`` holds an input and the
library's encode and forward outputs on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from monosemantic.errors import MonosemanticError
from monosemantic.formats import WRITABLE, detect_format, load_dictionary, save_dictionary_as

ROOT = Path(__file__).parent / "fixtures" / "formats"
FIXTURES = sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.rglob("expected.safetensors"))

# fixture -> (format, our arch, site_in, site_out)
EXPECTED = {
    "dictionary_learning/AutoEncoder": ("dictionary_learning", "relu", "blocks.3.resid_post", "blocks.3.resid_post"),
    "dictionary_learning/AutoEncoderNew": ("dictionary_learning", "relu", "blocks.3.resid_post", "blocks.3.resid_post"),
    "dictionary_learning/AutoEncoderTopK": ("dictionary_learning", "topk", "blocks.3.resid_post",
                                            "blocks.3.resid_post"),
    "dictionary_learning/BatchTopKSAE": ("dictionary_learning", "batchtopk", "blocks.3.resid_post",
                                         "blocks.3.resid_post"),
    "dictionary_learning/GatedAutoEncoder": ("dictionary_learning", "gated", "blocks.3.resid_post",
                                             "blocks.3.resid_post"),
    "dictionary_learning/JumpReluAutoEncoder": ("dictionary_learning", "jumprelu", "blocks.3.resid_post",
                                                "blocks.3.resid_post"),
    "dictionary_learning/MatryoshkaBatchTopKSAE": ("dictionary_learning", "matryoshka", "blocks.3.resid_post",
                                                   "blocks.3.resid_post"),
    "openai/relu": ("openai", "relu", "blocks.3.resid_post", "blocks.3.resid_post"),
    "openai/topk": ("openai", "topk", "blocks.2.mlp_out", "blocks.2.mlp_out"),
    "saelens/batchtopk": ("saelens", "jumprelu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/gated": ("saelens", "gated", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/jumprelu": ("saelens", "jumprelu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/jumprelu_transcoder": ("saelens", "jumprelu", "blocks.1.mlp_in", "blocks.1.mlp_out"),
    "saelens/matryoshka_batchtopk": ("saelens", "jumprelu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/skip_transcoder": ("saelens", "relu", "blocks.1.mlp_in", "blocks.1.mlp_out"),
    "saelens/standard": ("saelens", "relu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/standard_layer_norm": ("saelens", "relu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/standard_uncentred": ("saelens", "relu", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/topk": ("saelens", "topk", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/topk_rescaled": ("saelens", "topk", "blocks.1.resid_post", "blocks.1.resid_post"),
    "saelens/transcoder": ("saelens", "relu", "blocks.1.mlp_in", "blocks.1.mlp_out"),
    "saelens/v5_standard": ("saelens", "relu", "blocks.2.resid_pre", "blocks.2.resid_pre"),
    "saelens/v5_topk_kwargs": ("saelens", "topk", "blocks.2.resid_pre", "blocks.2.resid_pre"),
    "sparsify/run/layers.1": ("sparsify", "topk", "blocks.1.resid_post", "blocks.1.resid_post"),
    "sparsify/run/layers.1.mlp": ("sparsify", "topk", "blocks.1.mlp_in", "blocks.1.mlp_out"),
    "sparsify/run/layers.2.mlp": ("sparsify", "topk", "blocks.2.mlp_in", "blocks.2.mlp_out"),
}


def test_every_fixture_is_listed():
    assert sorted(EXPECTED) == FIXTURES


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_gives_the_library_outputs(name):
    folder = ROOT / name
    expected = load_file(folder / "expected.safetensors")
    fmt, arch, site_in, site_out = EXPECTED[name]
    if fmt == "openai":  # a checkpoint file in the release's {location}/autoencoders/{layer}.pt layout
        (folder,) = folder.rglob("*.pt")
    assert detect_format(folder) == fmt
    dictionary = load_dictionary(folder)
    assert (dictionary.config.arch, dictionary.config.site_in, dictionary.config.site_out) == (arch, site_in, site_out)
    x = expected["x"]
    with torch.no_grad():
        codes = dictionary.encode(x)
        recon = dictionary.decode(codes, x)
    assert (expected["codes"] != 0).any()
    torch.testing.assert_close(codes, expected["codes"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon, expected["recon"], rtol=1e-5, atol=1e-5)


TOPK_ONLY = "sparsify stores top-k dictionaries only"
AUTOENCODERS_ONLY = "dictionary_learning stores autoencoders only"
NO_TOPK_TRANSCODER = "SAELens has no topk transcoder"


def _no_norm(fmt: str) -> str:
    return f"{fmt} has no input normalisation"


# fixture -> {writable format: the reason it refuses the fixture}; every format not named must hold it exactly.
REFUSED = {
    "dictionary_learning/AutoEncoder": {"sparsify": TOPK_ONLY},
    "dictionary_learning/AutoEncoderNew": {"sparsify": TOPK_ONLY},
    "dictionary_learning/AutoEncoderTopK": {},
    "dictionary_learning/BatchTopKSAE": {"sparsify": TOPK_ONLY},
    "dictionary_learning/GatedAutoEncoder": {"sparsify": TOPK_ONLY},
    "dictionary_learning/JumpReluAutoEncoder": {"sparsify": TOPK_ONLY},
    "dictionary_learning/MatryoshkaBatchTopKSAE": {"sparsify": TOPK_ONLY},
    "openai/relu": {"sparsify": TOPK_ONLY},
    "openai/topk": {"dictionary_learning": _no_norm("dictionary_learning"), "sparsify": _no_norm("sparsify")},
    "saelens/batchtopk": {"sparsify": TOPK_ONLY},
    "saelens/gated": {"sparsify": TOPK_ONLY},
    "saelens/jumprelu": {"sparsify": TOPK_ONLY},
    "saelens/jumprelu_transcoder": {"dictionary_learning": AUTOENCODERS_ONLY, "sparsify": TOPK_ONLY},
    "saelens/matryoshka_batchtopk": {"sparsify": TOPK_ONLY},
    "saelens/skip_transcoder": {"dictionary_learning": AUTOENCODERS_ONLY, "sparsify": TOPK_ONLY},
    "saelens/standard": {"sparsify": TOPK_ONLY},
    "saelens/standard_layer_norm": {"dictionary_learning": _no_norm("dictionary_learning"), "sparsify": TOPK_ONLY},
    "saelens/standard_uncentred": {"sparsify": TOPK_ONLY},
    "saelens/topk": {},
    "saelens/topk_rescaled": {"dictionary_learning": _no_norm("dictionary_learning"), "sparsify": _no_norm("sparsify")},
    "saelens/transcoder": {"dictionary_learning": AUTOENCODERS_ONLY, "sparsify": TOPK_ONLY},
    "saelens/v5_standard": {"sparsify": TOPK_ONLY},
    "saelens/v5_topk_kwargs": {},
    "sparsify/run/layers.1": {},
    "sparsify/run/layers.1.mlp": {"saelens": NO_TOPK_TRANSCODER, "dictionary_learning": AUTOENCODERS_ONLY},
    "sparsify/run/layers.2.mlp": {"saelens": NO_TOPK_TRANSCODER, "dictionary_learning": AUTOENCODERS_ONLY},
}

# The fixtures are single-site dictionaries; circuit-tracer holds transcoders at every layer only
# (tests/test_formats_circuit_tracer.py covers what it holds).
for _refused in REFUSED.values():
    _refused["circuit_tracer"] = "circuit-tracer stores transcoders at many layers"


def test_every_fixture_has_its_conversions_listed():
    assert sorted(REFUSED) == FIXTURES
    assert all(set(refused) <= set(WRITABLE) for refused in REFUSED.values())


@pytest.mark.parametrize("fmt", WRITABLE)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_converts_exactly_or_is_refused_for_the_expected_reason(tmp_path, name, fmt):
    expected = load_file(ROOT / name / "expected.safetensors")
    source = ROOT / name
    if EXPECTED[name][0] == "openai":
        (source,) = source.rglob("*.pt")
    dictionary = load_dictionary(source)
    folder = tmp_path / fmt
    if fmt in REFUSED[name]:
        with pytest.raises(MonosemanticError, match=REFUSED[name][fmt]):
            save_dictionary_as(dictionary, folder, to=fmt)
        assert not folder.exists()
        return
    save_dictionary_as(dictionary, folder, to=fmt)
    assert detect_format(folder) == fmt
    again = load_dictionary(folder)
    x = expected["x"]
    with torch.no_grad():
        codes = again.encode(x)
        recon = again.decode(codes, x)
    torch.testing.assert_close(codes, expected["codes"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon, expected["recon"], rtol=1e-5, atol=1e-5)
    if fmt != "sparsify":  # sparsify names sites by the folder, here "sparsify"
        assert (again.config.site_in, again.config.model) == (dictionary.config.site_in, dictionary.config.model)


def test_sparsify_run_folder_needs_a_hookpoint():
    with pytest.raises(MonosemanticError,
                       match=r"sparsify run with hookpoints layers\.1, layers\.1\.mlp, layers\.2\.mlp"):
        load_dictionary(ROOT / "sparsify" / "run")
    assert load_dictionary(ROOT / "sparsify" / "run", subfolder="layers.1.mlp").config.site_out == "blocks.1.mlp_out"


def test_dictionary_learning_class_comes_from_the_keys_not_the_mislabelled_config():
    # dictionary_learning 0.1.0 writes dict_class "AutoEncoder" even for AutoEncoderNew.
    import json

    config = json.loads((ROOT / "dictionary_learning" / "AutoEncoderNew" / "config.json").read_text())
    assert config["trainer"]["dict_class"] == "AutoEncoder"
    loaded = load_dictionary(ROOT / "dictionary_learning" / "AutoEncoderNew")
    assert not loaded.apply_b_dec_to_input and loaded.options["weight_l1_by_decoder_norm"]
