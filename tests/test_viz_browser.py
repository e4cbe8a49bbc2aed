"""Dashboards in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

One browser session for the module. The static site is opened from ``file://``; the live app is
started on 127.0.0.1 (port 0) in a thread, a prompt is submitted through its form, and the
coloured tokens' ``data-act`` values are compared with activations computed here.
"""

from __future__ import annotations

import io
import os
import threading

import pytest
import torch
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from monosemantic.viz import build_app, build_dashboard, make_server, server_url
from test_viz import (
    ATTACK,
    EXPLAINED,
    EXPLANATION,
    SITE,
    index_rows,
    library_codes,
    make_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:  # a failure, never a skip: a run without the browser must not look green
        pytest.fail(f"{' and '.join(missing)} not found: the browser tests need Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver, as .ci/run does)", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                "--disable-component-update", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return make_features(tiny_model_dir("llama"), tmp_path_factory.mktemp("viz-browser"))


@pytest.fixture(scope="module")
def site(built, tmp_path_factory):
    return build_dashboard(built.folder, tmp_path_factory.mktemp("site") / "dashboard", progress=False)


@pytest.fixture(scope="module")
def live(built):
    httpd = make_server(build_app(built.folder, dictionary=built.dictionary, lm=built.lm, site=SITE), port=0,
                        quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server_url(httpd)
    httpd.shutdown()
    httpd.server_close()


def visible_rows(driver) -> list[int]:
    """Latents of the table rows the browser lays out, top to bottom (one script call, not one per row)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#latents-body tr'))"
        ".filter(function (r) { return r.getClientRects().length > 0; })"
        ".map(function (r) { return Number(r.dataset.latent); });")


def assert_no_alert(driver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is what raises when there is none


def assert_no_console_errors(driver) -> None:
    """No script error, failed load or CSP violation was logged since the last check."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def assert_not_blank(png: bytes) -> None:
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size[0] >= 800
    assert ImageStat.Stat(image).stddev[0] > 10  # text, tables and colours, not a flat page
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_static_dashboard_from_file_search_sort_and_click_through(browser, site):
    rows = index_rows(site)
    browser.get((site / "index.html").as_uri())
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#latents-body tr")) == 128)
    by_density = sorted(range(128), key=lambda i: (-rows[i]["d"], i))
    assert visible_rows(browser) == by_density
    assert_not_blank(browser.get_screenshot_as_png())

    search = browser.find_element(By.ID, "search")
    search.send_keys("alert")
    expected = [i for i in by_density
                if "alert" in (rows[i]["e"] or "").lower()
                or any("alert" in t.lower() for t in rows[i]["p"] + rows[i]["t"])]
    assert EXPLAINED in expected
    assert visible_rows(browser) == expected
    assert browser.find_element(By.ID, "count").text == f"{len(expected)} of 128 latents"
    search.clear()
    search.send_keys("\u00a7nothing matches this\u00a7")
    assert visible_rows(browser) == []
    search.clear()
    browser.execute_script("arguments[0].dispatchEvent(new Event('input'))", search)

    Select(browser.find_element(By.ID, "sort")).select_by_value("max")
    assert visible_rows(browser) == sorted(range(128), key=lambda i: (-rows[i]["m"], i))
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="index"]').click()
    assert visible_rows(browser) == list(range(128))
    assert_no_console_errors(browser)

    target = by_density[0]
    browser.find_element(By.CSS_SELECTOR, f'#latents-body tr[data-latent="{target}"] a').click()
    WebDriverWait(browser, 20).until(expected_conditions.title_is(f"Latent {target}"))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Latent {target}"
    examples = browser.find_elements(By.CSS_SELECTOR, ".example")
    assert len(examples) >= 1
    spans = browser.find_elements(By.CSS_SELECTOR, ".example span.tok")
    acts = [float(s.get_attribute("data-act")) for s in spans]
    assert max(acts) == pytest.approx(rows[target]["m"], rel=1e-5)  # the top example holds the maximum
    assert browser.find_elements(By.CSS_SELECTOR, "svg.hist rect")
    assert_not_blank(browser.get_screenshot_as_png())


def test_script_tags_in_corpus_and_explanation_stay_text(browser, site):
    browser.get((site / "features" / f"{EXPLAINED}.html").as_uri())
    assert_no_alert(browser)
    assert browser.find_element(By.ID, "explanation").text == EXPLANATION
    assert "<script>alert" not in browser.page_source and "<img src=x" not in browser.page_source
    assert not browser.find_elements(By.CSS_SELECTOR, "img")
    # Every page's examples come from the corpus; some latent shows the tag, escaped and visible.
    shown = ""
    for latent in range(128):
        browser.get((site / "features" / f"{latent}.html").as_uri())
        assert_no_alert(browser)
        shown = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".example"))
        if "alert(1)" in shown:
            break
    assert "<script>alert(1)" in shown.replace("\u21b5", "")
    assert "<script>alert" not in browser.page_source


def test_live_app_prompt_colours_match_the_library(browser, live, built):
    browser.get(live)
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#latents-body tr")) == 128)
    browser.find_element(By.CSS_SELECTOR, '#latents-body tr[data-latent="5"] a').click()
    WebDriverWait(browser, 20).until(expected_conditions.title_is("Latent 5"))
    browser.find_element(By.LINK_TEXT, "Run a prompt").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.ID, "prompt-form")))
    prompt = f"Paragraph 7: the page shows {ATTACK} and x = 2 + 1."
    browser.find_element(By.ID, "text").send_keys(prompt)
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "prompt-result")))
    assert_no_alert(browser)
    assert_no_console_errors(browser)
    assert_not_blank(browser.get_screenshot_as_png())

    ids_1S = built.lm.tokenizer(prompt, return_tensors="pt").input_ids
    codes_BSF, mask_BS = library_codes(built.lm, built.dictionary, ids_1S)
    codes_SF = codes_BSF[0] * mask_BS[0, :, None]
    rows = browser.find_elements(By.CSS_SELECTOR, "#features .view-row")
    shown = [int(r.get_attribute("data-latent")) for r in rows]
    assert shown == torch.topk(codes_SF.sum(0), len(shown)).indices.tolist()
    for row, latent in zip(rows, shown):
        acts = [float(s.get_attribute("data-act")) for s in row.find_elements(By.CSS_SELECTOR, "span.tok")]
        assert acts == pytest.approx(codes_SF[:, latent].tolist(), abs=1e-5)
        coloured = [s for s in row.find_elements(By.CSS_SELECTOR, "span.tok") if float(s.get_attribute("data-act")) > 0]
        assert all(s.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)" for s in coloured)
    neurons = browser.find_elements(By.CSS_SELECTOR, "#neurons .view-row")
    assert neurons and all(r.get_attribute("data-neuron") is not None for r in neurons)
    assert ATTACK in browser.find_element(By.CSS_SELECTOR, "#features .view-row .example").text

    browser.get(live + "features/128.html")
    assert "feature index 128 is out of range" in browser.find_element(By.ID, "error").text
    browser.get(live + "prompt")
    browser.find_element(By.ID, "text").send_keys("word " * 300)
    browser.find_element(By.ID, "run").click()
    error = WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "error")))
    assert "reads at most 256" in error.text


@pytest.fixture(scope="module")
def graph_page(tiny_model_dir, tmp_path_factory):
    from monosemantic.circuits import Replacement, trace
    from monosemantic.models import load_model
    from monosemantic.viz import write_graph_page
    from test_circuits import PROMPT, _transcoders

    lm = load_model(str(tiny_model_dir("llama")))
    graph = trace(Replacement(lm, _transcoders("clt")), PROMPT, " +", minus=" -", progress=False)
    folder = tmp_path_factory.mktemp("graph")
    features = [n for n in graph.nodes if n["kind"] == "feature"]
    for node in features:
        page = folder / f"layer_{node['layer']}" / f"{node['latent']}.html"
        page.parent.mkdir(exist_ok=True)
        page.write_text(f"<html><head><title>feature {node['layer']}/{node['latent']}</title></head></html>")
    examples = {(n["layer"], n["latent"]): [ATTACK, f"example of {n['latent']}"] for n in features}
    path = write_graph_page(graph, folder / "graph.html", feature_href="layer_{layer}/{latent}.html",
                            examples=examples)
    return graph, path


def test_graph_page_draws_every_node_and_edge_with_its_numbers(browser, graph_page):
    graph, path = graph_page
    browser.get(path.as_uri())
    shown = {e.get_attribute("data-node"): e for e in browser.find_elements(By.CSS_SELECTOR, "g.node")}
    assert set(shown) == {n["id"] for n in graph.nodes}
    for node in graph.nodes:
        assert float(shown[node["id"]].get_attribute("data-influence")) == node["influence"]
        if node["kind"] == "feature":
            assert float(shown[node["id"]].get_attribute("data-activation")) == node["activation"]
    lines = browser.find_elements(By.CSS_SELECTOR, "line.edge")
    drawn = {(e.get_attribute("data-source"), e.get_attribute("data-target"), float(e.get_attribute("data-weight")))
             for e in lines}
    assert drawn == {(e["source"], e["target"], e["weight"]) for e in graph.edges}
    laid_out = browser.execute_script("return Array.from(document.querySelectorAll('line.edge'))"
                                      ".filter(function (l) { var r = l.getBoundingClientRect();"
                                      " return r.width + r.height > 0; }).length;")
    assert laid_out == len(lines) > 0
    assert_not_blank(browser.get_screenshot_as_png())
    assert_no_alert(browser)
    assert "<script>alert" not in browser.page_source


def test_graph_page_hover_shows_the_card_and_a_click_opens_the_feature_page(browser, graph_page):
    from selenium.webdriver.common.action_chains import ActionChains

    graph, path = graph_page
    browser.get(path.as_uri())
    node = max((n for n in graph.nodes if n["kind"] == "feature"), key=lambda n: n["influence"])
    group = browser.find_element(By.CSS_SELECTOR, f'g.node[data-node="{node["id"]}"]')
    card = group.find_element(By.CSS_SELECTOR, ".card")
    assert not card.is_displayed()
    ActionChains(browser).move_to_element(group.find_element(By.TAG_NAME, "circle")).perform()
    WebDriverWait(browser, 10).until(lambda _d: card.is_displayed())
    text = card.text
    assert f"feature {node['latent']} of layer {node['layer']}" in text
    assert f"example of {node['latent']}" in text and "<script>alert(1)" in text  # escaped, shown as text
    assert_no_alert(browser)
    group.find_element(By.TAG_NAME, "circle").click()
    WebDriverWait(browser, 10).until(lambda d: d.title == f"feature {node['layer']}/{node['latent']}")


def test_live_app_serves_a_graph_folder_and_its_feature_pages(browser, graph_page, tmp_path_factory):
    from monosemantic.circuits import Example
    from monosemantic.viz import write_graph_site

    graph, _ = graph_page
    features = [n for n in graph.nodes if n["kind"] == "feature"]
    examples = {(n["layer"], n["latent"]): [Example(["a", ATTACK, " b"], [0.0, 2.0, 1.0], 1)] for n in features}
    folder = write_graph_site(graph, tmp_path_factory.mktemp("served") / "graph", examples)
    httpd = make_server(build_app(folder), port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = server_url(httpd)
        browser.get_log("browser")  # what earlier tests' pages logged is theirs
        browser.get(url)
        shown = {e.get_attribute("data-node") for e in browser.find_elements(By.CSS_SELECTOR, "g.node")}
        assert shown == {n["id"] for n in graph.nodes}
        node = features[0]
        browser.find_element(By.CSS_SELECTOR, f'g.node[data-node="{node["id"]}"] circle').click()
        WebDriverWait(browser, 10).until(lambda d: d.title == f"feature {node['latent']} of layer {node['layer']}")
        spans = browser.find_elements(By.CSS_SELECTOR, "span.tok")
        assert [float(s.get_attribute("data-act")) for s in spans] == [0.0, 2.0, 1.0]
        assert ATTACK in spans[1].text
        assert_no_alert(browser)
        assert_no_console_errors(browser)  # the Content-Security-Policy lets the page work: it runs no script
    finally:
        httpd.shutdown()
        httpd.server_close()
