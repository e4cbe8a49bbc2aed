"""Labelled token tasks, probes and clusters: labels pinned on known source, probes on planted structure."""

from __future__ import annotations

import json
import keyword

import pytest
import torch

from monosemantic.baselines import fit_baseline
from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import (
    PYTHON_CATEGORIES,
    LabelledRows,
    cluster_codes,
    corpus_windows,
    labelled_activations,
    labelled_windows,
    labels_from_spans,
    labels_from_tokens,
    probe_dictionaries,
    python_token_labels,
)
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _strict_json(result) -> dict:
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


def _labelled(tokenizer, text):
    ids_T, labels_T = python_token_labels(tokenizer, text)
    return [(tokenizer.decode([i]), PYTHON_CATEGORIES[c] if c >= 0 else None)
            for i, c in zip(ids_T.tolist(), labels_T.tolist())]


# ----- labels ----------------------------------------------------------------------------------

SOURCE = 'def area(r):\n    # circle\n    return f"{r}" + 3.14 * r  # ok\n'


def test_python_labels_of_known_source(smol_tokenizer):
    assert _labelled(smol_tokenizer, SOURCE) == [
        ("def", "keyword"), (" area", "name"), ("(", "operator"), ("r", "name"), ("):", "operator"),
        ("\n   ", "whitespace"),  # newline + indent: no non-space character, so whitespace
        (" #", "comment"), (" circle", "comment"), ("\n   ", "whitespace"), (" return", "keyword"),
        # an f-string is a string whole, the name inside its braces included
        (" f", "string"), ('"{', "string"), ("r", "string"), ('}"', "string"),
        (" +", "operator"), (" ", "whitespace"), ("3", "number"), (".", "number"), ("1", "number"), ("4", "number"),
        (" *", "operator"), (" r", "name"), (" ", "whitespace"), (" #", "comment"), (" ok", "comment"),
        ("\n", "whitespace")]


def test_python_labels_stop_at_a_tokenize_error(smol_tokenizer):
    pairs = _labelled(smol_tokenizer, 'x = 1\ns = """never closed\nmore text\n')
    assert pairs[:7] == [("x", "name"), (" =", "operator"), (" ", "whitespace"), ("1", "number"),
                         ("\n", "whitespace"), ("s", "name"), (" =", "operator")]
    assert [label for _, label in pairs[7:]] == [None] * (len(pairs) - 7)  # from the error on: unlabelled


def test_labelled_windows_are_the_corpus_windows(smol_tokenizer):
    windows_WS, labels_WS = labelled_windows(smol_tokenizer, 4, 48)
    assert torch.equal(windows_WS, corpus_windows(smol_tokenizer, n_windows=4, context_length=48))
    assert (labels_WS[:, 0] == -1).all()  # the attention sink is never a probing row
    assert (labels_WS[windows_WS == smol_tokenizer.eos_token_id] == -1).all()  # separators
    assert (labels_WS[:, 1:] >= 0).float().mean() > 0.9 and int(labels_WS.max()) < len(PYTHON_CATEGORIES)
    keywords = labels_WS == PYTHON_CATEGORIES.index("keyword")
    assert keywords.any()
    assert all(keyword.iskeyword(smol_tokenizer.decode([int(t)]).strip()) for t in windows_WS[keywords])


def test_bring_your_own_labels(smol_tokenizer):
    text = "The cat sat on the mat."
    ids_T, labels_T = labels_from_spans(smol_tokenizer, text, [(4, 7, "animal"), (19, 22, "thing")],
                                        names=["animal", "thing"])
    tokens = [smol_tokenizer.decode([i]) for i in ids_T.tolist()]
    assert dict(zip(tokens, labels_T.tolist())) == {"The": -1, " cat": 0, " sat": -1, " on": -1, " the": -1,
                                                     " mat": 1, ".": -1}
    same_ids, same_labels = labels_from_tokens(smol_tokenizer, text, [-1, "animal", -1, -1, -1, "thing", -1],
                                               names=["animal", "thing"])
    assert torch.equal(same_ids, ids_T) and torch.equal(same_labels, labels_T)


@pytest.mark.parametrize("call, message", [
    (lambda t: labels_from_tokens(t, "The cat sat", [0, 1]), "got 2 labels for 3 tokens"),
    (lambda t: labels_from_spans(t, "The cat", [(0, 5, 0), (4, 7, 1)]), "overlaps an earlier span"),
    (lambda t: labels_from_spans(t, "The cat", [(4, 70, 0)]), "not inside the text's 7 characters"),
    (lambda t: labels_from_spans(t, "The cat", [(4, 7, "dog")]), "label 'dog' is not a known class name"),
])
def test_misaligned_labels_are_one_line_errors(smol_tokenizer, call, message):
    with pytest.raises(MonosemanticError, match=message) as caught:
        call(smol_tokenizer)
    assert "\n" not in str(caught.value)


# ----- probing on planted structure --------------------------------------------------------------

def _planted(n=1500, d=16, seed=0):
    """Rows whose class is written on one coordinate each: class 1 on coordinate 5, class 2 on 9."""
    g = torch.Generator().manual_seed(seed)
    y_N = torch.randint(0, 3, (n,), generator=g)
    x_ND = torch.randn(n, d, generator=g)
    x_ND[:, 5] += 4 * (y_N == 1)
    x_ND[:, 9] += 4 * (y_N == 2)
    windows_N = torch.arange(n) // 30  # 50 windows of 30 tokens
    return x_ND, y_N, windows_N


def test_k_sparse_probes_find_the_planted_latents():
    x_ND, y_N, windows_N = _planted()
    dictionaries = {"neurons": fit_baseline("identity", x_ND), "random": fit_baseline("random", x_ND, seed=1)}
    result = probe_dictionaries(dictionaries, x_ND, y_N, windows_N, ks=(1, 2), classes=["none", "one", "two"])
    assert result.n_train + result.n_test == 1500 and result.n_test_windows == round(0.25 * 50)
    assert result.score("neurons", 1, "one").latents == (5,) and result.score("neurons", 1, "two").latents == (9,)
    assert result.score("neurons", 1, "one").f1 > 0.95 and result.score("neurons", 1, "two").f1 > 0.95
    # "none" is told by the absence of 5 or 9, so the union of the top-1 latents is {5, 9}.
    assert result.score("neurons", 1).accuracy > 0.95 and result.score("neurons", 1).latents == (5, 9)
    # Random directions spread each class over every latent: one latent cannot read it.
    assert result.score("random", 1).accuracy < result.score("neurons", 1).accuracy - 0.1
    assert result.score("activations").accuracy > 0.95  # the full probes read everything
    assert result.score("neurons").accuracy == pytest.approx(result.score("activations").accuracy, abs=0.01)
    majority = result.score("majority")
    assert 0.3 < majority.accuracy < 0.4 and majority.n_features == 0
    payload = _strict_json(result)
    assert payload["classes"] == ["none", "one", "two"] and payload["config"]["ks"] == [1, 2]
    with pytest.raises(MonosemanticError, match="no probe"):
        result.score("neurons", 7)


def test_shuffled_labels_probe_at_chance():
    x_ND, y_N, windows_N = _planted()
    shuffled_N = y_N[torch.randperm(y_N.numel(), generator=torch.Generator().manual_seed(3))]
    result = probe_dictionaries({}, x_ND, shuffled_N, windows_N, ks=(1,))
    assert result.score("activations").accuracy < result.score("majority").accuracy + 0.05


def test_probing_input_errors_are_one_line():
    x_ND, y_N, windows_N = _planted(n=200)
    for call, message in [
        (lambda: probe_dictionaries({}, x_ND, y_N[:-1], windows_N), r"labels of shape \(199,\) for 200 tokens"),
        (lambda: probe_dictionaries({}, x_ND, y_N, torch.zeros(200, dtype=torch.long)), "from 1 window"),
        (lambda: probe_dictionaries({}, x_ND, y_N, windows_N, ks=(0,)), "ks=.* is invalid"),
        (lambda: probe_dictionaries({}, x_ND, y_N, windows_N, classes=["a"]), "label 2 has no name"),
        (lambda: probe_dictionaries({"wide": fit_baseline("identity", torch.randn(4, 8))}, x_ND, y_N, windows_N),
         "reads \\[tokens, 8\\] rows"),
    ]:
        with pytest.raises(MonosemanticError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


# ----- a real model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_rows(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("llama")))
    windows_WS, labels_WS = labelled_windows(lm.tokenizer, 24, 48)
    return lm, windows_WS, labelled_activations(lm, "blocks.1.resid_post", windows_WS, labels_WS)


def test_probing_python_categories_on_a_tiny_model(python_rows):
    lm, windows_WS, rows = python_rows
    assert rows.acts_ND.shape == (rows.labels_N.numel(), 64) and (rows.position_N > 0).all()
    # Each row is the activation at its (window, position), read from one forward of that window.
    for n in (0, rows.labels_N.numel() // 2, -1):
        w, p = int(rows.window_N[n]), int(rows.position_N[n])
        by_hand_D = lm.capture(windows_WS[w:w + 1], ["blocks.1.resid_post"])["blocks.1.resid_post"][0, p]
        torch.testing.assert_close(rows.acts_ND[n], by_hand_D)
    x_ND = rows.acts_ND
    dictionaries = {"neurons": fit_baseline("identity", x_ND), "pca": fit_baseline("pca", x_ND, n_components=16),
                    "ica": fit_baseline("ica", x_ND, n_components=16),
                    "sae": make_dictionary("topk", 64, 256, k=8, site_in="blocks.1.resid_post")}
    result = probe_dictionaries(dictionaries, x_ND, rows.labels_N, rows.window_N, ks=(1, 5),
                                classes=PYTHON_CATEGORIES, max_iter=100)
    names = {s.name for s in result.scores}
    assert names == {"majority", "activations", "neurons", "pca", "ica", "sae"}
    targets = {s.target for s in result.scores}
    assert "overall" in targets and {"keyword", "name", "operator"} <= targets <= {"overall", *PYTHON_CATEGORIES}
    # Even a random model keeps token identity, from which the category mostly follows.
    assert result.score("activations").accuracy > result.score("majority").accuracy + 0.05
    assert result.score("sae", 5).n_features <= 5 * len(PYTHON_CATEGORIES)
    assert set(result.dictionaries) == set(dictionaries) and result.dictionaries["sae"]["arch"] == "topk"
    _strict_json(result)


# ----- clustering --------------------------------------------------------------------------------

def test_clusters_recover_planted_groups(python_rows):
    lm, windows_WS, rows = python_rows
    g = torch.Generator().manual_seed(0)
    # Activations that are their label (one-hot, far apart) plus a little noise: KMeans must find the labels.
    acts_ND = 10 * torch.nn.functional.one_hot(rows.labels_N, 64).float() + 0.1 * torch.randn(
        rows.labels_N.numel(), 64, generator=g)
    planted = LabelledRows(acts_ND, rows.labels_N, rows.window_N, rows.position_N)
    n_classes = int(rows.labels_N.unique().numel())
    for dictionary in (None, fit_baseline("identity", acts_ND)):
        result = cluster_codes(dictionary, planted, windows_WS, lm.tokenizer, classes=PYTHON_CATEGORIES,
                               n_clusters=n_classes, n_examples=3)
        assert result.purity == 1.0 and result.nmi == pytest.approx(1.0)
        assert sum(c.size for c in result.clusters) == result.n_tokens == rows.labels_N.numel()
        assert {c.majority_label for c in result.clusters} == {PYTHON_CATEGORIES[c] for c in
                                                                rows.labels_N.unique().tolist()}
    biggest = result.clusters[0]
    assert biggest.size == max(c.size for c in result.clusters)
    for example in biggest.examples:
        assert f"«{example.token}»" in example.context and example.label == biggest.majority_label
        assert lm.tokenizer.decode([int(windows_WS[example.window, example.position])]) == example.token
    assert biggest.top_tokens[0][1] >= biggest.top_tokens[-1][1]
    _strict_json(result)


def test_random_codes_cluster_worse_than_planted(python_rows):
    lm, windows_WS, rows = python_rows
    noise = LabelledRows(torch.randn(rows.acts_ND.shape, generator=torch.Generator().manual_seed(1)),
                         rows.labels_N, rows.window_N, rows.position_N)
    result = cluster_codes(None, noise, windows_WS, lm.tokenizer, n_clusters=5, n_init=1)
    assert result.nmi < 0.1
    with pytest.raises(MonosemanticError, match="outside the 2 windows"):
        cluster_codes(None, noise, windows_WS[:2], lm.tokenizer, n_clusters=5)
