"""Interop seams found by loading our exports in the real libraries (issue #12, point 7).

Where a library's behaviour matters, it is written out here from its source (sparsify's
``SparseCoder.encode``/``forward``, dictionary_learning's ``utils.load_dictionary`` with each
class's ``from_pretrained``) and run on the files we wrote; ``tests/fixtures/formats/
check_exports.py`` runs the libraries themselves on the same exports by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.dictionaries import make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.formats import load_dictionary, save_dictionary_as

ROOT = Path(__file__).parent / "fixtures" / "formats"
D, F, K = 16, 32, 4


def _randomized(dictionary, seed: int, scale: float = 0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(dictionary.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return dictionary.eval()


def _x(n: int = 24) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(7)) * 2 + 0.5


def _outputs(dictionary, x):
    with torch.no_grad():
        codes = dictionary.encode(x)
        return codes, dictionary.decode(codes, x)


# ----- sparsify ----------------------------------------------------------------------------------------


def _sparsify_reference(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sparsify's SparseCoder on ``x``, written out from sparse_coder.py: (dense codes, sae_out)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    t = load_file(folder / "sae.safetensors")
    sae_in = x if cfg["transcode"] else x - t["b_dec"]
    pre = torch.relu(sae_in @ t["encoder.weight"].T + t["encoder.bias"])
    top = pre.topk(cfg["k"], dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    out = codes @ t["W_dec"] + t["b_dec"]
    if cfg["skip_connection"]:
        out = out + x @ t["W_skip"].T
    return codes, out


def test_uncentred_topk_autoencoder_goes_to_sparsify_as_an_autoencoder(tmp_path):
    original = _randomized(make_dictionary("topk", D, F, k=K, apply_b_dec_to_input=False,
                                           site_in="blocks.3.resid_post"), seed=1)
    folder = tmp_path / "layers.3"
    save_dictionary_as(original, folder, to="sparsify")
    # transcode would make sparsify feed it the module's input; the centring goes into the bias instead.
    assert json.loads((folder / "cfg.json").read_text())["transcode"] is False
    x = _x()
    codes, recon = _outputs(original, x)
    assert (codes > 0).any()
    for got, want in zip(_sparsify_reference(folder, x), (codes, recon)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    loaded = load_dictionary(folder)
    assert not loaded.config.is_transcoder
    assert (loaded.config.site_in, loaded.config.site_out) == ("blocks.3.resid_post", "blocks.3.resid_post")
    save_dictionary_as(loaded, tmp_path / "dl", to="dictionary_learning")  # refused while it read as a transcoder
    for got, want in zip(_outputs(load_dictionary(tmp_path / "dl"), x), (codes, recon)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _write_sparsify_skip_sae(folder: Path) -> None:
    """A sparsify SAE with a skip connection and no transcode, in the files SparseCoder.save_to_disk writes."""
    generator = torch.Generator().manual_seed(3)
    tensors = {"encoder.weight": torch.randn(F, D, generator=generator) * 0.3,
               "encoder.bias": torch.randn(F, generator=generator) * 0.1,
               "W_dec": torch.randn(F, D, generator=generator) * 0.3,
               "b_dec": torch.randn(D, generator=generator) * 0.5,
               "W_skip": torch.randn(D, D, generator=generator) * 0.1}
    folder.mkdir(parents=True)
    save_file(tensors, folder / "sae.safetensors", metadata={"format": "pt"})
    cfg = {"activation": "topk", "expansion_factor": 2, "normalize_decoder": True, "num_latents": F, "k": K,
           "multi_topk": False, "skip_connection": True, "transcode": False, "d_in": D}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_sparsify_skip_sae_without_transcode_reads_the_modules_output(tmp_path):
    folder = tmp_path / "run" / "layers.3"
    _write_sparsify_skip_sae(folder)
    loaded = load_dictionary(folder)
    # sparsify feeds such an SAE the module's output (the residual stream after block 3), not its input.
    assert (loaded.config.site_in, loaded.config.site_out) == ("blocks.3.resid_post", "blocks.3.resid_post")
    x = _x()
    expected = _sparsify_reference(folder, x)
    for got, want in zip(_outputs(loaded, x), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    again = tmp_path / "again" / "layers.3"
    save_dictionary_as(loaded, again, to="sparsify")
    cfg = json.loads((again / "cfg.json").read_text())
    assert (cfg["skip_connection"], cfg["transcode"]) == (True, False)
    for got, want in zip(_sparsify_reference(again, x), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("centred", "transcode"), [(False, True), (True, False)])
def test_sparsify_skip_dictionary_without_sites_keeps_its_kind(tmp_path, centred, transcode):
    # Without sites to go by, an uncentred skip dictionary is a transcoder (ours default to that) and a
    # centred one an SAE with a skip connection (as sparsify reads them).
    original = _randomized(make_dictionary("topk", D, F, k=K, skip=True, apply_b_dec_to_input=centred), seed=4)
    save_dictionary_as(original, tmp_path / "sae", to="sparsify")
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["transcode"] is transcode
    x = _x()
    for got, want in zip(_sparsify_reference(tmp_path / "sae", x), _outputs(original, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----- dictionary_learning -------------------------------------------------------------------------------


def _dictionary_learning_default_load(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(encode, decode) of ``utils.load_dictionary(folder)``, written out from dictionary_learning 0.1.0.

    ``AutoEncoder.from_pretrained`` defaults to ``normalize_decoder=True``: unless the decoder
    columns already have unit norm (``torch.allclose``), it divides them by their norms and
    multiplies the encoder rows and bias by the same norms. ``AutoEncoderNew`` keeps its weights.
    """
    cls = json.loads((folder / "config.json").read_text())["trainer"]["dict_class"]
    state = torch.load(folder / "ae.pt", weights_only=True)
    enc, enc_bias, dec = state["encoder.weight"], state["encoder.bias"], state["decoder.weight"]
    if cls == "AutoEncoder":
        norms = dec.norm(dim=0)
        if not torch.allclose(norms, torch.ones_like(norms)):
            dec, enc, enc_bias = dec / norms, enc * norms[:, None], enc_bias * norms
        codes = torch.relu((x - state["bias"]) @ enc.T + enc_bias)
        return codes, codes @ dec.T + state["bias"]
    assert cls == "AutoEncoderNew", cls
    codes = torch.relu(x @ enc.T + enc_bias)
    return codes, codes @ dec.T + state["decoder.bias"]


RELU_CASES = {  # case -> (options, whether decoder rows have unit norm, the class it must be written as)
    "centred, free decoder norms": ({}, False, "AutoEncoderNew"),
    "centred, weighted L1": ({"weight_l1_by_decoder_norm": True}, False, "AutoEncoderNew"),
    "centred, unit decoder rows": ({}, True, "AutoEncoder"),
    "uncentred, unit decoder rows": ({"apply_b_dec_to_input": False}, True, "AutoEncoderNew"),
}


@pytest.mark.parametrize("case", list(RELU_CASES))
def test_relu_codes_survive_dictionary_learnings_default_loader(tmp_path, case):
    options, unit_rows, cls = RELU_CASES[case]
    original = _randomized(make_dictionary("relu", D, F, **options), seed=5)
    if unit_rows:
        with torch.no_grad():
            original.W_dec.div_(original.W_dec.norm(dim=1, keepdim=True))
    save_dictionary_as(original, tmp_path / "dl", to="dictionary_learning")
    assert json.loads((tmp_path / "dl" / "config.json").read_text())["trainer"]["dict_class"] == cls
    x = _x()
    codes, recon = _outputs(original, x)
    assert (codes > 0).any() and (codes == 0).any()
    for got, want in zip(_dictionary_learning_default_load(tmp_path / "dl", x), (codes, recon)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(_outputs(load_dictionary(tmp_path / "dl"), x), (codes, recon)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ROOT / name, tmp_path / Path(name).name))


@pytest.mark.parametrize(("field", "value", "found"), [("k", 8, 4), ("dict_size", 64, 32), ("activation_dim", 8, 16)])
def test_dictionary_learning_config_that_contradicts_ae_pt_is_refused(tmp_path, field, value, found):
    folder = _copy("dictionary_learning/AutoEncoderTopK", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["trainer"][field] == found  # the fixture agrees with its weights
    config["trainer"][field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MonosemanticError, match=rf"trainer\.{field}={value} but ae\.pt has {field}={found}; the two "
                                                 "files do not belong together"):
        load_dictionary(folder)


@pytest.mark.parametrize("start", [b"", b"\x80\x02"])
def test_unreadable_ae_pt_is_reported_as_damaged_not_as_python_objects(tmp_path, start):
    folder = _copy("dictionary_learning/AutoEncoder", tmp_path)
    junk = bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(11), dtype=torch.uint8).tolist())
    (folder / "ae.pt").write_bytes(start + junk)
    with pytest.raises(MonosemanticError, match="ae.pt is damaged or not a torch save") as caught:
        load_dictionary(folder)
    assert "Python objects" not in str(caught.value)
    (tmp_path / "7.pt").write_bytes(start + junk)  # an openai checkpoint goes through the same reader
    with pytest.raises(MonosemanticError, match="7.pt is damaged or not a torch save"):
        load_dictionary(tmp_path / "7.pt")


# ----- SAELens metadata ---------------------------------------------------------------------------------

KEPT = {"prepend_bos": False, "context_size": 128, "neuronpedia_id": "gpt2-small/1-res-test",
        "dataset_path": "monology/pile-uncopyrighted", "model_class_name": "HookedTransformer"}


def _saelens_with_metadata(tmp_path: Path, **metadata) -> Path:
    folder = _copy("saelens/standard", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"].update(metadata)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_saelens_metadata_survives_a_round_trip(tmp_path):
    folder = _saelens_with_metadata(tmp_path, **KEPT)
    save_dictionary_as(load_dictionary(folder), tmp_path / "again", to="saelens")
    metadata = json.loads((tmp_path / "again" / "cfg.json").read_text())["metadata"]
    assert {key: metadata.get(key) for key in KEPT} == KEPT
    assert (metadata["hook_name"], metadata["model_name"]) == ("blocks.1.hook_resid_post", "gpt2")
    result = CliRunner().invoke(app, ["convert", str(folder), str(tmp_path / "cli"), "--to", "saelens"])
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "cli" / "cfg.json").read_text())["metadata"]
    assert {key: metadata.get(key) for key in KEPT} == KEPT


def test_saelens_metadata_is_not_carried_onto_changed_weights(tmp_path):
    # A fine-tuned SAE is not the one its neuronpedia_id names: the fields go with the weights read.
    sae = load_dictionary(_saelens_with_metadata(tmp_path, **KEPT))
    with torch.no_grad():
        sae.W_dec.mul_(1.01)
    save_dictionary_as(sae, tmp_path / "tuned", to="saelens")
    metadata = json.loads((tmp_path / "tuned" / "cfg.json").read_text())["metadata"]
    assert metadata.get("neuronpedia_id") is None and metadata.get("dataset_path") is None
    assert metadata["hook_name"] == "blocks.1.hook_resid_post"  # from the site, which did not change


def test_saelens_hook_without_a_site_here_is_kept_as_read(tmp_path):
    folder = _saelens_with_metadata(tmp_path, hook_name="blocks.1.attn.hook_z", hook_head_index=None)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "reshape_activations": "hook_z"}))
    loaded = load_dictionary(folder)
    assert loaded.config.site_in is None
    save_dictionary_as(loaded, tmp_path / "again", to="saelens")
    cfg = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert (cfg["metadata"]["hook_name"], cfg["reshape_activations"]) == ("blocks.1.attn.hook_z", "hook_z")


# ----- convert ------------------------------------------------------------------------------------------


def test_convert_names_an_autoencoders_site_once(tmp_path):
    original = make_dictionary("topk", D, F, k=K, site_in="blocks.3.resid_post")
    assert original.config.site_out is None
    save_dictionary(original, tmp_path / "native")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "native"), str(tmp_path / "sae"), "--to", "saelens"])
    assert result.exit_code == 0, result.output
    assert "topk dictionary (d_in 16, d_sae 32, site blocks.3.resid_post) written as saelens" in result.output
    transcoder = make_dictionary("relu", D, F, d_out=12, site_in="blocks.3.mlp_in", site_out="blocks.3.mlp_out")
    save_dictionary(transcoder, tmp_path / "tc")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "tc"), str(tmp_path / "tc_sae"), "--to", "saelens"])
    assert "site blocks.3.mlp_in -> blocks.3.mlp_out)" in result.output, result.output
