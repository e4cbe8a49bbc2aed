"""Auto-interpretability: explanations, detection and fuzzing scores, the LLM client, fallbacks and the CLI.

Known-answer latents are built on the embeddings (``blocks.0.resid_pre``) of the tiny llama: a
ReLU latent whose encoder row is the sum of some tokens' unit embeddings, with a threshold well
above the other tokens' projections, fires on exactly those tokens. Feature data then comes from
the real ``analyze_features`` over real stdlib windows.
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from transformers import PreTrainedModel
from typer.testing import CliRunner

from monosemantic.autointerp import (
    LLMReplyError,
    LLMScorer,
    LLMUnavailable,
    OfflineExplainer,
    OfflineSimulator,
    OpenAIClient,
    OpenAIExplainer,
    auroc,
    autointerp,
    backends,
    balanced_accuracy,
    compare_autointerp,
    compare_with_baselines,
    explain_folders,
    explain_latents,
    judge_check,
    named_tokens,
    parse_probabilities,
    quote_token,
    select_latents,
    split_examples,
    write_autointerp,
)
from monosemantic.cli import app
from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import corpus_windows
from monosemantic.features import FeatureData, analyze_features
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SITE = "blocks.0.resid_pre"
FIRING = {0: (" def", " self"), 1: (" return",), 2: ("(",)}  # latent -> the tokens it fires on; 3: never fires


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    """The tiny llama with the FIRING tokens' embeddings lengthened 5x (this instance only), so a threshold
    separates them from every other token's projection by a wide margin."""
    lm = load_model(str(tiny_model_dir("llama")))
    assert isinstance(lm.model, PreTrainedModel)
    embeddings = lm.model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding)
    with torch.no_grad():
        for texts in FIRING.values():
            embeddings.weight[[_token_id(lm, t) for t in texts]] *= 5
    return lm


def _token_id(lm, text: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, text
    return ids[0]


@pytest.fixture(scope="module")
def sae(lm):
    """ReLU latents that fire on exactly the tokens in FIRING (checked against every token of the vocabulary)."""
    E_VD = lm.model.get_input_embeddings().weight.detach()
    unit_VD = E_VD / E_VD.norm(dim=1, keepdim=True)
    torch.manual_seed(0)
    sae = make_dictionary("relu", 64, 4, site_in=SITE, model=lm.name)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1e3)  # latent 3 never fires
        for latent, texts in FIRING.items():
            ids = [_token_id(lm, t) for t in texts]
            sae.W_enc[:, latent] = unit_VD[ids].sum(0)
            sae.b_enc[latent] = -0.5 * float((E_VD[ids] @ sae.W_enc[:, latent]).min())
    fires_VF = (sae.encode(E_VD) > 0)
    for latent, texts in FIRING.items():
        assert set(fires_VF[:, latent].nonzero().flatten().tolist()) == {_token_id(lm, t) for t in texts}
    return sae


@pytest.fixture(scope="module")
def windows(lm):
    return corpus_windows(lm.tokenizer, n_windows=24, context_length=64)


@pytest.fixture(scope="module")
def data(lm, sae, windows):
    return analyze_features(lm, sae, windows, progress=False)


# ----- pieces ----------------------------------------------------------------------------------

def test_named_tokens_round_trip_and_skip_context_clauses():
    tokens = [" def", "\n", "it's", '"', "  ", ";"]
    assert named_tokens("fires on " + ", ".join(quote_token(t) for t in tokens)) == tokens
    assert named_tokens("fires on ' if' (50% of examples); often after '(' and ')'; also on 'x'") == [" if", "x"]
    assert named_tokens("the token 'def' when it's preceded by \"@\"") == ["def"]


def test_metrics_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = random.Random(0)
    labels = [rng.random() < 0.3 for _ in range(200)]
    confidences = [round(rng.random(), 1) for _ in labels]  # rounded: ties are counted half
    predictions = [c >= 0.5 for c in confidences]
    assert balanced_accuracy(labels, predictions) == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert auroc(labels, confidences) == pytest.approx(roc_auc_score(labels, confidences))
    assert math.isnan(balanced_accuracy([True, True], [True, False])) and math.isnan(auroc([False], [0.3]))


def test_parse_probabilities():
    assert parse_probabilities("Thinking [1] ... answer: [0.9, 0, 1.5, -1]", 4) == [0.9, 0.0, 1.0, 0.0]
    with pytest.raises(LLMReplyError, match="JSON list of 3 numbers"):
        parse_probabilities("[1, 0]", 3)


# ----- known-answer latents on real feature data -----------------------------------------------

def test_offline_explainer_names_exactly_the_firing_tokens(data):
    explanations = explain_latents(data, [0, 1, 2, 3], progress=False)
    for latent, texts in FIRING.items():
        assert set(named_tokens(explanations[latent].text)) == set(texts), explanations[latent]
        assert explanations[latent].source == "offline"
    assert "does not fire" in explanations[3].text


def _contains(tokens, data, name) -> bool:
    return any(data.token_str(t) == name for t in tokens)


def test_detection_and_fuzzing_of_exact_and_wrong_explanations(data):
    result = autointerp(data, [0, 1, 2, 3], progress=False)
    for row in result.latents[:3]:
        assert row.detection == 1.0 and row.fuzzing == 1.0, row
        assert row.detection_auroc == 1.0 and row.n_detection > 8 and row.n_fuzzing > 4
    assert math.isnan(result.latents[3].detection) and result.n_detection == 3
    assert result.detection == 1.0

    class Fixed(OfflineExplainer):
        def __init__(self, text):
            super().__init__()
            self.text = text

        def explain(self, *args):
            return self.text

    # A token that occurs in no context: every prediction is "no", so balanced accuracy is exactly 0.5.
    absent = autointerp(data, [0], Fixed("fires on ' zebra'"), progress=False).latents[0]
    assert absent.detection == 0.5 and absent.fuzzing == 0.5 and absent.detection_auroc == 0.5
    # A common token that is not the latent's: the score is what predicting "contains ' if'" gives.
    _, held = split_examples(data.top_examples(0), data.quantile_examples(0))
    wrong = autointerp(data, [0], Fixed("fires on ' if'"), progress=False).latents[0]
    positives = [_contains(e.tokens, data, " if") for e in held]
    negatives = [_contains(e.tokens, data, " if") for e in data.negative_examples(0)]
    expected = (sum(positives) / len(positives) + 1 - sum(negatives) / len(negatives)) / 2
    assert wrong.detection == pytest.approx(expected) and abs(wrong.detection - 0.5) < 0.3


def test_select_latents(data):
    assert select_latents(data, "0-2") == [0, 1, 2] and select_latents(data, "2,0,2") == [2, 0]
    order = [f for f in data.latent_order("density") if data.density(f) > 0]
    assert select_latents(data, "top2") == order[:2] and sorted(select_latents(data, "random10")) == sorted(order)
    for bad in ("0-9", "x", "5-1", [7]):
        with pytest.raises(MonosemanticError, match="latent"):
            select_latents(data, bad)


def test_results_are_written_into_the_feature_folder(data, tmp_path):
    data.save(tmp_path / "features")
    result = autointerp(data, [0, 1, 3], progress=False)
    write_autointerp(tmp_path / "features", result)
    loaded = FeatureData.load(tmp_path / "features")
    for row in result.latents:
        assert loaded.explanation(row.latent) == row.explanation
    score0, score3 = loaded.score(0), loaded.score(3)
    assert score0 is not None and score3 is not None
    assert score0["detection"] == 1.0 and score3["detection"] is None
    saved = json.loads((tmp_path / "features" / "explanations.json").read_text())
    assert saved["latents"]["0"]["source"] == "offline"
    json.dumps(result.to_dict(), allow_nan=False)


# ----- a real OpenAI-compatible server on 127.0.0.1 ----------------------------------------------

KEY = "sk-local-test"


class _Server(ThreadingHTTPServer):
    """The test server; it keeps every request it was sent."""

    requests: list[dict]


class _Handler(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions by a deterministic rule (no model): an explanation request is answered
    by naming the most often marked <<token>>; a scoring request by checking each excerpt against the tokens
    the explanation quotes (detection: a named token occurs as a substring; fuzzing: every marked span is a
    named token)."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert isinstance(self.server, _Server)
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path == "/bad/v1/chat/completions":
            return self._send(200, {"oops": True})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._send(401, {"error": "bad key"})
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": _answer(system, user)}}]})

    def _send(self, status, payload):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def _answer(system: str, user: str) -> str:
    if "[EXPLANATION]" in system:
        marked = re.findall(r"<<(.*?)>>", user, flags=re.DOTALL)
        top = sorted(set(marked), key=lambda t: (-marked.count(t), t))[:2]
        return "Reasoning first.\n[EXPLANATION]: the tokens " + " and ".join(repr(t) for t in top)
    explanation, _, excerpts = user.partition("\n\n")
    names = set(named_tokens(explanation))
    texts = re.findall(r"^Excerpt \d+: (.*?)(?=^Excerpt \d+: |\Z)", excerpts, flags=re.DOTALL | re.MULTILINE)
    if "marked" in system:
        spans = [re.findall(r"<<(.*?)>>", t, flags=re.DOTALL) for t in texts]
        answers = [int(bool(s) and all(x in names for x in s)) for s in spans]
    else:
        answers = [int(any(n in t for n in names)) for t in texts]
    return f"Here you go: {answers}"


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server, prefix=""):
    return f"http://127.0.0.1:{server.server_address[1]}{prefix}/v1"


def test_llm_explainer_and_scorer_through_a_local_server(server, data):
    server.requests.clear()
    explainer = OpenAIExplainer(_url(server), "tiny-judge", KEY)
    scorer = LLMScorer(_url(server), "tiny-judge", KEY, per_prompt=4)
    result = autointerp(data, [0, 1], explainer, scorer, fallback=False, progress=False)
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {KEY}"
    assert first["body"]["model"] == "tiny-judge"
    assert [m["role"] for m in first["body"]["messages"]] == ["system", "user"]
    assert "<<" in first["body"]["messages"][1]["content"]
    for row in result.latents:
        assert row.explanation_source == "llm:tiny-judge" and row.scorer_source == "llm:tiny-judge"
        assert row.explanation.startswith("the tokens ")
        assert set(named_tokens(row.explanation)) <= set(FIRING[row.latent])
    assert result.latents[1].detection == 1.0 and result.latents[1].fuzzing == 1.0
    # The server's rule is the offline simulator's, so both judges agree on the same explanation.
    offline = autointerp(data, [0, 1], explainer, OfflineSimulator(), fallback=False, progress=False)
    assert [r.detection for r in offline.latents] == [r.detection for r in result.latents]
    assert [r.fuzzing for r in offline.latents] == [r.fuzzing for r in result.latents]
    n_prompts = sum(math.ceil(r.n_detection / 4) + math.ceil(r.n_fuzzing / 4) + 1 for r in result.latents)
    assert len(server.requests) == n_prompts + 2  # the second run asked only for the two explanations


def test_bad_key_and_bad_reply_are_clear_errors(server):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(LLMUnavailable, match=r"HTTP 401.*API key"):
        OpenAIClient(_url(server), "m", "wrong").chat(messages)
    with pytest.raises(LLMReplyError, match=r"/bad/v1/chat/completions.*not an OpenAI chat completion"):
        OpenAIClient(_url(server, "/bad"), "m", KEY).chat(messages)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_endpoint_keeps_offline_results(data):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(LLMUnavailable,
                       match="could not reach the LLM endpoint " + re.escape(url + "/chat/completions")):
        OpenAIClient(url, "m", timeout=5).chat([{"role": "user", "content": "hi"}])
    explainer, scorer = OpenAIExplainer(url, "m", timeout=5), LLMScorer(url, "m", timeout=5)
    with pytest.raises(LLMUnavailable, match="could not reach"):
        autointerp(data, [0], explainer, scorer, fallback=False, progress=False)
    result = autointerp(data, [0, 1, 2], explainer, scorer, progress=False)
    offline = autointerp(data, [0, 1, 2], progress=False)
    assert result.explanations() == offline.explanations() and result.scores() == offline.scores()
    for row in result.latents:
        assert row.explanation_source == "offline" and row.scorer_source == "offline"
        assert "could not reach" in row.note and url in row.note


# ----- the comparison and the CLI ---------------------------------------------------------------

def test_compare_with_baselines_scores_every_dictionary(lm, sae, windows):
    results, comparison = compare_with_baselines(lm, sae, windows[:8], latents="0-2", fit_windows=8, progress=False)
    assert list(results) == ["sae", "neurons", "pca", "ica"]
    assert [r.name for r in comparison.rows] == ["sae", "neurons", "pca", "ica"]
    for row in comparison.rows:
        scores = [s.detection for s in results[row.name].latents if math.isfinite(s.detection)]
        assert row.n_latents == 3 and row.detection == pytest.approx(sum(scores) / len(scores))
    assert comparison.rows[0].detection == 1.0
    assert "| sae | 3 |" in comparison.table()
    assert compare_autointerp({"x": results["pca"]}).rows[0].fuzzing == results["pca"].fuzzing


def test_explain_folders_scores_each_folder_compares_and_checks_the_judge(lm, data, windows, tmp_path):
    data.save(tmp_path / "sae")
    torch.manual_seed(1)
    untrained = make_dictionary("relu", 64, 4, site_in=SITE, model=lm.name)
    analyze_features(lm, untrained, windows[:8], progress=False).save(tmp_path / "untrained")
    folders = {"dictionary": tmp_path / "sae", "untrained": tmp_path / "untrained"}
    run = explain_folders(folders, "0-2", report=tmp_path / "out" / "report.json", progress=False)
    assert list(run.results) == ["dictionary", "untrained"] and run.folders == folders
    for name, folder in folders.items():
        alone = autointerp(FeatureData.load(folder), [0, 1, 2], name=name, progress=False)
        assert run.results[name].to_dict() == alone.to_dict()  # the same selection, seed and judge
        written = FeatureData.load(folder)
        assert all(written.explanation(s.latent) == s.explanation for s in alone.latents)
    assert run.results["dictionary"].detection == 1.0 and not run.results["dictionary"].fallbacks()
    assert run.comparison is not None and run.judge is not None and run.report is not None
    assert [r.name for r in run.comparison.rows] == ["dictionary", "untrained"]
    assert run.judge.controls == ("untrained",)  # names starting "untrained" are controls
    assert run.judge.message == judge_check(run.results, "dictionary", ["untrained"]).message
    saved = json.loads(run.report.read_text())
    assert saved == json.loads(json.dumps({name: r.to_dict() for name, r in run.results.items()}))
    one = explain_folders({"dictionary": tmp_path / "sae"}, [0], progress=False)
    assert one.comparison is None and one.judge is None and one.report is None
    assert explain_folders(folders, [0], controls=[], progress=False).judge is None
    with pytest.raises(MonosemanticError, match="no feature folders"):
        explain_folders({})
    with pytest.raises(MonosemanticError, match="is not a feature folder"):
        explain_folders({"dictionary": tmp_path})


def test_backends_are_offline_unless_an_endpoint_is_named(server):
    explainer, scorer = backends()
    assert (explainer.source, scorer.source) == ("offline", "offline")
    with pytest.raises(MonosemanticError, match="needs the model name it serves"):
        backends(_url(server))
    explainer, scorer = backends(_url(server), "m")
    assert isinstance(explainer, OpenAIExplainer) and isinstance(scorer, LLMScorer)
    assert explainer.client is scorer.client and explainer.source == "llm:m"


def test_explain_cli_writes_explanations_and_falls_back(lm, data, windows, tmp_path):
    from monosemantic.baselines import fit_baseline

    data.save(tmp_path / "sae")
    neurons = fit_baseline("identity", torch.randn(10, 64), site=SITE, model=lm.name)
    analyze_features(lm, neurons, windows[:8], progress=False).save(tmp_path / "neurons")
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "sae"), "--latents", "0-2", "--compare",
                                      f"neurons={tmp_path / 'neurons'}", "--llm-url", url, "--llm-model", "m",
                                      "--llm-timeout", "5", "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "fell back to offline" in result.output and url in result.output
    assert "| dictionary | latents | detection |" in result.output and "| neurons | 3 |" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    loaded = FeatureData.load(tmp_path / "sae")
    assert loaded.explanation(0) == report["dictionary"]["latents"][0]["explanation"]
    score0 = loaded.score(0)
    assert score0 is not None and score0["detection"] == 1.0
    assert FeatureData.load(tmp_path / "neurons").explanation(2) == report["neurons"]["latents"][2]["explanation"]
    bad = CliRunner().invoke(app, ["explain", str(tmp_path / "sae"), "--latents", "0-99"])
    assert bad.exit_code == 2 and "latents 0..3" in bad.output
