"""Evidence that holds up: any corpus, contextual tasks, the held-out rule, controls and the judge check.

Everything runs on real components: the SmolLM2 tokenizer, tiny random models, the standard
library as corpus, prose written to a real file.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase
from typer.testing import CliRunner

from monosemantic.autointerp import AutointerpResult, LatentScore, judge_check
from monosemantic.baselines import fit_baseline
from monosemantic.cli import app
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import (
    probe_tasks,
    read_labels,
    resolve_corpus,
    select_tasks,
    task_windows,
    training_record,
)

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

PROSE = """The old lighthouse keeper climbed the stairs every evening. Did he ever tire of the view? \
Nobody in the village (not even his sister) knew the answer. "The sea changes," he would say, "and so do I."
  Some nights the fog rolled in so thick that the beam vanished (as if swallowed) before it reached the rocks.
Why would anyone choose such a life? The children asked it often, and the keeper only smiled.
[The logbook, kept in a drawer, recorded every ship that passed.] "Forty years," his sister said once.
"""


def _prose_file(tmp_path, paragraphs: int = 60):
    # Varied copies, so windows differ; every paragraph has questions, quotes and brackets.
    text = "\n\n".join(PROSE.replace("evening", f"evening {i}").replace("Forty", f"Forty-{i}")
                       for i in range(paragraphs))
    path = tmp_path / "prose.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _trained_on_stdlib(context: int = 64) -> dict:
    from monosemantic.data import StdlibSource

    return {"kind": "store", "corpus": StdlibSource().describe(), "context_length": context, "prepend_bos": False,
            "split": "train", "holdout": 0.05}


def test_a_planted_contextual_feature_is_found_by_a_k1_probe(smol_tokenizer):
    corpus = resolve_corpus("stdlib", context_length=64)
    data = task_windows(smol_tokenizer, corpus, select_tasks(["in_docstring", "in_call_args"]), 48)
    n = int(data.keep_WS.sum())
    generator = torch.Generator().manual_seed(0)
    acts_ND = torch.randn(n, 16, generator=generator)
    docstring_N = (data.labels["in_docstring"][data.keep_WS] == 1).float()
    acts_ND[:, 5] += 3 * docstring_N  # one neuron tracks the context, not the token
    neurons = fit_baseline("identity", acts_ND)
    result = probe_tasks({"neurons": (neurons, acts_ND), "activations": (None, acts_ND)}, data,
                         corpus=corpus.to_dict())
    found = {(s.task, s.name, s.k): s for s in result.scores}
    planted = found[("in_docstring", "neurons", 1)]
    assert planted.latents == (5,) and planted.auroc > 0.95 and planted.balanced_accuracy > 0.85
    other = found[("in_call_args", "neurons", 1)]
    assert other.auroc < 0.7  # noise carries no other context
    assert found[("in_docstring", "activations", None)].auroc > 0.95


def test_tasks_on_prose_skip_python_contexts_and_say_why(smol_tokenizer, tmp_path):
    corpus = resolve_corpus(str(_prose_file(tmp_path)), trained_on=_trained_on_stdlib())
    assert corpus.split == "all" and corpus.context_length == 64 and corpus.corpus["kind"] == "local"
    data = task_windows(smol_tokenizer, corpus, select_tasks(), 24)
    in_question = data.labels["in_question"]
    assert (in_question == 1).any() and (in_question == 0).any()
    # Prose does not parse as Python: the ast contexts are unlabelled, not negative.
    assert (data.labels["in_def_signature"] == -1).all()
    result = probe_tasks({"activations": (None, torch.randn(int(data.keep_WS.sum()), 8))}, data,
                         corpus=corpus.to_dict(), min_examples=5)
    scored = {t.name for t in result.tasks}
    assert {"in_question", "in_parentheses", "in_double_quotes"} <= scored
    assert "in_def_signature" not in scored and dict(result.skipped)["in_def_signature"].startswith("needs >= 5")


def test_the_random_model_control_really_is_reinitialised(tiny_model_dir):
    from monosemantic.models import load_model, randomly_initialised

    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, LlamaForCausalLM) and isinstance(lm.tokenizer, PreTrainedTokenizerBase)
    control = randomly_initialised(lm, seed=3)
    assert control.name.endswith("@random-init-3") and control.tokenizer is lm.tokenizer
    trained, fresh = dict(lm.model.named_parameters()), dict(control.model.named_parameters())
    assert trained.keys() == fresh.keys()
    matrices = [name for name, p in trained.items() if p.ndim == 2]
    assert matrices and all(not torch.equal(trained[n], fresh[n]) for n in matrices)
    # Drawn by the class's own initialiser: normal with the config's initializer_range.
    std = lm.model.config.initializer_range
    assert fresh["model.layers.0.mlp.up_proj.weight"].std().item() == pytest.approx(std, rel=0.1)
    again = load_model(f"{tiny_model_dir('llama')}@random-init-3")
    assert all(torch.equal(p, dict(again.model.named_parameters())[n]) for n, p in fresh.items())
    other = randomly_initialised(lm, seed=4)
    assert not torch.equal(fresh["model.embed_tokens.weight"], dict(other.model.named_parameters())[
        "model.embed_tokens.weight"])
    ids = lm.tokenizer("def f(x):\n    return x", return_tensors="pt").input_ids
    assert not torch.allclose(lm.capture(ids, ["blocks.1.resid_post"])["blocks.1.resid_post"],
                              control.capture(ids, ["blocks.1.resid_post"])["blocks.1.resid_post"])
    with pytest.raises(MonosemanticError, match="already a randomly initialised"):
        randomly_initialised(control, 0)


def _latents(values):
    return tuple(LatentScore(i, "x", "offline", "offline", v, v, v, v, 10, 10, "") for i, v in enumerate(values))


def _result(name, values):
    return AutointerpResult(name, {}, {}, _latents(values), float(np.mean(values)), float(np.mean(values)),
                            float(np.mean(values)), float(np.mean(values)), len(values), len(values))


def test_the_judge_check_fires_on_a_judge_that_scores_random_latents_highest():
    rng = np.random.default_rng(0)
    trained = _result("sae", list(0.60 + 0.05 * rng.standard_normal(40)))
    # A judge that favours random directions: the untrained copy scores highest.
    untrained = _result("untrained", list(0.80 + 0.05 * rng.standard_normal(40)))
    random_model = _result("random-model", list(0.58 + 0.05 * rng.standard_normal(40)))
    check = judge_check({"sae": trained, "untrained": untrained, "random-model": random_model}, "sae",
                        ["untrained", "random-model"])
    assert not check.separates and "cannot separate sae" in check.message and "untrained" in check.message
    assert "no verdict" in check.message
    honest = judge_check({"sae": _result("sae", list(0.9 + 0.02 * rng.standard_normal(40))), "untrained": untrained,
                          "random-model": random_model}, "sae", ["untrained", "random-model"])
    assert honest.separates and "above every control" in honest.message
    with pytest.raises(MonosemanticError, match="missing"):
        judge_check({"sae": trained}, "sae", ["untrained"])


def test_labels_file_bad_input(tmp_path, smol_tokenizer):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"text": "hello world", "label": "a"}) + "\n"
                    + json.dumps({"text": "good night", "label": "a"}) + "\n")
    corpus = resolve_corpus(str(path), trained_on=_trained_on_stdlib(8))
    with pytest.raises(MonosemanticError, match="one class"):
        task_windows(smol_tokenizer, corpus, (), 1, labelled=read_labels(path))
    path.write_text(json.dumps({"text": "hello world", "spans": [[1, 4, "x"]]}) + "\n"
                    + json.dumps({"text": "good night", "spans": [[0, 4, "y"]]}) + "\n")
    with pytest.raises(MonosemanticError, match="token boundaries"):
        task_windows(smol_tokenizer, corpus, (), 1, labelled=read_labels(path))
    path.write_text('{"text": 3}\n')
    with pytest.raises(MonosemanticError, match="needs a string"):
        read_labels(path)
    with pytest.raises(MonosemanticError, match="does not exist; expected a family"):
        select_tasks(["in_docstrings"])


def test_labels_file_spans_become_token_tasks(tmp_path, smol_tokenizer):
    rows = []
    for i in range(40):
        text = f"Report {i}: the price rose to {i} dollars while the weather stayed cold in town number {i}."
        start = text.index("price")
        rows.append({"text": text, "spans": [[start, start + len("price rose"), "money"],
                                             [text.index("weather"), text.index("weather") + 7, "sky"]]})
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    corpus = resolve_corpus(str(path), trained_on=_trained_on_stdlib(32))
    data = task_windows(smol_tokenizer, corpus, (), 20, labelled=read_labels(path))
    assert set(data.labels) == {"span=money", "span=sky"}
    words = [smol_tokenizer.decode([t]) for t in data.windows_WS[data.labels["span=money"] == 1].tolist()]
    assert set(w.strip() for w in words) == {"price", "rose"}


def test_evaluate_scores_a_prose_corpus_and_names_it(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    store = tmp_path / "store"
    assert runner.invoke(app, ["harvest", "--model", model, "--site", "blocks.1.resid_post", "--tokens", "3000",
                               "--context", "64", "--out", str(store)]).exit_code == 0
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--arch", "topk",
                                 "--expansion", "2", "--option", "k=4", "--tokens", "2048", "--batch-size", "256"])
    assert result.exit_code == 0, result.output
    sae = tmp_path / "run" / "topk_k4_x2"
    record = training_record(sae)
    assert record is not None
    assert record["kind"] == "store" and record["corpus"]["kind"] == "stdlib" and record["context_length"] == 64
    prose = _prose_file(tmp_path)
    result = runner.invoke(app, ["evaluate", str(sae), "--corpus", str(prose), "--windows", "16", "--probe-windows",
                                 "24", "--min-tokens", "500", "--tasks", "reconstruction,tasks,probing,clustering",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "corpus: prose.txt" in result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    suite = report["suite"]
    assert suite["corpus"]["corpus"]["path"] == str(prose.resolve()) and suite["corpus"]["split"] == "all"
    scored = {t["name"] for t in suite["task_probing"]["tasks"]}
    assert "in_question" in scored and not scored & {t.name for t in select_tasks(["python"])}
    assert suite["ran"] == ["reconstruction", "tasks"]  # token categories and clustering need Python code
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "Corpus: prose.txt" in markdown and "Contextual tasks scored" in markdown
    assert "clustering skipped" in markdown
    # The training corpus itself: only held-out windows, in the training context length.
    result = runner.invoke(app, ["evaluate", str(sae), "--context", "32", "--tasks", "reconstruction"])
    assert result.exit_code == 2 and "use --context 64" in result.output
    result = runner.invoke(app, ["evaluate", str(sae), "--corpus", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_too_few_windows_says_how_many_were_needed(smol_tokenizer, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("A short text (with brackets). " * 20)
    corpus = resolve_corpus(str(path), trained_on=_trained_on_stdlib())
    with pytest.raises(MonosemanticError, match="yields only 2 all windows of 64 tokens; the tasks need 50"):
        task_windows(smol_tokenizer, corpus, select_tasks(["text"]), 50)


def test_held_out_rule_is_shared_by_the_live_source_and_evaluation(tiny_model_dir, tmp_path):
    from monosemantic.data import text_source, token_windows
    from monosemantic.data.split import held_out
    from monosemantic.models import load_model
    from monosemantic.training import LiveSource

    lm = load_model(str(tiny_model_dir("llama")))
    source = LiveSource(lm, "blocks.1.resid_post", context_length=32, buffer_batches=2)
    trained = {tuple(w.tolist()) for windows_WS, _ in zip(source._chunks(64), range(3)) for w in windows_WS[0]}
    every = list(zip(range(400), token_windows(text_source("stdlib"), lm.tokenizer, 32)))
    held = {tuple(w.tolist()) for i, w in every if held_out(torch.tensor([i]), 0.05)}
    assert held and trained and not trained & held
    corpus = resolve_corpus(trained_on=source.describe())
    assert corpus.split == "holdout" and corpus.context_length == 32
    scored = {tuple(w.tolist()) for w in corpus.windows(lm.tokenizer, 5)}
    assert scored <= held
    trained_all = {**source.describe(), "split": "all"}
    with pytest.raises(MonosemanticError, match="none is held out"):
        resolve_corpus(trained_on=trained_all)
    assert resolve_corpus(trained_on=trained_all, allow_trained=True).split == "all"


def test_suite_reports_intervals_over_seeds_and_the_verdict_follows_them(tiny_model_dir, tmp_path):
    from monosemantic.evaluation import run_suite, write_report
    from monosemantic.models import load_model, randomly_initialised
    from monosemantic.training import TensorSource, TrainConfig, sweep

    lm = load_model(str(tiny_model_dir("llama")))
    site = "blocks.1.resid_post"
    corpus = resolve_corpus("stdlib", context_length=64)
    windows_WS = resolve_corpus("stdlib", context_length=64).windows(lm.tokenizer, 40)
    from monosemantic.evaluation import site_rows

    x_ND = site_rows(lm, site, windows_WS)
    trained = sweep("topk", TensorSource(x_ND), TrainConfig(total_tokens=256 * 8, batch_size=256), None,
                    expansions=[2], sparsities=[4], seeds=(0, 1, 2), site_in=site, model=lm.name,
                    progress=False).dictionaries
    names = sorted(trained)
    random_lm = randomly_initialised(lm, 0)
    control = sweep("topk", TensorSource(site_rows(random_lm, site, windows_WS)),
                    TrainConfig(total_tokens=256 * 8, batch_size=256), None, expansions=[2], sparsities=[4],
                    site_in=site, model=random_lm.name, progress=False).dictionaries
    suite = run_suite(lm, trained[names[0]], name=names[0], seeds={n: trained[n] for n in names[1:]},
                      random_control={"random-model": (next(iter(control.values())), random_lm)}, corpus=corpus,
                      tasks=("reconstruction", "tasks"), n_windows=8, probe_windows=24, min_tokens=200,
                      baseline_options={"ica": {"max_iter": 50}})
    ours = suite.task_interval(names[0], 1)
    assert ours is not None
    assert ours.n == 3 and ours.low < ours.mean < ours.high and math.isfinite(ours.high)
    untrained = suite.task_interval("untrained", 1)
    assert untrained is not None and untrained.n == 3  # one untrained copy per seed
    neurons = suite.task_interval("neurons", 1)
    assert neurons is not None
    assert neurons.low == neurons.high == neurons.mean  # one deterministic fit: a point
    verdict = suite.verdict()
    for group in ("untrained", "random-model", "neurons", "pca", "ica"):
        assert group in verdict
    beaten = "It beats every baseline and control" in verdict
    others = [suite.task_interval(g, 1) for g in ("untrained", "random-model", "neurons", "pca", "ica")]
    assert all(other is not None for other in others)
    assert beaten == all(ours.separated_above(other) for other in others if other is not None)
    assert suite.seed_overlap is not None and len(suite.seed_overlap.pairs) == 3
    assert suite.frontier is not None
    # The frontier: dense bases truncated to each L0, exact at full width, better with every coordinate.
    for basis in ("neurons", "pca"):
        curve = suite.frontier[basis]
        assert curve[-1][0] == 64 and curve[-1][1] == pytest.approx(0, abs=1e-5)
        assert all(a[1] >= b[1] - 1e-9 for a, b in zip(curve, curve[1:])) and curve[0][1] > 0.1
    path = write_report(suite, tmp_path / "eval")
    markdown = path.read_text()
    assert "## Contextual probing" in markdown and "## Seeds: train twice, same features?" in markdown
    assert (tmp_path / "eval" / "tasks.png").stat().st_size > 0
    payload = json.loads(path.with_suffix(".json").read_text())
    assert payload["suite"]["groups"][names[0]] == names


def test_the_offline_judge_states_and_applies_a_context(smol_tokenizer):
    from monosemantic.autointerp import OfflineExplainer, OfflineSimulator
    from monosemantic.features.data import Example

    token_str = smol_tokenizer.decode
    examples = []
    for i in range(8):
        ids = smol_tokenizer(f"x = a + f(a, b{i}) - a * g(c, a)\n", add_special_tokens=False)["input_ids"]
        texts = [token_str([t]) for t in ids]
        # Fires on ' a' inside brackets only; ' a' outside them stays silent.
        depth, acts = 0, []
        for text in texts:
            depth += text.count("(") - text.count(")")
            acts.append(1.0 if text == " a" and depth > 0 else 0.0)
        peak = acts.index(1.0)
        examples.append(Example(0, 0, ids, acts, peak))
    explanation = OfflineExplainer().explain(examples, lambda t: token_str([t]))
    assert "' a'" in explanation and "in context in_parentheses" in explanation
    inside = [token_str([t]) for t in smol_tokenizer("y = h(b, a)", add_special_tokens=False)["input_ids"]]
    outside = [token_str([t]) for t in smol_tokenizer("y = a + 1", add_special_tokens=False)["input_ids"]]
    assert OfflineSimulator().detect(explanation, [inside, outside]) == [0.5, 0.0]
    # Without the context clause the token alone fires everywhere.
    assert OfflineSimulator().detect("fires on ' a'", [inside, outside]) == [0.5, 0.5]
    plain = OfflineExplainer(contexts=False).explain(examples, lambda t: token_str([t]))
    assert "in context" not in plain


def test_splicing_several_dictionaries_at_once_gives_each_ones_own_numbers(tiny_model_dir):
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.evaluation import evaluate_splice, evaluate_splices
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    windows_WS = resolve_corpus("stdlib", context_length=32).windows(lm.tokenizer, 4)
    torch.manual_seed(0)
    many = {f"d{k}": make_dictionary("topk", 64, 128, k=k, site_in="blocks.1.resid_post") for k in (2, 8)}
    together = evaluate_splices(lm, many, windows_WS, batch_size=3)
    for name, dictionary in many.items():
        alone = evaluate_splice(lm, dictionary, windows_WS, batch_size=3)
        assert together[name].config == alone.config
        for field in ("ce_clean", "ce_spliced", "ce_zero", "ce_mean", "loss_recovered", "kl_spliced", "kl_zero"):
            assert getattr(together[name], field) == pytest.approx(getattr(alone, field), rel=1e-6)
    assert together["d2"].ce_spliced != together["d8"].ce_spliced


def test_the_suite_refuses_a_dictionary_of_another_model_or_mixed_seeds(tiny_model_dir):
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.evaluation import run_suite
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    other = make_dictionary("topk", 64, 128, k=4, site_in="blocks.1.resid_post", model="EleutherAI/pythia-70m")
    record = {**_trained_on_stdlib(), "model": "EleutherAI/pythia-70m"}
    with pytest.raises(MonosemanticError, match="trained on model 'EleutherAI/pythia-70m'"):
        run_suite(lm, other, trained_on=record, tasks=("reconstruction",))
    ours = make_dictionary("topk", 64, 128, k=4, site_in="blocks.1.resid_post", model=lm.name)
    bigger = make_dictionary("topk", 64, 256, k=4, site_in="blocks.1.resid_post", model=lm.name)
    with pytest.raises(MonosemanticError, match="differ in architecture or size"):
        run_suite(lm, ours, seeds={"s1": bigger}, tasks=("reconstruction",))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(MonosemanticError, match="splice_windows"):
            run_suite(lm, ours, tasks=("reconstruction",), splice_windows=bad)  # type: ignore[arg-type]


def test_document_labels_are_probed_per_window_segment(tmp_path, smol_tokenizer):
    rows = [{"text": f"Note {i}: " + ("the cat sat on the warm mat and purred" if i % 2 else
                                      "the stock price fell sharply at the close of trading"), "label":
             "cat" if i % 2 else "market"} for i in range(80)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    corpus = resolve_corpus(str(path), trained_on=_trained_on_stdlib(32))
    data = task_windows(smol_tokenizer, corpus, (), 30, labelled=read_labels(path))
    assert set(data.labels) == {"label=cat", "label=market"} and data.tasks["label=cat"].pooled
    # Short texts share windows: each (window, document) segment keeps its own document's label.
    n = int(data.keep_WS.sum())
    acts_ND = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    cat_N = (data.labels["label=cat"][data.keep_WS] == 1).float()
    acts_ND[:, 2] += 2 * cat_N
    result = probe_tasks({"neurons": (fit_baseline("identity", acts_ND), acts_ND)}, data, corpus=corpus.to_dict(),
                         min_examples=5)
    scored = {t.name: t for t in result.tasks}
    assert scored["label=cat"].n_train + scored["label=cat"].n_test > 30  # more segments than windows
    best = {(s.task, s.k): s for s in result.scores}[("label=cat", 1)]
    assert best.latents == (2,) and best.auroc > 0.95


def test_an_untrained_batchtopk_control_is_as_sparse_as_what_it_controls_for(tiny_model_dir):
    # An untrained BatchTopK has threshold 0 ("not yet estimated"): every positive pre-activation
    # fires, a dense code that probes like a random projection. Calibrated on rows, it keeps
    # about k per row, like the trained dictionary.
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.evaluation import ReconstructionResult, run_suite, site_rows, untrained_copy
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    site = "blocks.1.resid_post"
    corpus = resolve_corpus("stdlib", context_length=64)
    x_ND = site_rows(lm, site, corpus.windows(lm.tokenizer, 8))
    trained = make_dictionary("batchtopk", x_ND.shape[1], 128, k=4, site_in=site, model=lm.name)
    trained.calibrate_(x_ND)  # stands in for training: a threshold keeping k per row on average
    unset = untrained_copy(trained, 1)
    assert float(unset.state_dict()["threshold"]) == 0 and float((unset.encode(x_ND) > 0).sum(1).float().mean()) > 30
    calibrated = untrained_copy(trained, 1, x_ND)
    assert torch.equal(calibrated.W_dec, unset.W_dec)  # the same untrained weights
    assert 2 < float((calibrated.encode(x_ND) > 0).sum(1).float().mean()) < 8

    suite = run_suite(lm, trained, name="sae", corpus=corpus, tasks=("reconstruction",), n_windows=8, min_tokens=200,
                      baselines=())
    for group in ("sae", "untrained"):
        recon = suite.result(suite.groups[group][0], ReconstructionResult)
        assert recon is not None and 2 < recon.l0 < 8, group


def test_an_untrained_jumprelu_control_matches_the_trained_l0_with_no_dead_latent(tiny_model_dir):
    # An untrained JumpReLU keeps its initial threshold, which sets its L0 whatever the trained
    # one's (dense on SmolLM2's normalised rows, silent on the tiny model's small ones).
    # Calibrated, each latent fires on the same share of rows, L0 matching the dictionary it
    # controls for on those rows.
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.dictionaries.jumprelu import JumpReLUDictionary
    from monosemantic.errors import MonosemanticError
    from monosemantic.evaluation import site_rows, untrained_copy
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    site = "blocks.1.resid_post"
    x_ND = site_rows(lm, site, resolve_corpus("stdlib", context_length=64).windows(lm.tokenizer, 8))
    trained = make_dictionary("jumprelu", x_ND.shape[1], 128, site_in=site, model=lm.name)
    assert isinstance(trained, JumpReLUDictionary)
    with torch.no_grad():  # stands in for training: thresholds at which about 6 latents fire per row
        trained.log_threshold.fill_(float(trained.pre_acts(x_ND).quantile(1 - 6 / 128).log()))
    x_ND = x_ND[:300]
    target = float((trained.encode(x_ND) > 0).sum(1).float().mean())
    assert 4 < target < 8
    unset = untrained_copy(trained, 1)
    assert abs(float((unset.encode(x_ND) > 0).sum(1).float().mean()) - target) > 3
    calibrated = untrained_copy(trained, 1, x_ND)
    assert torch.equal(calibrated.W_dec, unset.W_dec) and trained.training  # the same weights; mode kept
    fires_NF = calibrated.encode(x_ND) > 0
    assert abs(float(fires_NF.sum(1).float().mean()) - target) <= 128 / 300 / 2  # whole rows per latent
    per_latent = fires_NF.sum(0)
    assert int(per_latent.min()) >= 1 and int(per_latent.max() - per_latent.min()) <= 1
    in_batches = untrained_copy(trained, 1)
    assert isinstance(in_batches, JumpReLUDictionary) and isinstance(calibrated, JumpReLUDictionary)
    in_batches.calibrate_(x_ND, target, batch_size=7)  # the running top rows across batches
    assert torch.equal(in_batches.log_threshold, calibrated.log_threshold)
    with pytest.raises(MonosemanticError, match="needs l0"):
        unset.calibrate_(x_ND)
