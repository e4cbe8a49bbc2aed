"""Export then import, for every format and architecture: the same encode and decode outputs.

Pairs a format cannot hold are refused with a message naming the reason (tested too). Outputs
are compared with the original dictionary on random inputs, in eval mode (BatchTopK-style
dictionaries use their inference threshold there, which is what every format stores).
"""

from __future__ import annotations

import pytest
import torch

from monosemantic.dictionaries import BatchTopKDictionary, JumpReLUDictionary, make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.formats import detect_format, load_dictionary, save_dictionary_as

D, F, D_OUT = 16, 32, 12

CASES = {
    "relu": ("relu", {}),
    "relu_uncentred": ("relu", {"apply_b_dec_to_input": False}),
    "relu_weighted_l1": ("relu", {"weight_l1_by_decoder_norm": True}),
    "topk": ("topk", {"k": 4}),
    "topk_uncentred": ("topk", {"k": 4, "apply_b_dec_to_input": False}),
    "batchtopk": ("batchtopk", {"k": 4}),
    "matryoshka": ("matryoshka", {"k": 4, "group_sizes": [8, 8, 16]}),
    "jumprelu": ("jumprelu", {}),
    "gated": ("gated", {}),
    "gated_uncentred": ("gated", {"apply_b_dec_to_input": False}),
    "relu_transcoder": ("relu", {"d_out": D_OUT}),
    "relu_skip_transcoder": ("relu", {"d_out": D_OUT, "skip": True}),
    "jumprelu_transcoder": ("jumprelu", {"d_out": D_OUT}),
    "batchtopk_skip_transcoder": ("batchtopk", {"k": 4, "d_out": D_OUT, "skip": True}),
    "topk_skip_transcoder": ("topk", {"k": 4, "skip": True, "site_in": "blocks.2.mlp_in",
                                      "site_out": "blocks.2.mlp_out"}),
    "topk_layer_norm": ("topk", {"k": 4, "input_norm": "layer_norm"}),
    "relu_constant_norm": ("relu", {"input_norm": "constant_norm_rescale"}),
}

# Which (case, format) pairs each format holds; every other pair must be refused.
SUPPORTED = {
    "native": set(CASES),
    "saelens": set(CASES) - {"topk_skip_transcoder"},
    "dictionary_learning": {"relu", "relu_uncentred", "relu_weighted_l1", "topk", "topk_uncentred", "batchtopk",
                            "matryoshka", "jumprelu", "gated", "gated_uncentred"},
    "sparsify": {"topk", "topk_uncentred", "topk_skip_transcoder"},
}
REFUSALS = {"saelens": "no topk transcoder", "dictionary_learning": "", "sparsify": ""}


def _dictionary(case: str):
    arch, options = CASES[case]
    options = dict(options)
    kwargs = {name: options.pop(name) for name in ("d_out", "skip", "site_in", "site_out") if name in options}
    kwargs.setdefault("site_in", "blocks.3.resid_post")
    torch.manual_seed(sum(map(ord, case)))
    dictionary = make_dictionary(arch, D, F, model="tiny", **kwargs, **options)
    with torch.no_grad():
        for _, param in dictionary.named_parameters():
            param.copy_(torch.randn_like(param) * 0.3)
        if arch in ("batchtopk", "matryoshka"):
            assert isinstance(dictionary, BatchTopKDictionary)  # matryoshka is one too
            dictionary.threshold.fill_(0.25)
        if arch == "jumprelu":
            assert isinstance(dictionary, JumpReLUDictionary)
            dictionary.log_threshold.copy_(torch.rand(F).mul(0.5).add(1e-3).log())
    return dictionary.eval()


def _outputs(dictionary, x):
    with torch.no_grad():
        codes = dictionary.encode(x)
        return codes, dictionary.decode(codes, x)


@pytest.mark.parametrize("fmt", list(SUPPORTED))
@pytest.mark.parametrize("case", list(CASES))
def test_export_then_import_computes_the_same(tmp_path, case, fmt):
    original = _dictionary(case)
    x = torch.randn(64, D) * 2 + 0.3
    folder = tmp_path / "export"
    if case not in SUPPORTED[fmt]:
        with pytest.raises(MonosemanticError, match=REFUSALS[fmt] or "stores|no input normalisation"):
            save_dictionary_as(original, folder, to=fmt)
        assert not folder.exists()  # nothing half-written
        return
    save_dictionary_as(original, folder, to=fmt)
    assert detect_format(folder) == fmt
    loaded = load_dictionary(folder)
    codes, recon = _outputs(original, x)
    codes2, recon2 = _outputs(loaded, x)
    assert (codes > 0).any() and (codes == 0).any()  # the comparison exercises both sides of the activation
    torch.testing.assert_close(codes2, codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon2, recon, rtol=1e-5, atol=1e-5)
    assert (loaded.d_in, loaded.d_sae, loaded.d_out, loaded.config.skip) == \
        (original.d_in, original.d_sae, original.d_out, original.config.skip)
    if fmt != "sparsify":  # sparsify records no sites in its files (the folder name is the hookpoint)
        assert loaded.config.site_in == original.config.site_in


def test_batchtopk_exports_as_the_jumprelu_saelens_writes(tmp_path):
    original = _dictionary("batchtopk")
    save_dictionary_as(original, tmp_path / "sae", to="saelens")
    loaded = load_dictionary(tmp_path / "sae")
    assert loaded.config.arch == "jumprelu"
    torch.testing.assert_close(loaded.threshold, torch.full((F,), 0.25))


def test_batchtopk_and_matryoshka_keep_their_kind_in_dictionary_learning(tmp_path):
    for case, arch in (("batchtopk", "batchtopk"), ("matryoshka", "matryoshka")):
        save_dictionary_as(_dictionary(case), tmp_path / case, to="dictionary_learning")
        loaded = load_dictionary(tmp_path / case)
        assert loaded.config.arch == arch and loaded.options["k"] == 4
        assert isinstance(loaded, BatchTopKDictionary)
        assert float(loaded.threshold) == pytest.approx(0.25)
    assert loaded.options["group_sizes"] == [8, 8, 16]


def test_unestimated_batchtopk_threshold_round_trips_as_the_library_marks_it(tmp_path):
    # Our 0 and dictionary_learning's -1 both mean "not estimated": every positive code is kept.
    original = _dictionary("batchtopk")
    assert isinstance(original, BatchTopKDictionary)
    original.threshold.zero_()
    save_dictionary_as(original, tmp_path / "dl", to="dictionary_learning")
    state = torch.load(tmp_path / "dl" / "ae.pt", weights_only=True)
    assert float(state["threshold"]) == -1.0
    x = torch.randn(16, D)
    torch.testing.assert_close(load_dictionary(tmp_path / "dl").encode(x), torch.relu(original.pre_acts(x)))


def test_crosscoders_and_baselines_are_refused_with_the_way_out(tmp_path):
    crosscoder = make_dictionary("crosscoder", D, F, n_sources=2)
    for fmt in ("saelens", "dictionary_learning", "sparsify"):
        with pytest.raises(MonosemanticError, match="cannot be exported.*--to native"):
            save_dictionary_as(crosscoder, tmp_path / fmt, to=fmt)
    with pytest.raises(MonosemanticError, match="cannot write format 'openai'.*read-only"):
        save_dictionary_as(_dictionary("topk"), tmp_path / "o", to="openai")


def test_export_refuses_a_non_empty_folder_unless_overwriting(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(MonosemanticError, match="not empty.*notes.txt"):
        save_dictionary_as(_dictionary("topk"), folder, to="saelens")
    save_dictionary_as(_dictionary("topk"), folder, to="saelens", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_native_round_trip_keeps_input_norm(tmp_path):
    original = _dictionary("topk_layer_norm")
    save_dictionary_as(original, tmp_path / "n", to="native")
    assert load_dictionary(tmp_path / "n").options["input_norm"] == "layer_norm"
