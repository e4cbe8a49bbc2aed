"""Dashboards without a browser: the static site's files, its safety, folder rules, the app over real HTTP.

A real feature folder is made from the tiny Llama model and a small top-k dictionary on a corpus
that contains ``<script>alert(1)</script>``; numbers shown are checked against activations
computed here from ``lm.capture`` and ``dictionary.encode``. The browser tests
(test_viz_browser.py) reuse :func:`make_features`.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from monosemantic.cli import app as cli_app
from monosemantic.data import storable_mask
from monosemantic.dictionaries import make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import corpus_windows
from monosemantic.features import FeatureData, analyze_features, write_explanations
from monosemantic.models import load_model
from monosemantic.viz import build_app, build_dashboard, make_server, server_url
from monosemantic.viz.markup import json_for_html
from monosemantic.viz.svg import histogram_svg

pytestmark = pytest.mark.usefixtures("one_thread")

SITE = "blocks.1.resid_post"
EXPLAINED = 3  # the latent given a hostile explanation
EXPLANATION = "<script>alert(1)</script> & <img src=x onerror=alert(2)>"
ATTACK = "<script>alert(1)</script>"


class Built:
    """A feature folder made in a test, with what made it."""

    def __init__(self, lm, dictionary, windows_WS, folder: Path):
        self.lm, self.dictionary, self.windows_WS, self.folder = lm, dictionary, windows_WS, folder


def make_features(model_dir, root: Path, *, seed: int = 0, lm=None) -> Built:
    """Analyse a fresh top-k dictionary (64 -> 128, k=4) of the tiny model on a corpus with a script tag."""
    lm = lm or load_model(str(model_dir))
    torch.manual_seed(seed)
    dictionary = make_dictionary("topk", 64, 128, k=4, site_in=SITE, model=str(model_dir))
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the page shows {ATTACK} as text, and x = {i} + 1."
                                  for i in range(40)), encoding="utf-8")
    windows_WS = corpus_windows(lm.tokenizer, str(corpus), n_windows=16, context_length=32, holdout=None)
    data = analyze_features(lm, dictionary, windows_WS, n_top=8, progress=False)
    folder = root / f"features-{seed}"
    data.save(folder)
    write_explanations(folder, {EXPLAINED: EXPLANATION}, {EXPLAINED: {"detection": 0.75}})
    return Built(lm, dictionary, windows_WS, folder)


@torch.no_grad()
def library_codes(lm, dictionary, ids_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[B, S, F]`` at the dictionary's site, and the mask ``[B, S]`` of analysed positions."""
    acts_BSD = lm.capture(ids_BS, [SITE])[SITE]
    B, S, D = acts_BSD.shape
    codes_BSF = dictionary.encode(acts_BSD.reshape(B * S, D)).reshape(B, S, -1)
    return codes_BSF, storable_mask(ids_BS, lm.tokenizer.all_special_ids)


def index_rows(site: Path) -> list[dict]:
    text = (site / "index-data.js").read_text(encoding="utf-8")
    prefix = "window.MONOSEMANTIC_INDEX = "
    assert text.startswith(prefix)
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))["latents"]


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return make_features(tiny_model_dir("llama"), tmp_path_factory.mktemp("viz"))


@pytest.fixture(scope="module")
def other(tiny_model_dir, tmp_path_factory, built):
    """Feature data of another dictionary (another seed) over the same corpus."""
    return make_features(tiny_model_dir("llama"), tmp_path_factory.mktemp("viz-other"), seed=1, lm=built.lm)


def test_json_for_html_cannot_end_a_script_and_round_trips():
    value = {"t": ["</script><script>alert(1)</script>", "<!-- x -->", "a & b", "\u2028"]}
    text = json_for_html(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_histogram_bars_are_proportional_to_counts():
    counts, edges = [4, 0, 2, 1], [0.0, 0.5, 1.0, 1.5, 2.0]
    svg = histogram_svg(counts, edges)
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 3  # the empty bin draws nothing
    assert heights[1] / heights[0] == pytest.approx(2 / 4, abs=0.01)
    assert heights[2] / heights[0] == pytest.approx(1 / 4, abs=0.01)


def test_index_shows_densities_and_maxima_of_the_library(built, tmp_path):
    site = build_dashboard(built.folder, tmp_path / "site", dictionary=built.dictionary, progress=False)
    codes_BSF, mask_BS = library_codes(built.lm, built.dictionary, built.windows_WS)
    fired_NF = (codes_BSF > 0)[mask_BS]
    density_F = fired_NF.float().mean(0)
    max_F = codes_BSF[mask_BS].amax(0)
    rows = index_rows(site)
    assert [r["i"] for r in rows] == list(range(128))
    assert [r["d"] for r in rows] == pytest.approx(density_F.tolist(), abs=1e-6)
    assert [r["m"] for r in rows] == pytest.approx(max_F.tolist(), abs=1e-5)
    assert rows[EXPLAINED]["e"] == EXPLANATION and rows[EXPLAINED]["s"] == "detection 0.75"
    assert sorted(p.name for p in (site / "features").iterdir()) == sorted(f"{i}.html" for i in range(128))
    record = json.loads((site / "dashboard.json").read_text())
    assert record["n_latents"] == 128 and record["pages"] == 128


def test_no_page_contains_raw_markup_from_the_corpus_or_explanations(built, tmp_path):
    site = build_dashboard(built.folder, tmp_path / "site", progress=False)
    texts = {p: p.read_text(encoding="utf-8") for p in [*site.glob("*.html"), *site.glob("*.js"),
                                                         *(site / "features").glob("*.html")]}
    for path, text in texts.items():
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert "</script" not in text.replace("></script>", ""), path  # only our own empty script tags close
    page = texts[site / "features" / f"{EXPLAINED}.html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;" in page
    # The corpus's tag shows up, escaped, in some latent's examples.
    assert any("&lt;/" in t and "script" in t for p, t in texts.items() if p.parent.name == "features")


def test_max_pages_keeps_the_densest_latents_and_rebuild_replaces(built, tmp_path):
    out = tmp_path / "site"
    build_dashboard(built.folder, out, max_pages=5, progress=False)
    codes_BSF, mask_BS = library_codes(built.lm, built.dictionary, built.windows_WS)
    density_F = (codes_BSF > 0)[mask_BS].float().mean(0)
    paged = {int(p.stem) for p in (out / "features").iterdir()}
    assert len(paged) == 5
    others = [d for i, d in enumerate(density_F.tolist()) if i not in paged]
    assert min(density_F[sorted(paged)].tolist()) >= max(others) - 1e-9
    assert {r["i"] for r in index_rows(out) if r["page"]} == paged
    build_dashboard(built.folder, out, progress=False)  # same dictionary: replaced in place
    assert len(list((out / "features").iterdir())) == 128
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no staging or retired folders left


def test_folders_of_another_dictionary_are_refused(built, other, tmp_path):
    out = tmp_path / "site"
    build_dashboard(built.folder, out, progress=False)
    before = (out / "dashboard.json").read_text()
    with pytest.raises(MonosemanticError, match="another dictionary"):
        build_dashboard(other.folder, out, progress=False)
    assert (out / "dashboard.json").read_text() == before
    with pytest.raises(MonosemanticError, match="another dictionary"):
        build_dashboard(built.folder, tmp_path / "x", dictionary=other.dictionary, progress=False)
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(MonosemanticError, match="not a dashboard"):
        build_dashboard(built.folder, stranger, progress=False)
    assert (stranger / "todo.txt").read_text() == "mine"
    with pytest.raises(MonosemanticError, match="another dictionary"):
        build_app(built.folder, dictionary=other.dictionary, lm=built.lm)


def _get(url: str, data: dict | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


@pytest.fixture(scope="module")
def server(built):
    httpd = make_server(build_app(built.folder, dictionary=built.dictionary, lm=built.lm, site=SITE), port=0,
                        quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_server_listens_on_loopback_only(server):
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and server_url(server) == f"http://127.0.0.1:{port}/"
    # Bound to 0.0.0.0 it would also answer on 127.0.0.2 (still this machine's loopback).
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


def test_api_prompt_matches_the_library(server, built):
    text = f"x = 3 + 1 and {ATTACK}"
    status, body = _get(server_url(server) + "api/prompt?" + urllib.parse.urlencode({"text": text}))
    assert status == 200, body
    answer = json.loads(body)
    ids_1S = built.lm.tokenizer(text, return_tensors="pt").input_ids
    assert answer["token_ids"] == ids_1S[0].tolist()
    codes_BSF, mask_BS = library_codes(built.lm, built.dictionary, ids_1S)
    codes_SF = codes_BSF[0] * mask_BS[0, :, None]
    top = torch.topk(codes_SF.sum(0), len(answer["features"])).indices.tolist()
    assert [row["index"] for row in answer["features"]] == top
    for row in answer["features"]:
        assert row["acts"] == pytest.approx(codes_SF[:, row["index"]].tolist(), abs=1e-5)
    assert "&lt;/" in answer["html"] and "<script" not in answer["html"] and "</script" not in answer["html"]


def test_bad_requests_get_clear_errors(server, built):
    url = server_url(server)
    status, body = _get(url + "features/128.html")
    assert status == 404 and "feature index 128 is out of range" in body and "0..127" in body
    assert _get(url + "features/-1.html")[0] == 404
    status, body = _get(url + "prompt", {"text": "word " * 400})
    assert status == 400 and "reads at most 256" in body and 'id="error"' in body
    status, body = _get(url + "api/prompt", {"text": "   "})
    assert status == 400 and "prompt is empty" in json.loads(body)["error"]
    status, body = _get(url + "features/7.html")
    assert status == 200 and "<h1>Latent 7</h1>" in body and 'href="/prompt"' in body


def _raw(server, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is; (status, body) of the reply."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=30) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_app_refuses_other_hosts_and_bad_or_huge_bodies(server):
    port = server.server_address[1]
    # DNS rebinding: a page of another site whose name now points here sends its own Host.
    status, body = _raw(server, b"GET /features/7.html HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
    assert status == 403 and b"attacker.example" in body and f"127.0.0.1:{port}".encode() in body
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        request = f"GET /features/7.html HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        assert _raw(server, request)[0] == 200, host
    post = f"POST /api/prompt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    status, body = _raw(server, (post + "Content-Length: -5\r\n\r\n").encode())
    assert status == 400 and b"not a byte count" in body
    status, body = _raw(server, (post + f"Content-Length: {(1 << 20) + 1}\r\n\r\n").encode())
    assert status == 413 and b"at most 1,048,576 bytes" in body


def test_a_stalled_client_is_dropped_and_others_are_served(built):
    httpd = make_server(build_app(built.folder), port=0, quiet=True, timeout=0.5)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        host, port = httpd.server_address[:2]
        with socket.create_connection((str(host), int(port)), timeout=30) as stalled:
            stalled.sendall(b"GET /features/7.html HTTP/1.1\r\n")  # and never the rest
            started = time.monotonic()
            assert stalled.recv(65536) == b""  # the server closed it
            assert time.monotonic() - started < 10
        assert _get(server_url(httpd) + "features/7.html")[0] == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_server_of_a_built_dashboard_without_a_model(built, tmp_path):
    site = build_dashboard(built.folder, tmp_path / "site", max_pages=3, progress=False)
    paged = sorted(int(p.stem) for p in (site / "features").iterdir())
    unpaged = next(i for i in range(128) if i not in paged)
    httpd = make_server(build_app(site), port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = server_url(httpd)
        status, body = _get(url + f"features/{paged[0]}.html")
        assert status == 200 and body.replace('<a href="/prompt">Run a prompt</a>', "<!--live-links-->") == \
            (site / "features" / f"{paged[0]}.html").read_text(encoding="utf-8")
        status, body = _get(url + f"features/{unpaged}.html")
        assert status == 404 and "has no page in this dashboard" in body
        status, body = _get(url + "prompt", {"text": "hello"})
        assert status == 400 and "--dictionary" in body
    finally:
        httpd.shutdown()
        httpd.server_close()


runner = CliRunner()


def test_cli_dashboard_builds_and_refuses_another_dictionary(built, other, tmp_path):
    dictionary_dir = save_dictionary(built.dictionary, tmp_path / "dictionary")
    out = tmp_path / "site"
    result = runner.invoke(cli_app, ["dashboard", str(built.folder), "--out", str(out), "--dictionary",
                                     str(dictionary_dir), "--max-pages", "4"])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").resolve().as_uri() in result.output
    assert len(list((out / "features").iterdir())) == 4
    result = runner.invoke(cli_app, ["dashboard", str(other.folder), "--out", str(out)])
    assert result.exit_code == 2 and "another dictionary" in result.output
    result = runner.invoke(cli_app, ["serve", str(out), "--model", "x"])
    assert result.exit_code == 2 and "--dictionary" in result.output


def test_cli_serve_prints_its_url_and_runs_prompts(built, tmp_path):
    dictionary_dir = save_dictionary(built.dictionary, tmp_path / "dictionary")
    command = [sys.executable, "-m", "monosemantic.cli", "serve", str(built.folder), "--port", "0",
               "--dictionary", str(dictionary_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")
        status, body = _get(match.group(0) + "index-data.js")
        assert status == 200 and f'"d":{FeatureData.load(built.folder).density(0)!r}' in body
        status, body = _get(match.group(0) + "api/prompt", {"text": "x = 2 + 1"})
        assert status == 200, body
        ids_1S = built.lm.tokenizer("x = 2 + 1", return_tensors="pt").input_ids
        codes_BSF, mask_BS = library_codes(built.lm, built.dictionary, ids_1S)
        first = json.loads(body)["features"][0]
        assert first["acts"] == pytest.approx((codes_BSF[0, :, first["index"]] * mask_BS[0]).tolist(), abs=1e-5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_graph_folder_serves_only_its_own_pages(tmp_path):
    from monosemantic.circuits import Graph
    from monosemantic.viz import write_graph_site

    meta = {"tokens": ["a", "b"], "layers": [0], "target": {"token": 1, "text": "b", "position": -1, "minus": None,
                                                         "value": 1.0}}
    scores = {"completeness": 1.0, "replacement": 1.0, "active_features": 0, "expanded_features": 0}
    nodes = [{"id": "target", "kind": "target", "position": 1, "value": 1.0, "influence": 1.0, "text": "b"},
             {"id": "token:0", "kind": "token", "position": 0, "influence": 1.0, "text": "a"}]
    folder = write_graph_site(Graph(meta, scores, nodes, [{"source": "token:0", "target": "target", "weight": 1.0}]),
                              tmp_path / "graph")
    (tmp_path / "secret.txt").write_text("private")
    app = build_app(folder)
    assert app.handle("GET", "/", {}).status == 200
    assert app.handle("GET", "/graph.json", {}).status == 200
    for path in ("/../secret.txt", "/features/layer_0/../../../secret.txt", "/features/x.html", "/index.js"):
        response = app.handle("GET", path, {})
        assert response.status == 404 and b"private" not in response.body, path


def test_a_graph_page_draws_the_edges_that_carry_the_most_influence():
    from monosemantic.circuits import Graph
    from monosemantic.viz import graph_html

    meta = {"tokens": ["a", "b", "c"], "layers": [0],
            "target": {"token": 1, "text": "d", "position": -1, "minus": None, "value": 1.0}}
    scores = {"completeness": 1.0, "replacement": 1.0, "active_features": 0, "expanded_features": 0}
    nodes = [{"id": "target", "kind": "target", "position": 2, "value": 1.0, "influence": 1.0, "text": "d"}]
    nodes += [{"id": f"token:{p}", "kind": "token", "position": p, "influence": 0.3, "text": t}
              for p, t in enumerate("abc")]
    edges = [{"source": f"token:{p}", "target": "target", "weight": w, "influence": i}
             for p, w, i in ((0, 5.0, 0.1), (1, -1.0, 0.6), (2, 2.0, 0.3))]
    page = graph_html(Graph(meta, scores, nodes, edges), max_edges=2)
    drawn = re.findall(r'data-source="([^"]+)" data-target="target" data-weight="([^"]+)"', page)
    assert drawn == [("token:1", "-1.0"), ("token:2", "2.0")]  # by influence, not by weight
    assert "drawing the 2 edges" in page
