"""Models and sites: one naming scheme, checked against plain transformers on several families."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import TINY_FAMILIES
from monosemantic.errors import MonosemanticError
from monosemantic.models import load_model

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_hidden")


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny(request, tiny_model_dir):
    return load_model(str(tiny_model_dir(request.param)))


def _ids(n_batch=2, n_seq=12, seed=1):
    return torch.randint(0, 49152, (n_batch, n_seq), generator=torch.Generator().manual_seed(seed))


def test_every_family_lists_all_block_sites(tiny):
    names = tiny.site_names()
    assert len(names) == 4 * len(KINDS)
    assert names[:6] == [f"blocks.0.{k}" for k in KINDS]


def test_block_sites_agree_with_hidden_states_and_add_up(tiny):
    """resid_post(L) is transformers' hidden_states[L+1], and resid_post = resid_pre + attn_out + mlp_out.

    The second identity holds for sequential (Llama, GPT-2), parallel (GPT-NeoX) and post-norm
    (Gemma 2) blocks alike, so it checks that attn_out and mlp_out are what each sub-layer
    adds to the residual stream.
    """
    ids = _ids()
    sites = [f"blocks.{layer}.{k}" for layer in range(4) for k in KINDS]
    acts = tiny.capture(ids, sites)
    with torch.no_grad():
        hidden = tiny.model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(4):
        pre, post = acts[f"blocks.{layer}.resid_pre"], acts[f"blocks.{layer}.resid_post"]
        torch.testing.assert_close(pre, hidden[layer], rtol=1e-5, atol=1e-5)
        if layer < 3:  # the last entry of hidden_states is after the final norm
            torch.testing.assert_close(post, hidden[layer + 1], rtol=1e-5, atol=1e-5)
        summed = pre + acts[f"blocks.{layer}.attn_out"] + acts[f"blocks.{layer}.mlp_out"]
        torch.testing.assert_close(post, summed, rtol=1e-4, atol=1e-4)
    assert acts["blocks.2.mlp_hidden"].shape[-1] == tiny.width("blocks.2.mlp_hidden") != tiny.d_model


def test_mlp_hidden_is_the_down_projection_input(tiny_model_dir):
    """For Llama, GPT-2 and GPT-NeoX, mlp_out is the down projection of mlp_hidden."""
    for family, down in [("llama", "model.layers.1.mlp.down_proj"), ("gpt2", "transformer.h.1.mlp.c_proj"),
                         ("gpt_neox", "gpt_neox.layers.1.mlp.dense_4h_to_h")]:
        lm = load_model(str(tiny_model_dir(family)))
        acts = lm.capture(_ids(), ["blocks.1.mlp_hidden", "blocks.1.mlp_out", "blocks.1.mlp_in"])
        with torch.no_grad():
            projected = lm.model.get_submodule(down)(acts["blocks.1.mlp_hidden"])
        torch.testing.assert_close(projected, acts["blocks.1.mlp_out"], rtol=1e-5, atol=1e-5)
        assert acts["blocks.1.mlp_in"].shape[-1] == lm.d_model


def test_capture_stops_after_the_last_needed_layer(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, LlamaForCausalLM)
    calls = []
    handles = [lm.model.model.layers[i].register_forward_hook(lambda *a, i=i: calls.append(i)) for i in range(4)]
    handles.append(lm.model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")))
    try:
        lm.capture(_ids(), ["blocks.1.resid_post", "blocks.0.mlp_out"])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]


def test_raw_module_paths_read_outputs_and_inputs(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("gpt2")))
    acts = lm.capture(_ids(), ["transformer.h.2", "transformer.h.2.ln_2:input", "blocks.2.resid_post"])
    torch.testing.assert_close(acts["transformer.h.2"], acts["blocks.2.resid_post"])
    assert acts["transformer.h.2.ln_2:input"].shape == acts["transformer.h.2"].shape


@pytest.mark.parametrize("site, message", [
    ("blocks.9.resid_post", "out of range: .* has layers 0-3"),
    ("blocks.1.resid_mid", "expected one of resid_pre, resid_post"),
    ("model.layers.1.mlpp", "did you mean model.layers.1.mlp"),
    ("model.layers.1.mlp:inside", "must be 'input' or 'output'"),
])
def test_bad_sites_say_what_is_valid(tiny_model_dir, site, message):
    lm = load_model(str(tiny_model_dir("llama")))
    with pytest.raises(MonosemanticError, match=message):
        lm.resolve_sites([site])


def test_bad_model_specs_fail_fast_with_one_line(tmp_path):
    with pytest.raises(MonosemanticError, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(MonosemanticError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(MonosemanticError, match="not a folder holding a saved model"):
        load_model("./nowhere")


def test_context_limit_is_read_from_the_config(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("gpt2")))
    assert lm.max_context == 256
    lm.check_context(256)
    with pytest.raises(MonosemanticError, match="longer than .* allows \\(256 positions\\)"):
        lm.check_context(257)


@pytest.mark.slow
def test_embedded_model_cache_matches_the_gguf_weights(smollm2, smol_tokenizer_dir):
    """The cached float32 conversion gives the logits of a fresh GGUF load, bit for bit."""
    from transformers import AutoModelForCausalLM

    from monosemantic.models import embedded_gguf

    gguf = embedded_gguf("smollm2-135m")
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = smollm2.tokenizer("def add(a, b):\n    return a + b\n", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(smollm2.model(ids).logits, direct(ids).logits, rtol=0, atol=0)
    assert smollm2.describe()["n_layers"] == 30 and smollm2.d_model == 576
    assert smollm2.site("blocks.6.mlp_hidden").module == "model.layers.6.mlp.down_proj"


def test_device_names_resolve_per_torchrun_rank(monkeypatch):
    from monosemantic.models.loading import device_name, resolve_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert device_name("cuda") == torch.device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert device_name("cuda") == torch.device("cuda", 3)
    assert device_name("cuda:1") == torch.device("cuda", 1) and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MonosemanticError, match="is not a device name"):
        device_name("gpu")
    if not torch.cuda.is_available():  # one that is not there: a one-line error, not torch's assertion
        with pytest.raises(MonosemanticError, match="use --device cpu"):
            resolve_device("cuda")


def test_splice_replaces_a_site_and_later_layers_see_it(tiny_model_dir):
    """Splicing resid_post(1) with itself changes nothing; zeroing mlp_out(1) equals resid_pre + attn_out."""
    from monosemantic.models import splice

    lm = load_model(str(tiny_model_dir("llama")))
    ids = _ids()
    clean = lm.capture(ids, ["blocks.1.resid_post", "blocks.3.resid_post", "blocks.1.resid_pre", "blocks.1.attn_out"])
    with splice(lm, "blocks.1.resid_post", lambda a: a.clone()):
        same = lm.capture(ids, ["blocks.3.resid_post"])
    torch.testing.assert_close(same["blocks.3.resid_post"], clean["blocks.3.resid_post"], rtol=0, atol=0)
    with splice(lm, "blocks.1.mlp_out", torch.zeros_like):
        ablated = lm.capture(ids, ["blocks.1.resid_post", "blocks.3.resid_post"])
    torch.testing.assert_close(ablated["blocks.1.resid_post"],
                               clean["blocks.1.resid_pre"] + clean["blocks.1.attn_out"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ablated["blocks.3.resid_post"], clean["blocks.3.resid_post"])
    with splice(lm, "blocks.2.mlp_hidden", lambda a: a * 0):  # an input site
        hidden_zeroed = lm.capture(ids, ["blocks.2.mlp_out"])["blocks.2.mlp_out"]
    torch.testing.assert_close(hidden_zeroed, torch.zeros_like(hidden_zeroed))
    after = lm.capture(ids, ["blocks.3.resid_post"])  # hooks are gone
    torch.testing.assert_close(after["blocks.3.resid_post"], clean["blocks.3.resid_post"], rtol=0, atol=0)
