"""Bad input to the format readers: clear MonosemanticErrors, never unsafe loading.

Also the semantics that no fixture covers: openai checkpoints (layer-normed top-k) against
the library's formula written out here, SAELens's expected_average_only_in folding and legacy
scaling factor, the dictionary_learning backup form, and the offline Hugging Face path.
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
from monosemantic.errors import MonosemanticError
from monosemantic.formats import load_dictionary

ROOT = Path(__file__).parent / "fixtures" / "formats"
D, F = 16, 32


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ROOT / name, tmp_path / Path(name).name))


UNPICKLED = []


class NotATensor:
    """A custom class: unpickling it runs its code (``__setstate__``), which weights_only refuses."""

    def __init__(self):
        self.payload = [1, 2, 3]

    def __setstate__(self, state):
        UNPICKLED.append(state)
        self.__dict__.update(state)


# ----- detection -------------------------------------------------------------------------------------


def test_unknown_format_lists_the_files_found(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(MonosemanticError, match=r"cannot tell the format.*found readme\.md, weights\.bin"):
        load_dictionary(tmp_path)


def test_ambiguous_format_lists_the_candidates_and_files(tmp_path):
    folder = _copy("saelens/topk", tmp_path)
    shutil.copy(ROOT / "sparsify/run/layers.1/sae.safetensors", folder / "sae.safetensors")
    with pytest.raises(MonosemanticError, match=r"several formats \(saelens, sparsify\).*sae\.safetensors.*--format"):
        load_dictionary(folder)
    assert load_dictionary(folder, format="saelens").config.arch == "topk"


def test_explicit_format_must_match_the_files(tmp_path):
    folder = _copy("saelens/topk", tmp_path)
    with pytest.raises(MonosemanticError, match=r"not a sparsify folder: missing sae\.safetensors; found cfg\.json"):
        load_dictionary(folder, format="sparsify")
    with pytest.raises(MonosemanticError, match="unknown format 'sae_lens'"):
        load_dictionary(folder, format="sae_lens")


def test_missing_local_path_is_tried_as_a_repo_and_fails_clearly_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MonosemanticError,
                       match=r"no-such-org/no-such-sae is not a local path and could not be fetched"):
        load_dictionary("no-such-org/no-such-sae", subfolder="layers.6")
    with pytest.raises(MonosemanticError, match="does not exist and is not a Hugging Face repo id"):
        load_dictionary(str(tmp_path / "missing" / "deeper"))


def test_subfolder_that_does_not_exist(tmp_path):
    with pytest.raises(MonosemanticError, match=r"has no 'layers\.9'; found run"):
        load_dictionary(ROOT / "sparsify", subfolder="layers.9")


# ----- tensors ---------------------------------------------------------------------------------------


def _edit_safetensors(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_missing_and_extra_tensors_are_named(tmp_path):
    folder = _copy("saelens/jumprelu", tmp_path)

    def edit(t):
        del t["b_enc"]
        t["bonus"] = torch.zeros(3)

    _edit_safetensors(folder / "sae_weights.safetensors", edit)
    with pytest.raises(MonosemanticError, match=r"missing b_enc; unexpected bonus; expected tensors W_dec, W_enc"):
        load_dictionary(folder)


def test_shape_mismatch_against_the_config(tmp_path):
    folder = _copy("sparsify/run/layers.1", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["num_latents"] = 48
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MonosemanticError, match=r"encoder\.weight has shape \(32, 16\), expected \(48, 16\)"):
        load_dictionary(folder)


def test_integer_weights_are_refused(tmp_path):
    folder = _copy("saelens/standard", tmp_path)
    _edit_safetensors(folder / "sae_weights.safetensors", lambda t: t.update(W_dec=t["W_dec"].to(torch.int32)))
    with pytest.raises(MonosemanticError, match=r"W_dec has dtype torch\.int32, expected a floating-point tensor"):
        load_dictionary(folder)


def test_half_precision_weights_load_as_float32(tmp_path):
    folder = _copy("saelens/standard", tmp_path)
    _edit_safetensors(folder / "sae_weights.safetensors", lambda t: t.update({k: v.half() for k, v in t.items()}))
    dictionary = load_dictionary(folder)
    assert dictionary.W_enc.dtype == torch.float32
    stored = load_file(folder / "sae_weights.safetensors")["W_enc"]
    assert torch.equal(dictionary.W_enc, stored.float())


def test_unsupported_saelens_architecture_and_normalisation(tmp_path):
    folder = _copy("saelens/standard", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "matching_pursuit"}))
    with pytest.raises(MonosemanticError,
                       match="architecture 'matching_pursuit' is not supported; supported: standard"):
        load_dictionary(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "covariance_whitening"}))
    with pytest.raises(MonosemanticError, match="covariance_whitening.*cannot be represented"):
        load_dictionary(folder)


def test_damaged_files(tmp_path):
    folder = _copy("saelens/standard", tmp_path)
    (folder / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MonosemanticError, match="cannot read .*sae_weights.safetensors"):
        load_dictionary(folder)
    (folder / "cfg.json").write_text("{oops")
    with pytest.raises(MonosemanticError, match="cfg.json is not readable JSON"):
        load_dictionary(folder)


# ----- pickles ---------------------------------------------------------------------------------------


def test_pickled_custom_object_is_refused_without_unpickling(tmp_path):
    folder = _copy("dictionary_learning/AutoEncoder", tmp_path)
    state = torch.load(folder / "ae.pt", weights_only=True)
    torch.save({**state, "extra": NotATensor()}, folder / "ae.pt")
    with pytest.raises(MonosemanticError, match=r"safe loader \(torch\.load weights_only=True\) refused it.*never "
                                                r"unpickles files unsafely"):
        load_dictionary(folder)
    with pytest.raises(MonosemanticError, match="refused"):
        load_dictionary(tmp_path / "AutoEncoder" / "ae.pt")  # the file itself, too
    assert UNPICKLED == []  # the object's code never ran
    torch.load(folder / "ae.pt", weights_only=False)  # while an unsafe load would have run it
    assert UNPICKLED == [{"payload": [1, 2, 3]}]


def test_dictionary_learning_keys_that_fit_no_class(tmp_path):
    folder = _copy("dictionary_learning/AutoEncoder", tmp_path)
    state = torch.load(folder / "ae.pt", weights_only=True)
    del state["bias"]
    state["decoder.weight"] = state["decoder.weight"][:, :30]
    torch.save(state, folder / "ae.pt")
    with pytest.raises(MonosemanticError, match=r"closest class AutoEncoder\): missing bias"):
        load_dictionary(folder)
    state["bias"] = torch.zeros(D)
    torch.save(state, folder / "ae.pt")
    with pytest.raises(MonosemanticError, match=r"decoder\.weight has shape \(16, 30\), expected \(16, 32\)"):
        load_dictionary(folder)


def test_topk_and_batchtopk_keys_need_the_config(tmp_path):
    folder = _copy("dictionary_learning/BatchTopKSAE", tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(MonosemanticError, match="fit AutoEncoderTopK and BatchTopKSAE; config.json"):
        load_dictionary(folder)


def test_backup_form_is_read_and_its_norm_factor_folded(tmp_path):
    # The mid-run backup holds the state in normalised units; the final save would scale the biases.
    folder = _copy("dictionary_learning/JumpReluAutoEncoder", tmp_path)
    state = torch.load(folder / "ae.pt", weights_only=True)
    norm = 4.0
    scaled = {**state, "b_enc": state["b_enc"] / norm, "b_dec": state["b_dec"] / norm,
              "threshold": state["threshold"] / norm}
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    torch.save({"step": 10, "ae": scaled, "optimizer": optimizer, "config": {"lr": 1e-3}, "norm_factor": norm},
               folder / "ae.pt")
    expected = load_file(ROOT / "dictionary_learning/JumpReluAutoEncoder/expected.safetensors")
    dictionary = load_dictionary(folder)
    x = expected["x"]
    # Scaling biases by n makes codes and reconstruction n times those of x / n in normalised units.
    codes = dictionary.encode(x)
    torch.testing.assert_close(codes, expected["codes"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dictionary.decode(codes), expected["recon"], rtol=1e-5, atol=1e-5)


# ----- SAELens semantics without a fixture --------------------------------------------------------------


def test_expected_average_only_in_is_folded_or_refused(tmp_path):
    folder = _copy("saelens/standard", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(MonosemanticError, match="scaling factor is not stored.*input_scale="):
        load_dictionary(folder)
    expected = load_file(folder / "expected.safetensors")
    x, scale = expected["x"], 2.5
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": scale}))
    for dictionary in (load_dictionary(folder), load_dictionary(folder, input_scale=scale)):
        # The SAE saw x * scale: folded, raw x gives its codes and its reconstruction / scale.
        codes = dictionary.encode(x / scale)
        torch.testing.assert_close(codes, expected["codes"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dictionary.decode(codes) * scale, expected["recon"], rtol=1e-5, atol=1e-5)
        assert dictionary.options["input_norm"] == "none"


def test_legacy_scaling_factor_multiplies_codes_before_decoding(tmp_path):
    folder = _copy("saelens/v5_standard", tmp_path)
    factor = torch.linspace(0.5, 2.0, F)
    _edit_safetensors(folder / "sae_weights.safetensors", lambda t: t.update(scaling_factor=factor))
    expected = load_file(folder / "expected.safetensors")
    dictionary = load_dictionary(folder)
    codes = dictionary.encode(expected["x"])
    torch.testing.assert_close(codes, expected["codes"], rtol=1e-5, atol=1e-5)
    W_dec = load_file(folder / "sae_weights.safetensors")["W_dec"]
    b_dec = load_file(folder / "sae_weights.safetensors")["b_dec"]
    torch.testing.assert_close(dictionary.decode(codes), (codes * factor) @ W_dec + b_dec, rtol=1e-5, atol=1e-5)


def test_pre_6_activation_other_than_relu_or_topk_is_refused(tmp_path):
    folder = _copy("saelens/v5_standard", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "activation_fn_str": "tanh-relu"}))
    with pytest.raises(MonosemanticError, match="activation_fn 'tanh-relu' is not supported"):
        load_dictionary(folder)


# ----- openai ------------------------------------------------------------------------------------------


def _openai_state(activation: str, k: int = 4) -> dict:
    generator = torch.Generator().manual_seed(5)
    state = {"pre_bias": torch.randn(D, generator=generator), "latent_bias": torch.randn(F, generator=generator) * .1,
             "encoder.weight": torch.randn(F, D, generator=generator) * .3,
             "decoder.weight": torch.randn(D, F, generator=generator) * .3,
             "stats_last_nonzero": torch.zeros(F, dtype=torch.long),
             "latents_activation_frequency": torch.ones(F), "latents_mean_square": torch.zeros(F),
             "activation": activation}
    if activation == "TopK":
        state["activation_state_dict"] = {"k": k, "postact_fn": "ReLU"}
    return state


def _openai_reference(state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """openai/sparse_autoencoder's computation, written out from its model.py."""
    normalize = state["activation"] == "TopK"
    if normalize:
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        x = (x - mu) / (std + 1e-5)
    pre = (x - state["pre_bias"]) @ state["encoder.weight"].T + state["latent_bias"]
    if normalize:
        top = pre.topk(state["activation_state_dict"]["k"], dim=-1)
        latents = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        latents = torch.relu(pre)
    recon = latents @ state["decoder.weight"].T + state["pre_bias"]
    return latents, (recon * std + mu if normalize else recon)


@pytest.mark.parametrize("activation", ["ReLU", "TopK"])
def test_openai_checkpoint_matches_the_library_formula(tmp_path, activation):
    folder = tmp_path / "resid_post_mlp_v5_32k" / "autoencoders"
    folder.mkdir(parents=True)
    state = _openai_state(activation)
    torch.save(state, folder / "6.pt")
    dictionary = load_dictionary(folder / "6.pt")
    assert dictionary.config.site_in == "blocks.6.resid_post"
    assert dictionary.options["input_norm"] == ("layer_norm" if activation == "TopK" else "none")
    x = torch.randn(12, D) * 3 + 1
    latents, recon = _openai_reference(state, x)
    codes = dictionary.encode(x)
    torch.testing.assert_close(codes, latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dictionary.decode(codes, x), recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dictionary(x).recon, recon, rtol=1e-5, atol=1e-5)
    if activation == "TopK":
        with pytest.raises(MonosemanticError, match="decode needs the input too"):
            dictionary.decode(codes)
        with pytest.raises(MonosemanticError,
                           match="training a dictionary with input_norm=layer_norm is not supported"):
            dictionary.loss(x)


def test_openai_checkpoint_with_unknown_activation(tmp_path):
    state = _openai_state("TopK")
    state["activation_state_dict"]["postact_fn"] = "Identity"
    torch.save(state, tmp_path / "3.pt")
    with pytest.raises(MonosemanticError, match="postact_fn='Identity' is not supported"):
        load_dictionary(tmp_path / "3.pt")


# ----- CLI ---------------------------------------------------------------------------------------------


def test_cli_convert_and_compare_accept_any_format(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(ROOT / "sparsify" / "run"), str(tmp_path / "sae"), "--to", "saelens",
                                 "--subfolder", "layers.1"])
    assert result.exit_code == 0, result.output
    assert "topk dictionary (d_in 16, d_sae 32, site blocks.1.resid_post) written as saelens" in result.output
    result = runner.invoke(app, ["convert", str(tmp_path / "sae"), str(tmp_path / "dl"), "--to", "dictionary_learning"])
    assert result.exit_code == 0, result.output
    expected = load_file(ROOT / "sparsify/run/layers.1/expected.safetensors")
    torch.testing.assert_close(load_dictionary(tmp_path / "dl").encode(expected["x"]), expected["codes"])
    result = runner.invoke(app, ["convert", str(ROOT / "saelens" / "skip_transcoder"), str(tmp_path / "sp"),
                                 "--to", "sparsify"])
    assert result.exit_code == 2 and "sparsify stores top-k dictionaries only" in result.output
    result = runner.invoke(app, ["compare", str(ROOT / "saelens" / "topk"), str(tmp_path / "dl")])
    assert result.exit_code == 0 and "MMCS" in result.output, result.output
