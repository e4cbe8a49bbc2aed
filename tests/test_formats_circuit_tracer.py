"""circuit-tracer transcoder folders and Gemma Scope transcoders: exact round trips, the documented layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.formats import load_dictionary, save_dictionary_as
from monosemantic.formats.circuit_tracer import load_gemma_scope_transcoders

S, D, F = 3, 16, 8
INS = [f"blocks.{i}.mlp_in" for i in range(S)]
OUTS = [f"blocks.{i}.mlp_out" for i in range(S)]


def _random(arch: str, activation: str, skip: bool = True):
    torch.manual_seed(0)
    options: dict = {"sites_in": INS, "sites_out": OUTS, "activation": activation}
    if activation == "topk":
        options["k"] = 3
    t = make_dictionary(arch, D, S * F, skip=skip, model="HuggingFaceTB/SmolLM2-135M", **options)
    with torch.no_grad():
        for _, parameter in t.named_parameters():
            parameter.normal_()
    return t


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, S, D, generator=torch.Generator().manual_seed(3))


def _act(pre: torch.Tensor, activation: str, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(pre)
    if activation == "jumprelu":
        assert threshold is not None
        return pre * (pre > threshold)
    assert k is not None
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


CASES = [("transcoders", "topk"), ("transcoders", "relu"), ("transcoders", "jumprelu"), ("clt", "relu"),
         ("clt", "jumprelu")]


@pytest.mark.parametrize("arch, activation", CASES)
def test_written_and_read_back_encodes_and_decodes_identically(arch, activation, tmp_path):
    t = _random(arch, activation)
    save_dictionary_as(t, tmp_path / "ct", to="circuit_tracer")
    back = load_dictionary(tmp_path / "ct")
    assert back.config == t.config
    x = _x()
    assert torch.equal(back.encode(x), t.encode(x))
    assert torch.equal(back(x).recon, t(x).recon)


@pytest.mark.parametrize("arch, activation", CASES)
def test_the_files_compute_what_circuit_tracer_computes_from_them(arch, activation, tmp_path):
    """Re-implements circuit-tracer's documented encode/decode from the written files alone."""
    t = _random(arch, activation)
    folder = save_dictionary_as(t, tmp_path / "ct", to="circuit_tracer")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model_kind"] == {"transcoders": "transcoder_set", "clt": "cross_layer_transcoder"}[arch]
    assert (config["feature_input_hook"], config["feature_output_hook"]) == ("mlp.hook_in", "hook_mlp_out")
    assert config["model_name"] == "HuggingFaceTB/SmolLM2-135M"
    x = _x()
    out = torch.zeros(x.shape[0], S, D)
    if arch == "transcoders":
        assert config.get("activation") == ("topk" if activation == "topk" else None)
        for i in range(S):
            w = load_file(folder / f"layer_{i}.safetensors")
            assert w["W_enc"].shape == w["W_dec"].shape == (F, D) and w["W_skip"].shape == (D, D)
            pre = x[:, i] @ w["W_enc"].T + w["b_enc"]
            acts = _act(pre, activation, w.get("activation_function.threshold"),
                        int(w["k"]) if "k" in w else None)
            out[:, i] = acts @ w["W_dec"] + w["b_dec"] + x[:, i] @ w["W_skip"].T
    else:
        acts = []
        for i in range(S):
            w = load_file(folder / f"W_enc_{i}.safetensors")
            assert w[f"W_enc_{i}"].shape == (F, D)
            acts.append(_act(x[:, i] @ w[f"W_enc_{i}"].T + w[f"b_enc_{i}"], activation, w.get(f"threshold_{i}"), None))
            out[:, i] = w[f"b_dec_{i}"] + x[:, i] @ w[f"W_skip_{i}"]  # a CLT's skip is x @ W_skip
        for i in range(S):
            W_dec = load_file(folder / f"W_dec_{i}.safetensors")[f"W_dec_{i}"]
            assert W_dec.shape == (F, S - i, D)
            for j in range(S - i):
                out[:, i + j] += acts[i] @ W_dec[:, j]
    assert torch.allclose(out, t(x).recon, atol=1e-4)


def test_what_circuit_tracer_cannot_hold_is_refused(tmp_path):
    with pytest.raises(MonosemanticError, match="not top-k"):
        save_dictionary_as(_random("clt", "topk"), tmp_path / "a", to="circuit_tracer")
    with pytest.raises(MonosemanticError, match="transcoders at many layers"):
        save_dictionary_as(make_dictionary("topk", D, F, k=2), tmp_path / "b", to="circuit_tracer")
    partial = make_dictionary("transcoders", D, 2 * F, k=2, sites_in=INS[1:], sites_out=OUTS[1:])
    with pytest.raises(MonosemanticError, match="from 0 with none missing"):
        save_dictionary_as(partial, tmp_path / "c", to="circuit_tracer")
    assert not any(tmp_path.iterdir())


def test_bad_folders_are_refused_with_the_reason(tmp_path):
    folder = save_dictionary_as(_random("transcoders", "relu"), tmp_path / "ct", to="circuit_tracer")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, "feature_input_hook": "hook_resid_mid"}))
    with pytest.raises(MonosemanticError, match="hook_resid_mid"):
        load_dictionary(folder)
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, "model_kind": "sae"}))
    with pytest.raises(MonosemanticError, match="model_kind 'sae'"):
        load_dictionary(folder)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "layer_1.safetensors").rename(folder / "layer_7.safetensors")
    with pytest.raises(MonosemanticError, match="no gap"):
        load_dictionary(folder)
    (folder / "layer_7.safetensors").rename(folder / "layer_1.safetensors")
    tensors = load_file(folder / "layer_1.safetensors")
    save_file({**tensors, "log_thresholds": torch.zeros(F)}, folder / "layer_1.safetensors")
    with pytest.raises(MonosemanticError, match="unexpected log_thresholds"):
        load_dictionary(folder)
    save_file({**tensors, "W_dec": torch.zeros(D, F)}, folder / "layer_1.safetensors")
    with pytest.raises(MonosemanticError, match=r"shape \(16, 8\), expected \(8, 16\)"):
        load_dictionary(folder)


def test_gemma_scope_transcoders_read_as_jumprelu(tmp_path):
    rng = np.random.default_rng(0)
    paths, layers = [], []
    for i in range(S):
        arrays = {"W_enc": rng.standard_normal((D, F)).astype(np.float32),
                  "W_dec": rng.standard_normal((F, D)).astype(np.float32),
                  "b_enc": rng.standard_normal(F).astype(np.float32),
                  "b_dec": rng.standard_normal(D).astype(np.float32),
                  "threshold": np.abs(rng.standard_normal(F)).astype(np.float32)}
        path = tmp_path / f"layer_{i}" / "params.npz"
        path.parent.mkdir()
        np.savez(str(path), W_enc=arrays["W_enc"], W_dec=arrays["W_dec"], b_enc=arrays["b_enc"],
                 b_dec=arrays["b_dec"], threshold=arrays["threshold"])
        paths.append(path)
        layers.append({k: torch.from_numpy(v) for k, v in arrays.items()})
    t = load_gemma_scope_transcoders(paths, model="google/gemma-2-2b")
    assert t.arch == "transcoders" and t.options["activation"] == "jumprelu" and t.config.model == "google/gemma-2-2b"
    x = _x()
    for i, w in enumerate(layers):
        pre = x[:, i] @ w["W_enc"] + w["b_enc"]
        expected = (pre * (pre > w["threshold"])) @ w["W_dec"] + w["b_dec"]
        assert torch.allclose(t(x).recon[:, i], expected, atol=1e-4)
    with pytest.raises(MonosemanticError, match="cannot read"):
        load_gemma_scope_transcoders([tmp_path / "missing.npz"])
