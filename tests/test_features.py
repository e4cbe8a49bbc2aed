"""Feature analysis, feature folders and the prompt view, pinned against brute-force computations."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from transformers import LlamaForCausalLM
from typer.testing import CliRunner

from monosemantic.baselines import fit_baseline
from monosemantic.cli import app
from monosemantic.data import storable_mask
from monosemantic.dictionaries import make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import corpus_windows
from monosemantic.features import (
    FeatureData,
    analyze_features,
    dictionary_fingerprint,
    prompt_view,
    render_terminal,
    site_activations,
    write_explanations,
)
from monosemantic.features.counting import InputTokenCounter
from monosemantic.features.reservoir import Reservoir
from monosemantic.models import load_model
from monosemantic.viz import prompt_html, token_spans_html

pytestmark = pytest.mark.usefixtures("one_thread")

SITE = "blocks.1.resid_post"
CONTEXT = 8  # context tokens shown per example
SETTINGS = {"n_top": 5, "n_quantiles": 4, "per_quantile": 3, "n_negative": 4, "context_tokens": CONTEXT,
            "n_logits": 6, "n_input_tokens": 5, "batch_size": 5, "progress": False}


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, LlamaForCausalLM)
    # A non-trivial final-norm scale, so the logit-lens test sees whether it is applied.
    with torch.no_grad():
        lm.model.model.norm.weight.copy_(torch.rand(64, generator=torch.Generator().manual_seed(5)) + 0.5)
    return lm


@pytest.fixture(scope="module")
def windows(llama):
    return corpus_windows(llama.tokenizer, "stdlib", n_windows=12, context_length=32)


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    return make_dictionary("topk", 64, 128, k=4, site_in=SITE)


@pytest.fixture(scope="module")
def analysed(llama, sae, windows):
    return analyze_features(llama, sae, windows, **SETTINGS)


def brute_codes(lm, dictionary, windows_WS, site=SITE):
    """Dense codes ``[W, S, F]`` of every window in one go, and the analysed-position mask ``[W, S]``."""
    with torch.no_grad():
        acts = lm.capture(windows_WS, [site])[site]
        codes = dictionary.encode(acts.reshape(-1, acts.shape[-1])).reshape(*windows_WS.shape, -1)
    return codes, storable_mask(windows_WS, lm.tokenizer.all_special_ids)


def chunk_starts(S, C=CONTEXT):
    return sorted({min(j, S - C) for j in range(0, S, C)})


def shown_slice(codes, mask, window, start, latent, C=CONTEXT):
    return (codes[window, start:start + C, latent] * mask[window, start:start + C]).tolist()


# ----- statistics -------------------------------------------------------------------------------

def test_density_max_mean_and_histogram_match_brute_force(llama, sae, windows, analysed):
    codes, mask = brute_codes(llama, sae, windows)
    rows = codes[mask]  # [N, F] analysed positions only
    assert analysed.n_tokens == rows.shape[0] < windows.numel()  # position 0 and EOS tokens excluded
    fired = 0
    for f in range(sae.d_sae):
        column = rows[:, f]
        assert analysed.density(f) == pytest.approx(float((column > 0).float().mean()))
        assert analysed.max_act(f) == pytest.approx(float(column.max()))
        assert analysed.mean_act(f) == pytest.approx(float(column.double().mean()), abs=1e-9)
        counts, edges = analysed.histogram(f)
        positive = column[column > 0].double()
        if positive.numel() == 0:
            assert (counts, edges) == ([], [0.0])
            continue
        fired += 1
        assert len(edges) == len(counts) + 1 and edges[0] == 0 and edges[-2] < float(positive.max()) <= edges[-1]
        expected = torch.histc(positive, bins=len(counts), min=edges[0], max=edges[-1])
        assert counts == expected.long().tolist()
        assert sum(counts) == int((column > 0).sum())
    assert fired > 100  # most latents fire somewhere: the checks above ran


def test_top_examples_are_the_highest_chunk_peaks(llama, sae, windows, analysed):
    codes, mask = brute_codes(llama, sae, windows)
    masked = codes.masked_fill(~mask[..., None], float("-inf"))
    starts = chunk_starts(windows.shape[1])
    peaks_WJF = torch.stack([masked[:, s:s + CONTEXT].amax(1) for s in starts], dim=1)
    for f in range(sae.d_sae):
        peaks = peaks_WJF[..., f].flatten()
        expected = torch.sort(peaks[peaks > 0], descending=True).values[:SETTINGS["n_top"]].tolist()
        examples = analysed.top_examples(f)
        assert [e.acts[e.peak] for e in examples] == pytest.approx(expected, rel=1e-5)
        for e in examples:
            assert e.tokens == windows[e.window, e.start:e.start + CONTEXT].tolist()
            assert e.acts == pytest.approx(shown_slice(codes, mask, e.window, e.start, f), abs=1e-6)


def test_quantile_examples_fall_in_their_intervals(llama, sae, windows, analysed):
    codes, mask = brute_codes(llama, sae, windows)
    Q, P = SETTINGS["n_quantiles"], SETTINGS["per_quantile"]
    n_examples = 0
    for f in range(sae.d_sae):
        top = analysed.max_act(f)
        quantiles = analysed.quantile_examples(f)
        assert len(quantiles) == Q
        firing = codes[..., f][mask & (codes[..., f] > 0)]
        for q, examples in enumerate(quantiles):
            in_interval = int(((firing >= q * top / Q) & (firing <= (q + 1) * top / Q)).sum())
            assert len(examples) <= min(P, in_interval)
            seen = set()
            for e in examples:
                assert q * top / Q - 1e-6 <= e.acts[e.peak] <= (q + 1) * top / Q + 1e-6
                assert e.acts == pytest.approx(shown_slice(codes, mask, e.window, e.start, f), abs=1e-6)
                seen.add((e.window, e.start + e.peak))
            assert len(seen) == len(examples)  # sampled without replacement
            n_examples += len(examples)
        if firing.numel():
            assert sum(map(len, quantiles)) >= 1
    assert n_examples > 3 * sae.d_sae


def test_negatives_are_chunks_where_the_latent_never_fires(llama, sae, windows, analysed):
    codes, mask = brute_codes(llama, sae, windows)
    starts = chunk_starts(windows.shape[1])
    for f in range(sae.d_sae):
        negatives = analysed.negative_examples(f)
        assert len(negatives) == SETTINGS["n_negative"]  # sparse latents leave plenty of quiet chunks
        assert len({(e.window, e.start) for e in negatives}) == len(negatives)
        for e in negatives:
            assert e.start in starts and e.peak == CONTEXT // 2
            assert all(a <= 0 for a in shown_slice(codes, mask, e.window, e.start, f))
            assert e.acts == pytest.approx(shown_slice(codes, mask, e.window, e.start, f), abs=1e-6)


def test_logit_effects_equal_an_independent_matmul(llama, sae, analysed):
    W_U = llama.model.lm_head.weight.detach()
    logits_FV = (sae.W_dec.detach() * llama.model.model.norm.weight.detach()) @ W_U.T
    n = SETTINGS["n_logits"]
    for f in (0, 17, 127):
        promoted, suppressed = analysed.logit_effects(f)
        up, down = torch.topk(logits_FV[f], n), torch.topk(logits_FV[f], n, largest=False)
        assert [i for i, _ in promoted] == up.indices.tolist()
        assert [v for _, v in promoted] == pytest.approx(up.values.tolist(), rel=1e-4)
        assert [i for i, _ in suppressed] == down.indices.tolist()
        assert [v for _, v in suppressed] == pytest.approx(down.values.tolist(), rel=1e-4)
        assert all(isinstance(analysed.token_str(i), str) for i, _ in promoted + suppressed)


def test_logit_effects_of_a_neuron_site_go_through_the_down_projection(llama, windows):
    torch.manual_seed(1)
    relu = make_dictionary("relu", 128, 16, site_in="blocks.1.mlp_hidden")
    data = analyze_features(llama, relu, windows[:2], **{**SETTINGS, "n_logits": 3})
    W_down = llama.model.model.layers[1].mlp.down_proj.weight.detach()
    logits_FV = ((relu.W_dec.detach() @ W_down.T) * llama.model.model.norm.weight.detach()) @ \
        llama.model.lm_head.weight.detach().T
    assert [i for i, _ in data.logit_effects(3)[0]] == torch.topk(logits_FV[3], 3).indices.tolist()


def test_input_tokens_equal_brute_force_counts(llama, sae, windows, analysed):
    codes, mask = brute_codes(llama, sae, windows)
    assert analysed.meta["input_tokens_exact"] is True
    for f in range(0, sae.d_sae, 7):
        fires = mask & (codes[..., f] > 0)
        counts, sums = collections.Counter(), collections.defaultdict(float)
        for token, act in zip(windows[fires].tolist(), codes[..., f][fires].tolist()):
            counts[token] += 1
            sums[token] += act
        expected = sorted(counts, key=lambda t: (-counts[t], t))[:SETTINGS["n_input_tokens"]]
        got = analysed.top_input_tokens(f)
        assert [t for t, _, _ in got] == expected
        assert [n for _, n, _ in got] == [counts[t] for t in expected]
        assert [m for _, _, m in got] == pytest.approx([sums[t] / counts[t] for t in expected], rel=1e-5)


def test_input_token_table_past_its_cap_keeps_lower_bounds():
    counter = InputTokenCounter(2, 10, max_pairs=3, keep_per_latent=1)
    counter.add(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([4, 4, 5, 6, 7]), torch.ones(5))
    counter.flush()  # 4 pairs > 3: each latent keeps its most frequent token
    assert counter.exact is False and counter.keys.tolist() == [4, 16]
    counter.add(torch.tensor([0, 0]), torch.tensor([5, 5]), torch.full((2,), 3.0))
    ids, counts, means = counter.top(2)
    assert ids.tolist() == [[4, 5], [6, -1]]
    assert counts[0].tolist() == [2, 2] and means[0].tolist() == [1.0, 3.0]  # token 5 fired 3 times: a lower bound


def test_reservoir_keeps_the_largest_keys_and_merges_bins_by_key():
    codes_BSF = torch.arange(12.0).reshape(1, 12, 1)  # activation = position
    fine = Reservoir(4, 2, 3)  # one latent with 4 bins of 2 slots, 3 context tokens
    key_RM = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, -float("inf")], [0.3, 0.4, 0.7], [0.6, 0.05, 0.35]])
    start_RM = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]])
    fine.offer(torch.arange(4), key_RM, torch.zeros(4, 3, dtype=torch.int64), start_RM,
               torch.ones(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), codes_BSF, 10)
    assert torch.equal(fine.key_RK, torch.tensor([[0.9, 0.5], [0.8, 0.2], [0.7, 0.4], [0.6, 0.35]]))
    assert fine.start_RK.tolist() == [[1, 2], [3, 4], [8, 7], [9, 1]] and fine.window_RK.unique().tolist() == [10]
    fine.merge_pairs(torch.tensor([0]), 4)  # the range doubled: bins (0, 1) -> 0, (2, 3) -> 1
    assert torch.equal(fine.key_RK[:2], torch.tensor([[0.9, 0.8], [0.7, 0.6]]))
    assert fine.start_RK[:2].tolist() == [[1, 3], [8, 9]]
    assert fine.acts_RKC[1].tolist() == [[8.0, 9.0, 10.0], [9.0, 10.0, 11.0]]  # each slot keeps its own slice
    assert fine.window_RK[2:].tolist() == [[-1, -1], [-1, -1]] and torch.isinf(fine.key_RK[2:]).all()


def test_identity_baseline_codes_are_the_activations(llama, windows):
    identity = fit_baseline("identity", torch.zeros(1, 64), site=SITE)
    data = analyze_features(llama, identity, windows[:6], **SETTINGS)
    codes, mask = brute_codes(llama, identity, windows[:6])
    rows = codes[mask]
    for f in (0, 9, 63):
        assert data.mean_act(f) == pytest.approx(float(rows[:, f].double().mean()), abs=1e-6)  # signed codes
        assert data.density(f) == pytest.approx(float((rows[:, f] > 0).float().mean()))
        assert data.top_examples(f)[0].acts[data.top_examples(f)[0].peak] == pytest.approx(float(rows[:, f].max()))
        # Neurons are busy: negatives topped up with the quietest chunks, which are listed all the same.
        assert len(data.negative_examples(f)) == SETTINGS["n_negative"]


def test_analysis_is_deterministic_and_batch_size_independent(llama, sae, windows, analysed):
    again = analyze_features(llama, sae, windows, **{**SETTINGS, "batch_size": 12})
    for f in (3, 50):
        for one, other in zip(again.top_examples(f), analysed.top_examples(f), strict=True):
            assert one[:3] == other[:3] and one.peak == other.peak and one.acts == pytest.approx(other.acts)
        assert again.histogram(f) == analysed.histogram(f)
        assert [t[:2] for t in again.top_input_tokens(f)] == [t[:2] for t in analysed.top_input_tokens(f)]


def test_activations_captured_once_give_the_same_analysis(llama, sae, windows, analysed):
    acts_WSD = site_activations(llama, SITE, windows, batch_size=5)
    shared = analyze_features(llama, sae, windows, **SETTINGS, acts_WSD=acts_WSD)
    for name, table in analysed.tables.items():
        assert torch.equal(shared.tables[name], table), name
    # Activations of other windows (here, the wrong count) are refused, not silently analysed.
    with pytest.raises(MonosemanticError, match="acts_WSD has shape"):
        analyze_features(llama, sae, windows, **SETTINGS, acts_WSD=acts_WSD[:-1])


# ----- the folder ------------------------------------------------------------------------------

def test_save_load_round_trip(llama, analysed, sae, tmp_path):
    analysed.save(tmp_path / "features")
    loaded = FeatureData.load(tmp_path / "features")
    assert loaded.meta == json.loads(json.dumps(analysed.meta))
    assert loaded.meta["fingerprint"] == dictionary_fingerprint(sae)
    assert torch.equal(loaded.windows, analysed.windows)
    for f in range(0, 128, 11):
        for name in ("density", "max_act", "mean_act", "histogram", "top_examples", "quantile_examples",
                     "negative_examples", "logit_effects", "top_input_tokens"):
            assert getattr(loaded, name)(f) == getattr(analysed, name)(f), name
    assert loaded.latent_order("density") == analysed.latent_order("density")
    densities = [loaded.density(f) for f in loaded.latent_order("density")]
    assert densities == sorted(densities, reverse=True)
    assert loaded.latent_order("max")[0] == max(range(128), key=loaded.max_act)
    ids = analysed.windows[0].tolist()
    assert "".join(loaded.tokens_str(ids)) == llama.tokenizer.decode(ids)


def test_bad_feature_folders_and_indices_are_explained(analysed, tmp_path):
    with pytest.raises(MonosemanticError, match="not a feature folder"):
        FeatureData.load(tmp_path)
    (tmp_path / "features.json").write_text('{"format": "something else"}')
    with pytest.raises(MonosemanticError, match="not a feature folder"):
        FeatureData.load(tmp_path)
    analysed.save(tmp_path / "f")
    (tmp_path / "f" / "latents.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MonosemanticError, match="not a feature folder"):
        FeatureData.load(tmp_path / "f")
    for bad in (-1, 128, 2.0):
        with pytest.raises(MonosemanticError, match="out of range"):
            analysed.top_examples(bad)
    with pytest.raises(MonosemanticError, match="order latents"):
        analysed.latent_order("alphabet")


def test_explanations_are_merged_and_refused_for_another_dictionary(analysed, sae, tmp_path):
    folder = tmp_path / "features"
    analysed.save(folder)
    write_explanations(folder, {3: "Python keywords"}, {3: {"detection": 0.75}},
                       fingerprint=dictionary_fingerprint(sae))
    write_explanations(folder, {5: "indentation"}, {3: {"fuzzing": float("nan")}}, source="llm")
    loaded = FeatureData.load(folder)
    assert loaded.explanation(3) == "Python keywords" and loaded.explanation(5) == "indentation"
    assert loaded.score(3) == {"detection": 0.75, "fuzzing": None} and loaded.explanation(4) is None
    other = make_dictionary("topk", 64, 128, k=4, site_in=SITE)
    with pytest.raises(MonosemanticError, match="another dictionary"):
        write_explanations(folder, {1: "x"}, fingerprint=dictionary_fingerprint(other))
    with pytest.raises(MonosemanticError, match="out of range"):
        write_explanations(folder, {128: "x"})
    with pytest.raises(MonosemanticError, match="not a feature folder"):
        write_explanations(tmp_path, {1: "x"})
    # An explanations file left from another dictionary's analysis is not merged into.
    data = json.loads((folder / "explanations.json").read_text())
    (folder / "explanations.json").write_text(json.dumps({**data, "fingerprint": "0" * 64}))
    with pytest.raises(MonosemanticError, match="another dictionary"):
        write_explanations(folder, {1: "x"})


# ----- the prompt view -------------------------------------------------------------------------

PROMPT = "def add(a, b):\n    return a + b  # <script>alert(1)</script> & more"


def test_prompt_view_ranks_features_and_neurons_like_brute_force(llama, sae):
    view = prompt_view(llama, sae, PROMPT, top_n=4)
    ids = llama.tokenizer(PROMPT, return_tensors="pt").input_ids
    assert view.token_ids == ids[0].tolist() and "".join(view.tokens) == PROMPT
    codes, mask = brute_codes(llama, sae, ids)
    codes, acts = codes[0] * mask[0, :, None], llama.capture(ids, [SITE])[SITE][0] * mask[0, :, None]
    expected = torch.topk(codes.sum(0), 4)
    assert [r.index for r in view.features] == expected.indices.tolist()
    assert [r.total for r in view.features] == pytest.approx(expected.values.tolist(), rel=1e-5)
    assert view.features[0].acts == pytest.approx(codes[:, expected.indices[0]].tolist(), abs=1e-6)
    neurons = torch.topk(acts.abs().sum(0), 4).indices
    assert [r.index for r in view.neurons] == neurons.tolist()
    assert view.neurons[1].acts == pytest.approx(acts[:, neurons[1]].tolist(), abs=1e-6)
    assert view.analysed[0] is False and view.features[0].acts[0] == 0.0


def test_prompt_html_escapes_tokens_and_carries_exact_activations(llama, sae):
    view = prompt_view(llama, sae, PROMPT, top_n=3)
    page = prompt_html(view)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; more" in page
    row = view.features[0]
    spans = token_spans_html(view.tokens, row.acts, max(abs(a) for a in row.acts), latent=row.index)
    assert spans in page and f'data-latent="{row.index}"' in page
    assert spans.count('class="tok"') == len(view.tokens)
    peak = max(range(len(row.acts)), key=lambda i: row.acts[i])
    assert f'data-act="{row.acts[peak]!r}" data-latent="{row.index}" style="background: rgba(255, 115, 0, 1.000)"' \
        in spans


def test_prompt_terminal_rendering_shows_every_row(llama, sae):
    from rich.console import Console

    view = prompt_view(llama, sae, "x = [1, 2, 3]", top_n=2)
    console = Console(record=True, width=160, color_system="truecolor")
    render_terminal(view, console)
    text = console.export_text()
    for row in view.features + view.neurons:
        assert str(row.index) in text
    assert "on #" in console.export_html(inline_styles=True) or "background-color" in console.export_html()


def test_prompt_errors(llama, sae):
    with pytest.raises(MonosemanticError, match="reads at most 256"):
        prompt_view(llama, sae, "word " * 400)
    with pytest.raises(MonosemanticError, match="empty"):
        prompt_view(llama, sae, "   ")
    with pytest.raises(MonosemanticError, match="top_n"):
        prompt_view(llama, sae, "x", top_n=0)


# ----- the command line ------------------------------------------------------------------------

def test_cli_features_and_prompt(tiny_model_dir, tmp_path):
    torch.manual_seed(3)
    saved = save_dictionary(make_dictionary("topk", 64, 32, k=2, site_in=SITE, model=str(tiny_model_dir("llama"))),
                            tmp_path / "sae")
    runner = CliRunner()
    result = runner.invoke(app, ["features", str(saved), "--windows", "4", "--context", "32"])
    assert result.exit_code == 0, result.output
    data = FeatureData.load(saved / "features")
    assert data.n_latents == 32 and data.windows.shape == (4, 32)
    result = runner.invoke(app, ["prompt", str(saved), "a <b> c", "--top", "3", "--html", str(tmp_path / "v.html")])
    assert result.exit_code == 0, result.output
    assert "&lt;b&gt;" in (tmp_path / "v.html").read_text()
    result = runner.invoke(app, ["prompt", str(saved), "word " * 400])
    assert result.exit_code == 2 and "reads at most 256" in result.output
