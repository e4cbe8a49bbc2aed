"""Steering: what is added where, what it does to the next-token distribution, and the CLI."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.dictionaries import make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import corpus_windows
from monosemantic.interventions import (
    decoder_promoted_tokens,
    generate_steered,
    plot_steering_curve,
    steer_prompt,
    steering,
    steering_curve,
    typical_norm,
)
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SITE = "blocks.2.resid_post"
PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir("llama")))


def _sae(site=SITE, **config):
    torch.manual_seed(0)
    sae = make_dictionary("topk", 64, 32, k=4)
    sae.config = dataclasses.replace(sae.config, site_in=site, **config)
    return sae


@pytest.fixture(scope="module")
def ids(lm):
    return lm.tokenizer(PROMPT + " a + b\n\nprint(add(1, 2))", return_tensors="pt").input_ids


def test_multiple_zero_leaves_logits_unchanged(lm, ids):
    with torch.no_grad():
        clean = lm.model(input_ids=ids).logits
        with steering(lm, _sae(), 5, 0.0):
            steered = lm.model(input_ids=ids).logits
        after = lm.model(input_ids=ids).logits
    assert torch.equal(clean, steered)
    assert torch.equal(clean, after)  # the hook is gone after the block


@pytest.mark.parametrize("site", [SITE, "blocks.1.resid_pre", "blocks.0.mlp_out"])
def test_site_activation_is_clean_plus_multiple_of_the_decoder_row(lm, ids, site):
    sae = _sae(site)
    clean = lm.capture(ids, [site])[site]
    with steering(lm, sae, 7, 3.5) as added:
        steered = lm.capture(ids, [site])[site]
    assert list(added) == [site]
    expected = clean + 3.5 * sae.W_dec.detach()[7]
    torch.testing.assert_close(steered, expected, rtol=0, atol=1e-5)
    assert (steered - clean).norm(dim=-1).sub(3.5).abs().max() < 1e-4  # unit-norm row: every position moved by 3.5


def test_transcoder_steers_where_it_writes(lm, ids):
    torch.manual_seed(0)
    transcoder = make_dictionary("topk", 64, 32, k=4, site_in="blocks.1.mlp_in", site_out="blocks.1.mlp_out")
    sites = ["blocks.1.mlp_in", "blocks.1.mlp_out"]
    clean = lm.capture(ids, sites)
    with steering(lm, transcoder, 2, -2.0):
        steered = lm.capture(ids, sites)
    torch.testing.assert_close(steered["blocks.1.mlp_in"], clean["blocks.1.mlp_in"], rtol=0, atol=0)
    torch.testing.assert_close(steered["blocks.1.mlp_out"],
                               clean["blocks.1.mlp_out"] - 2.0 * transcoder.W_dec.detach()[2], rtol=0, atol=1e-5)


def _add_at(lm, site, vector_D):
    """A raw forward hook adding ``vector_D`` to a block's output (independent of the library's splice)."""
    module = lm.model.get_submodule(lm.site(site).module)
    return module.register_forward_hook(
        lambda _m, _a, out: (out[0] + vector_D, *out[1:]) if isinstance(out, tuple) else out + vector_D)


def test_crosscoder_steers_each_source_with_its_slice(lm, ids):
    sites = ["blocks.1.resid_post", "blocks.2.resid_post"]
    torch.manual_seed(0)
    crosscoder = make_dictionary("crosscoder", 64, 16, n_sources=2, sites=sites)
    W_dec = crosscoder.W_dec.detach()
    handle = _add_at(lm, sites[0], 2.0 * W_dec[5, 0])
    try:
        expected = lm.capture(ids, sites)  # the first edit, carried forward to the second site
    finally:
        handle.remove()
    with steering(lm, crosscoder, 5, 2.0) as added:
        steered = lm.capture(ids, sites)
    assert list(added) == sites
    torch.testing.assert_close(steered[sites[0]], expected[sites[0]], rtol=0, atol=1e-6)
    torch.testing.assert_close(steered[sites[1]], expected[sites[1]] + 2.0 * W_dec[5, 1], rtol=0, atol=1e-5)
    with (pytest.raises(MonosemanticError, match="steers at all its sites at once"),
          steering(lm, crosscoder, 5, 2.0, site=sites[0])):
        pass


def test_relative_norm_scales_the_unit_direction(lm, ids):
    sae = _sae()
    with torch.no_grad():
        sae.W_dec[4] *= 3  # a row that is not unit norm: norm= must not depend on its length
    clean = lm.capture(ids, [SITE])[SITE]
    with steering(lm, sae, 4, 0.5, norm=6.0):
        steered = lm.capture(ids, [SITE])[SITE]
    row = sae.W_dec.detach()[4]
    torch.testing.assert_close(steered, clean + 0.5 * 6.0 * row / row.norm(), rtol=0, atol=1e-5)


def test_bad_latent_and_long_prompt_are_one_line_errors(lm):
    sae = _sae()
    bad_latents: tuple[Any, ...] = (32, -1, 2.0)  # Any: 2.0 is deliberately not an int
    for latent in bad_latents:
        with pytest.raises(MonosemanticError, match=r"32 latents, numbered 0 to 31"), steering(lm, sae, latent, 1.0):
            pass
    too_long = " x" * 300  # the tiny model allows 256 positions
    with pytest.raises(MonosemanticError, match=r"256 positions"):
        generate_steered(lm, sae, 1, 4.0, too_long)
    with pytest.raises(MonosemanticError, match=r"256 positions"):
        generate_steered(lm, sae, 1, 4.0, "x = 1", max_new_tokens=300)


def test_generation_at_zero_is_the_clean_greedy_continuation(lm):
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                      pad_token_id=lm.tokenizer.eos_token_id)[0, ids.shape[1]:]
    sae = _sae()
    assert generate_steered(lm, sae, 3, 0.0, PROMPT, max_new_tokens=12) == lm.tokenizer.decode(reference)
    assert generate_steered(lm, sae, 3, 50.0, PROMPT, max_new_tokens=12) != lm.tokenizer.decode(reference)


@pytest.fixture(scope="module")
def sharp_lm(tiny_model_dir):
    """The tiny llama with one token's (tied) embedding made long: steering the last residual stream along
    that embedding then has a large, known effect on that token's logit."""
    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, PreTrainedModel) and isinstance(lm.tokenizer, PreTrainedTokenizerBase)
    token = lm.tokenizer(" banana", add_special_tokens=False).input_ids[0]
    unembedding = lm.model.get_output_embeddings()
    assert isinstance(unembedding, torch.nn.Linear)
    with torch.no_grad():
        unembedding.weight[token] *= 15
    return lm, token


def _hand_promoted_mass(lm, windows_WS, site, vector_D, promoted):
    """Mean next-token probability of ``promoted`` over positions 1..S-2, with ``vector_D`` added by a raw hook."""
    handle = _add_at(lm, site, vector_D)
    try:
        with torch.no_grad():
            probs_WSV = lm.model(input_ids=windows_WS).logits.double().softmax(-1)
    finally:
        handle.remove()
    return float(probs_WSV[:, 1:-1, promoted].sum(-1).mean())


def test_steering_curve_promotes_the_constructed_token(sharp_lm, tmp_path):
    lm, token = sharp_lm
    site = "blocks.3.resid_post"
    sae = _sae(site)
    with torch.no_grad():
        direction = lm.model.get_output_embeddings().weight[token]
        sae.W_dec[9] = direction / direction.norm()
    assert decoder_promoted_tokens(lm, sae, 9, 3)[0] == token  # the default promoted set is found through W_U
    windows_WS = corpus_windows(lm.tokenizer, n_windows=3, context_length=16)
    assert not (windows_WS == token).any()
    multiples = [0.0, 0.1, 0.2, 0.4, 0.8]  # the stream's norm is ~0.3 here
    curve = steering_curve(lm, sae, 9, multiples, windows_WS, n_promoted=1, n_generate=2, max_new_tokens=6,
                           progress=False)
    assert curve.promoted == (token,) and curve.sites == (site,) and curve.n_positions == 3 * 14
    probs = [p.promoted_prob for p in curve.points]
    assert all(b > a for a, b in itertools.pairwise(probs)) and probs[-1] > 0.99 and probs[0] < 1e-3
    for multiple, prob in zip(multiples, probs):
        hand = _hand_promoted_mass(lm, windows_WS, site, multiple * sae.W_dec.detach()[9], [token])
        assert prob == pytest.approx(hand, rel=1e-4)
    assert curve.points[-1].promoted_generated == 1.0 and curve.points[0].promoted_generated == 0.0
    assert curve.points[-1].ce_text > curve.points[0].ce_text  # predicting "banana" everywhere hurts
    # At multiple 0 the text CE is the clean model's own cross-entropy on the scored positions.
    with torch.no_grad():
        logits = lm.model(input_ids=windows_WS).logits[:, 1:-1]
    clean_ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows_WS[:, 2:].reshape(-1))
    assert curve.points[0].ce_text == pytest.approx(float(clean_ce), rel=1e-5)
    png = plot_steering_curve(curve, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert curve.to_dict()["points"][0]["multiple"] == 0.0


def test_steer_prompt_is_its_parts_put_together(lm, tmp_path):
    sae = _sae()
    windows_WS = corpus_windows(lm.tokenizer, n_windows=2, context_length=16)
    shown = steer_prompt(lm, sae, 3, PROMPT, 50.0, max_new_tokens=8, curve=[0, 50], windows_WS=windows_WS,
                         plot=tmp_path / "curve.png", progress=False)
    assert shown.clean == generate_steered(lm, sae, 3, 0.0, PROMPT, max_new_tokens=8)
    assert shown.steered == generate_steered(lm, sae, 3, 50.0, PROMPT, max_new_tokens=8) != shown.clean
    assert shown.norm is None and (shown.latent, shown.multiple) == (3, 50.0)
    curve = steering_curve(lm, sae, 3, [0.0, 50.0], windows_WS, progress=False)
    assert shown.curve is not None and shown.curve.to_dict() == curve.to_dict()
    assert shown.plot == str(tmp_path / "curve.png") and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    relative = steer_prompt(lm, sae, 3, PROMPT, 0.5, max_new_tokens=8, relative=True, windows_WS=windows_WS)
    norm = typical_norm(lm, SITE, windows_WS)
    assert relative.norm == pytest.approx(norm) and relative.curve is None and relative.plot is None
    assert relative.steered == generate_steered(lm, sae, 3, 0.5, PROMPT, max_new_tokens=8, norm=norm)
    for kwargs, message in [({"curve": [0, 1]}, "pass windows_WS"), ({"relative": True}, "pass windows_WS"),
                            ({"plot": tmp_path / "x.png", "windows_WS": windows_WS}, "pass curve=")]:
        with pytest.raises(MonosemanticError, match=message):
            steer_prompt(lm, sae, 3, PROMPT, **kwargs)
    with pytest.raises(MonosemanticError, match="numbered 0 to 31"):
        steer_prompt(lm, sae, 32, PROMPT)


def test_steer_cli_prints_clean_and_steered(lm, tiny_model_dir, tmp_path):
    sae = _sae(model=str(tiny_model_dir("llama")))
    save_dictionary(sae, tmp_path / "sae")
    result = CliRunner().invoke(app, ["steer", str(tmp_path / "sae"), "--latent", "3", "--multiple", "50",
                                      PROMPT, "--tokens", "8", "--curve", "0,50", "--curve-windows", "2"])
    assert result.exit_code == 0, result.output
    clean = generate_steered(lm, sae, 3, 0.0, PROMPT, max_new_tokens=8)
    steered = generate_steered(lm, sae, 3, 50.0, PROMPT, max_new_tokens=8)
    assert f"clean:   {clean!r}" in result.output and f"{steered!r}" in result.output
    assert "P(promoted)" in result.output and len(
        [line for line in result.output.splitlines() if line.strip().startswith(("0 ", "50 "))]) == 2
    bad = CliRunner().invoke(app, ["steer", str(tmp_path / "sae"), "--latent", "99", PROMPT])
    assert bad.exit_code == 2 and "numbered 0 to 31" in bad.output
