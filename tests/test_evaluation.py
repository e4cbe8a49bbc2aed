"""Evaluation: what each metric means, pinned against hand computations and known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from monosemantic.activations import harvest, held_out
from monosemantic.baselines import fit_baseline
from monosemantic.data import storable_mask
from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import (
    corpus_windows,
    density_summary,
    evaluate_reconstruction,
    evaluate_splice,
    max_cosines,
    mmcs,
    scored_positions,
    stitch,
    store_rows,
    store_windows,
)
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SITE = "blocks.1.resid_post"


def _strict_json(result) -> dict:
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


# ----- reconstruction metrics ------------------------------------------------------------------

def _firing_pattern(n=2000, seed=0):
    """Rows whose coordinates fire on known fractions of tokens: 0, 50%, 5%, 1%."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 4)
    for column, every in ((1, 2), (2, 20), (3, 100)):
        x[::every, column] = torch.rand(n // every, generator=g) + 0.5
    return x


def test_firing_metrics_on_hand_made_codes():
    x = _firing_pattern()
    result = evaluate_reconstruction(fit_baseline("identity", x), x)  # identity: codes are x
    assert result.n_tokens == 2000
    assert result.l0 == pytest.approx(0.5 + 0.05 + 0.01)
    assert result.l1 == pytest.approx(float(x.abs().sum(1).mean()), rel=1e-6)
    assert result.fvu == 0 and result.mse == 0 and result.cosine == pytest.approx(1.0)
    density = result.density
    assert (density.dead, density.dense) == (1, 1)  # column 0 never fires; column 1 fires on 50% > 10%
    assert density.dead_fraction == 0.25 and density.dense_fraction == 0.25
    edges, counts = np.array(density.histogram_edges), np.array(density.histogram_counts)
    assert len(edges) == len(counts) + 1 and edges[-1] == 0 and counts.sum() == 3  # dead latents are not binned
    bins = [int(np.searchsorted(edges, math.log10(f), side="right")) - 1 for f in (0.5, 0.05, 0.01)]
    assert bins == [33, 28, 25]  # 0.2-wide bins from -7: [-0.4, -0.2), [-1.4, -1.2), [-2.0, -1.8)
    assert [counts[b] for b in bins] == [1, 1, 1]


def test_density_histogram_bins_and_clipping():
    counts_F = torch.tensor([0, 1, 10, 100, 1000, 1000])
    summary = density_summary(counts_F, 1000, histogram_low=-2.0, histogram_bins=4)
    # Densities 1e-3 (below range: bin 0), 1e-2 (edge -2: bin 0), 1e-1 (edge -1: bin 2), 1 (edge 0: last bin).
    assert summary.histogram_edges == (-2.0, -1.5, -1.0, -0.5, 0.0)
    assert summary.histogram_counts == (2, 0, 1, 2)
    assert summary.below_histogram == 1 and summary.dead == 1 and summary.dense == 2


def test_fvu_mse_and_shrinkage_match_direct_computation():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2500, 16, generator=g) * torch.linspace(2, 0.5, 16) + 1.0
    torch.manual_seed(0)
    sae = make_dictionary("relu", 16, 48)
    sae.init_b_dec_(x, method="mean")
    result = evaluate_reconstruction(sae, x, batch_size=333)
    recon, codes = (t.detach().double() for t in sae(x)[:2])
    xd = x.double()
    sq_err = (recon - xd).pow(2).sum()
    assert result.mse == pytest.approx(float(sq_err / 2500), rel=1e-6)
    assert result.fvu == pytest.approx(float(sq_err / (xd - xd.mean(0)).pow(2).sum()), rel=1e-6)
    assert result.cosine == pytest.approx(float(torch.cosine_similarity(recon, xd, dim=1).mean()), rel=1e-6)
    assert result.l0 == pytest.approx(float((codes != 0).sum(1).double().mean()))
    assert result.l1 == pytest.approx(float(codes.abs().sum(1).mean()), rel=1e-6)
    norms_r, norms_x = recon.norm(dim=1), xd.norm(dim=1)
    assert result.l2_ratio == pytest.approx(float((norms_r / norms_x).mean()), rel=1e-6)
    assert result.norm_ratio == pytest.approx(float(norms_r.sum() / norms_x.sum()), rel=1e-6)
    assert result.relative_reconstruction_bias == pytest.approx(
        float(recon.pow(2).sum() / (recon * xd).sum()), rel=1e-6)
    # Streaming in uneven batches from an iterator gives the same numbers.
    streamed = evaluate_reconstruction(sae, iter([x[:100], x[100:1700], x[1700:]]))
    assert streamed.fvu == pytest.approx(result.fvu, rel=1e-9) and streamed.l0 == result.l0
    capped = evaluate_reconstruction(sae, iter([x[:1500], x[1500:], x]), max_tokens=2100)
    assert capped.n_tokens == 2100
    _strict_json(result)


def test_zero_and_mean_dictionaries_give_the_fvu_of_their_definitions():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 8, generator=g) + 2.0
    xd = x.double()
    mean = evaluate_reconstruction(fit_baseline("mean", x), x)
    assert mean.fvu == pytest.approx(1.0, abs=1e-6)
    zero = evaluate_reconstruction(fit_baseline("zero", x), x)
    assert zero.fvu == pytest.approx(float(xd.pow(2).sum() / (xd - xd.mean(0)).pow(2).sum()), rel=1e-9)
    assert zero.l0 == 0 and zero.density.dead == 1
    assert zero.cosine == 0 and zero.l2_ratio == 0


def test_transcoder_rows_come_in_pairs():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(2000, 8, generator=g), torch.randn(2000, 6, generator=g)
    transcoder = make_dictionary("relu", 8, 16, d_out=6, site_in="a", site_out="b")
    by_pair = evaluate_reconstruction(transcoder, (x, y))
    by_sites = evaluate_reconstruction(transcoder, [{"a": x[:900], "b": y[:900]}, {"a": x[900:], "b": y[900:]}])
    assert by_pair.mse == pytest.approx(by_sites.mse, rel=1e-9)
    recon = transcoder(x).recon.detach().double()
    assert by_pair.mse == pytest.approx(float((recon - y.double()).pow(2).sum(1).mean()), rel=1e-6)
    with pytest.raises(MonosemanticError, match="pairs of rows"):
        evaluate_reconstruction(transcoder, x)


def test_crosscoder_rows_are_one_token_each(llama):
    torch.manual_seed(0)
    crosscoder = make_dictionary("crosscoder", 16, 64, sites=["s0", "s1"])
    x = torch.randn(2100, 2, 16)
    result = evaluate_reconstruction(crosscoder, x)
    recon = crosscoder(x).recon.detach().double()
    assert result.n_tokens == 2100
    assert result.mse == pytest.approx(float((recon - x.double()).pow(2).sum((1, 2)).mean()), rel=1e-6)
    by_sites = evaluate_reconstruction(crosscoder, {"s0": x[:, 0], "s1": x[:, 1]})
    assert by_sites.mse == pytest.approx(result.mse, rel=1e-9)
    with pytest.raises(MonosemanticError, match="splice evaluation handles single-site dictionaries only"):
        evaluate_splice(llama, crosscoder, torch.zeros(1, 4, dtype=torch.long))


def test_too_few_tokens_is_a_one_line_error():
    x = torch.randn(500, 4)
    with pytest.raises(MonosemanticError, match="at least 2,000 tokens .*; got 500") as caught:
        evaluate_reconstruction(fit_baseline("identity", x), x)
    assert "\n" not in str(caught.value)


# ----- splicing --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, LlamaForCausalLM)
    # A random model predicts nearly uniformly, where KL(p||q) and KL(q||p) agree and losses
    # barely move; sharpening its logits (this instance only) makes both distinguishable.
    with torch.no_grad():
        lm.model.model.norm.weight.mul_(30)
    return lm


@pytest.fixture(scope="module")
def windows(llama):
    windows_WS = corpus_windows(llama.tokenizer, n_windows=6, context_length=24)
    windows_WS[0, 7] = llama.tokenizer.eos_token_id  # a special token mid-window: never replaced nor scored
    return windows_WS


def _hand_log_probs(lm, windows_WS, replace_at_layer) -> tuple[list, list]:
    """Per window: float64 next-token log-probs ``[P, V]`` at the kept positions, and their targets ``[P]``.

    One window at a time (the evaluation batches them), with the hooks ``replace_at_layer(keep)``
    installs; kept positions are 1..S-2 minus special tokens, written out here from scratch.
    """
    special = set(lm.tokenizer.all_special_ids)
    log_probs, targets = [], []
    for window_S in windows_WS:
        keep = [p for p in range(1, len(window_S) - 1) if int(window_S[p]) not in special]
        handles = replace_at_layer(keep)
        try:
            with torch.no_grad():
                logits_SV = lm.model(input_ids=window_S[None]).logits[0].double()
        finally:
            for handle in handles:
                handle.remove()
        log_probs.append(torch.log_softmax(logits_SV, dim=-1)[keep])
        targets.append(window_S[[p + 1 for p in keep]])
    return log_probs, targets


def _hand_ce(log_probs, targets) -> float:
    total = sum(-float(lp.gather(1, t[:, None]).sum()) for lp, t in zip(log_probs, targets))
    return total / sum(len(t) for t in targets)


def _hand_kl(clean, run) -> float:
    """Mean KL(clean || run) over positions."""
    total = sum(float((c.exp() * (c - r)).sum()) for c, r in zip(clean, run))
    return total / sum(c.shape[0] for c in clean)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


def test_spliced_ce_matches_a_hand_computation(llama, windows):
    torch.manual_seed(1)
    sae = make_dictionary("topk", 64, 128, k=8, site_in=SITE).eval()
    result = evaluate_splice(llama, sae, windows, batch_size=4)
    layer = llama.model.model.layers[1]

    def install(keep):
        def hook(_module, _args, out):
            h_BSD = _first(out).clone()
            h_BSD[0, keep] = sae(h_BSD[0, keep]).recon
            return _with_first(out, h_BSD)
        return [layer.register_forward_hook(hook)]

    spliced, targets = _hand_log_probs(llama, windows, install)
    clean, _ = _hand_log_probs(llama, windows, lambda keep: [])
    assert result.n_tokens == sum(len(t) for t in targets) == 6 * 22 - 1
    assert result.ce_spliced == pytest.approx(_hand_ce(spliced, targets), abs=2e-5)
    assert result.ce_clean == pytest.approx(_hand_ce(clean, targets), abs=2e-5)
    assert result.kl_spliced == pytest.approx(_hand_kl(clean, spliced), rel=1e-3, abs=1e-6)
    assert abs(result.ce_spliced - result.ce_clean) > 1e-3  # the comparison is not vacuous
    assert result.delta_loss == pytest.approx(result.ce_spliced - result.ce_clean)
    assert result.loss_recovered == pytest.approx(
        (result.ce_zero - result.ce_spliced) / (result.ce_zero - result.ce_clean))
    assert result.kl_spliced > 0 and result.kl_zero > 0
    _strict_json(result)


def test_transcoder_splice_matches_a_hand_computation(llama, windows):
    torch.manual_seed(2)
    transcoder = make_dictionary("relu", 64, 96, d_out=64, skip=True, site_in="blocks.1.mlp_in",
                                 site_out="blocks.1.mlp_out").eval()
    with torch.no_grad():
        transcoder.W_skip.normal_(0, 0.2)
        transcoder.W_dec.mul_(0.5)
    result = evaluate_splice(llama, transcoder, windows, batch_size=5)
    mlp = llama.model.model.layers[1].mlp

    def install(keep):
        seen = {}

        def pre_hook(_module, args):
            seen["x"] = args[0]

        def hook(_module, _args, out):
            new_BSD = _first(out).clone()
            new_BSD[0, keep] = transcoder(seen["x"][0, keep]).recon
            return _with_first(out, new_BSD)
        return [mlp.register_forward_pre_hook(pre_hook), mlp.register_forward_hook(hook)]

    spliced, targets = _hand_log_probs(llama, windows, install)
    ce_spliced = _hand_ce(spliced, targets)
    assert (result.config.site_in, result.config.site_out) == ("blocks.1.mlp_in", "blocks.1.mlp_out")
    assert result.ce_spliced == pytest.approx(ce_spliced, abs=2e-5)
    assert abs(result.ce_spliced - result.ce_clean) > 1e-3


def test_identity_recovers_all_loss_and_zero_none(llama, windows):
    identity = fit_baseline("identity", torch.zeros(1, 64), site=SITE)
    perfect = evaluate_splice(llama, identity, windows)
    assert perfect.loss_recovered == pytest.approx(1.0, abs=1e-9) and perfect.delta_loss == pytest.approx(0, abs=1e-9)
    assert perfect.kl_spliced == pytest.approx(0, abs=1e-9) and perfect.ce_zero > perfect.ce_clean
    zero = evaluate_splice(llama, fit_baseline("zero", torch.zeros(1, 64), site=SITE), windows)
    assert zero.loss_recovered == pytest.approx(0.0, abs=1e-9)
    assert zero.ce_spliced == pytest.approx(zero.ce_zero, abs=1e-9)


def test_mean_dictionary_is_mean_ablation(llama, windows):
    mask_WS = scored_positions(windows, llama.tokenizer.all_special_ids)
    rows_ND = llama.capture(windows, [SITE])[SITE][mask_WS]
    result = evaluate_splice(llama, fit_baseline("mean", rows_ND, site=SITE), windows)
    assert result.ce_spliced == pytest.approx(result.ce_mean, abs=1e-5)
    assert result.loss_recovered_mean == pytest.approx(0.0, abs=1e-3)


def test_identity_on_mlp_neurons_of_gpt2(tiny_model_dir, windows):
    gpt2 = load_model(str(tiny_model_dir("gpt2")))
    neurons = fit_baseline("identity", torch.zeros(1, gpt2.width("blocks.2.mlp_hidden")), site="blocks.2.mlp_hidden")
    result = evaluate_splice(gpt2, neurons, windows)
    assert neurons.d_sae == 256 and result.loss_recovered == pytest.approx(1.0, abs=1e-9)


def test_scored_positions_follow_the_harvest_rule(windows):
    special = [0, 1, 2]
    mask_WS = scored_positions(windows, special)
    assert torch.equal(mask_WS[:, :-1], storable_mask(windows, special)[:, :-1])
    assert not mask_WS[:, -1].any() and not mask_WS[:, 0].any() and not mask_WS[0, 7]


@pytest.mark.parametrize("make, message", [
    (lambda: make_dictionary("relu", 32, 64, site_in=SITE), "widths 64 -> 64, but the dictionary maps 32 -> 32"),
    (lambda: make_dictionary("relu", 64, 64), "does not say where it splices"),
    (lambda: make_dictionary("relu", 64, 64, site_in="blocks.9.resid_post"), "out of range"),
])
def test_splice_errors_are_one_line(llama, windows, make, message):
    with pytest.raises(MonosemanticError, match=message) as caught:
        evaluate_splice(llama, make(), windows)
    assert "\n" not in str(caught.value)


def test_splice_from_a_corpus_records_where_windows_came_from(llama):
    identity = fit_baseline("identity", torch.zeros(1, 64), site=SITE)
    result = evaluate_splice(llama, identity, n_windows=3, context_length=16)
    windows = result.to_dict()["config"]["windows"]
    assert windows["n_windows"] == 3 and windows["corpus"]["kind"] == "stdlib" and windows["holdout"] == 0.05


# ----- stores ----------------------------------------------------------------------------------

def test_store_rows_and_windows_are_the_held_out_split(llama, tmp_path):
    store = harvest(llama, [SITE], tmp_path / "store", n_tokens=2600, context_length=24, progress=False,
                    shard_rows=24 * 40)
    identity = fit_baseline("identity", torch.zeros(1, 64), site=SITE)
    everything = evaluate_reconstruction(identity, store_rows(store, identity, split="all", batch_size=700))
    assert everything.n_tokens == len(store) == 2600 and everything.fvu == 0
    held = store_windows(store)
    windows_in_store = torch.cat([store.read_shard(i)["window_tokens"] for i in range(store.num_shards)]).long()
    expected = windows_in_store[held_out(torch.arange(windows_in_store.shape[0]), 0.05)]
    assert torch.equal(held, expected) and held.shape[0] >= 2
    # Held-out windows drawn from the same corpus are the store's held-out windows.
    assert torch.equal(corpus_windows(llama.tokenizer, n_windows=held.shape[0], context_length=24), held)
    # ...and its training windows are the store's other windows, in order.
    trained = windows_in_store[~held_out(torch.arange(windows_in_store.shape[0]), 0.05)][:10]
    assert torch.equal(corpus_windows(llama.tokenizer, n_windows=10, context_length=24, split="train"), trained)
    n_holdout = int(held_out(store.tokens().window, 0.05).sum())
    with pytest.raises(MonosemanticError, match="at least 2,000 tokens"):
        evaluate_reconstruction(identity, store_rows(store, identity))  # the held-out split is small here
    assert evaluate_reconstruction(identity, store_rows(store, identity), min_tokens=1).n_tokens == n_holdout


# ----- comparing dictionaries ------------------------------------------------------------------

def _expected_max_cosine(n: int, d: int) -> float:
    """E[max of n cosines between a fixed unit vector and independent uniform unit vectors in R^d].

    The cosine has density proportional to (1 - t^2)^((d - 3) / 2) on [-1, 1]; with G = CDF^n,
    E[max] = 1 - integral of G over [-1, 1].
    """
    t = np.linspace(-1, 1, 200_001)
    density = (1 - t**2) ** ((d - 3) / 2)
    cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(t))])
    cdf /= cdf[-1]
    g = cdf**n
    return 1 - float(np.sum((g[1:] + g[:-1]) / 2 * np.diff(t)))


def test_mmcs_with_itself_is_one_and_with_random_matches_theory():
    torch.manual_seed(0)
    sae = make_dictionary("relu", 32, 256)
    assert mmcs(sae, sae).symmetric == pytest.approx(1.0, abs=1e-6)
    shuffled = sae.W_dec.detach()[torch.randperm(256)] * 3.0  # order and scale do not matter
    assert mmcs(sae, shuffled).a_to_b == pytest.approx(1.0, abs=1e-6)
    random = fit_baseline("random", torch.zeros(1, 32), n_components=512, seed=1)
    result = mmcs(sae, random, chunk_rows=50)
    assert result.a_to_b == pytest.approx(_expected_max_cosine(512, 32), abs=0.01)
    assert result.b_to_a == pytest.approx(_expected_max_cosine(256, 32), abs=0.01)
    assert result.a is not None
    assert result.n_a == 256 and result.n_b == 512 and result.a["arch"] == "relu"
    assert mmcs(sae, -sae.W_dec.detach(), absolute=True).a_to_b == pytest.approx(1.0, abs=1e-6)
    _strict_json(result)


def test_max_cosines_do_not_depend_on_chunking():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(37, 20, generator=g), torch.randn(53, 20, generator=g)
    whole, whole_at = max_cosines(a, b)
    chunked, chunked_at = max_cosines(a, b, chunk_rows=4)
    assert torch.allclose(whole, chunked) and torch.equal(whole_at, chunked_at)
    cos = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    assert torch.allclose(whole, cos.max(1).values, atol=1e-6)


def test_stitching_classifies_constructed_dictionaries():
    g = torch.Generator().manual_seed(4)
    Q_DD = torch.linalg.qr(torch.randn(64, 64, generator=g))[0]
    small = Q_DD[:, :8].T  # 8 orthonormal directions
    children = [torch.nn.functional.normalize(small[i] + 0.3 * Q_DD[:, 8 + 2 * i + j], dim=0)
                for i in range(4) for j in range(2)]  # two refinements (cos 0.958) of each of small 0..3
    copies = [small[i] for i in range(4, 8)]
    novel = [Q_DD[:, 20 + j] for j in range(6)]  # orthogonal to every small direction
    rows = torch.stack(children + copies + novel)
    order = torch.randperm(rows.shape[0], generator=g)
    large = rows[order]
    where = {int(old): new for new, old in enumerate(order)}  # row index before shuffling -> in large
    result = stitch(small, large)
    assert (result.n_small, result.n_large, result.n_resplit, result.n_novel) == (8, 18, 12, 6)
    assert set(result.novel) == {where[i] for i in range(12, 18)}
    for i in range(4):
        assert set(result.children[i]) == {where[2 * i], where[2 * i + 1]}
    for i in range(4, 8):
        assert result.children[i] == (where[4 + i],)
    assert max(result.max_cosine[j] for j in result.novel) < 1e-5
    assert stitch(small, large, threshold=0.99).n_novel == 14  # the refinements fall below 0.99
    _strict_json(result)
