"""The dashboard's stylesheet and the index page's script, written beside the pages (no CDN, works offline).

The script builds the latent table from ``index-data.js`` (loaded by a ``<script>`` tag, because
browsers refuse ``fetch()`` of local files opened from ``file://``) using ``textContent`` only,
so corpus text can never become markup; it filters rows by explanation or token text and sorts
them by density, maximum activation or index.
"""

from .tokens import TOKEN_CSS

STYLE_CSS = """\
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2457c5; --bar: #4d7fd6; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1180px; background: #fff; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.15em; margin: 1.4em 0 0.4em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; color: var(--muted); }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav { display: flex; gap: 14px; align-items: baseline; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
nav .where { color: var(--muted); margin-left: auto; font-size: 0.9em; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
th[data-sort] { cursor: pointer; color: var(--accent); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .tokens, .tok { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.92em; }
.tokens { white-space: pre-wrap; }
.stats { display: flex; gap: 28px; flex-wrap: wrap; margin: 8px 0; }
.stats div span { display: block; color: var(--muted); font-size: 0.85em; }
.explanation { font-size: 1.05em; padding: 8px 12px; background: #f3f6fb; border-left: 3px solid var(--accent); }
.muted { color: var(--muted); }
.columns { display: flex; gap: 40px; flex-wrap: wrap; }
.example { padding: 5px 0; border-bottom: 1px dashed var(--line); white-space: pre-wrap; word-break: break-word;
           font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.9em; }
.example .peak-act { color: var(--muted); font-size: 0.85em; margin-right: 8px; }
svg.hist rect { fill: var(--bar); } svg.hist .axis { stroke: var(--muted); }
svg.hist text { font-size: 11px; fill: var(--muted); }
#controls { display: flex; gap: 12px; align-items: center; margin: 10px 0; flex-wrap: wrap; }
#search { width: 340px; padding: 5px 8px; font-size: 1em; }
.error { color: #a11; background: #fdeeee; border: 1px solid #e5b5b5; padding: 8px 12px; }
textarea { width: 100%; font: inherit; font-family: ui-monospace, Menlo, Consolas, monospace; padding: 6px; }
.prompt-view > div { flex: 1; min-width: 0; }
.view-row { padding: 4px 0; }
""" + TOKEN_CSS + "\n"

INDEX_JS = """\
(function () {
  "use strict";
  var data = window.MONOSEMANTIC_INDEX;
  var body = document.getElementById("latents-body");
  var search = document.getElementById("search");
  var sort = document.getElementById("sort");
  var count = document.getElementById("count");
  if (!data || !body) { return; }

  function visible(token) {
    return token.replace(/\\n/g, "\\u21b5").replace(/\\t/g, "\\u2192");
  }
  function percent(x) {
    if (x === 0) { return "0%"; }
    var p = x * 100;
    return (p >= 0.001 ? Number(p.toPrecision(3)) : p.toExponential(1)) + "%";
  }
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  var rows = data.latents.map(function (l) {
    var tr = document.createElement("tr");
    tr.dataset.latent = String(l.i);
    var first = cell(tr, "", "num");
    if (l.page) {
      var a = document.createElement("a");
      a.href = "features/" + l.i + ".html";
      a.textContent = String(l.i);
      first.appendChild(a);
    } else {
      first.textContent = String(l.i);
    }
    cell(tr, percent(l.d), "num");
    cell(tr, Number(l.m.toPrecision(3)).toString(), "num");
    cell(tr, l.p.map(visible).join("  "), "tokens");
    cell(tr, l.t.map(visible).join("  "), "tokens");
    cell(tr, l.e || "");
    cell(tr, l.s || "");
    l.row = tr;
    l.haystack = [l.e || ""].concat(l.p, l.t).join("\\n").toLowerCase();
    return l;
  });
  var orders = {
    density: function (a, b) { return b.d - a.d || a.i - b.i; },
    max: function (a, b) { return b.m - a.m || a.i - b.i; },
    index: function (a, b) { return a.i - b.i; }
  };
  function filter() {
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (l) {
      var hit = !query || l.haystack.indexOf(query) >= 0;
      if (l.row.hidden === hit) { l.row.hidden = !hit; }
      if (hit) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " latents";
  }
  function order() {
    var fragment = document.createDocumentFragment();
    rows.slice().sort(orders[sort.value] || orders.density).forEach(function (l) { fragment.appendChild(l.row); });
    body.appendChild(fragment);
  }
  search.addEventListener("input", filter);
  sort.addEventListener("change", order);
  Array.prototype.forEach.call(document.querySelectorAll("th[data-sort]"), function (th) {
    th.addEventListener("click", function () { sort.value = th.dataset.sort; order(); });
  });
  order();
  filter();
})();
"""
