"""The local web app's logic, apart from HTTP: which page answers which path, and running prompts.

:class:`DashboardApp` maps a request (method, path, query, form) to a :class:`Response`, so the
HTTP layer (``server.py``) stays a thin shell. Pages come from a :class:`PageSource`: rendered
on request from feature data (``LivePages``), or read from a built dashboard (``BuiltPages``).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import NamedTuple

from ..errors import MonosemanticError
from ..features import FeatureData, prompt_view
from .assets import INDEX_JS, STYLE_CSS
from .feature_page import feature_page
from .graph_page import GRAPH_FILE
from .markup import esc
from .pages import LIVE_LINKS, index_data_js, index_page, nav, page
from .prompt_page import prompt_fragment, view_json
from .site import read_dashboard

MAX_PROMPT_CHARS = 20_000  # a form post longer than this is refused before tokenising
_FEATURE_PATH = re.compile(r"^/features/([^/]+?)(?:\.html)?$")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json"}


class Response(NamedTuple):
    status: int  # HTTP status code
    content_type: str  # value of the Content-Type header
    body: bytes  # what is sent


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, _TYPES[".html"], text.encode("utf-8"))


class LivePages:
    """Pages rendered on request from loaded feature data (nothing is written to disk)."""

    def __init__(self, data):
        self.data = data
        self.n_latents = data.n_latents
        self.fingerprint = data.meta.get("fingerprint")
        self._index_js: str | None = None  # computed once: it touches every latent

    def get(self, name: str) -> str | None:
        if name == "index.html":
            return index_page(self.data)
        if name == "index-data.js":
            if self._index_js is None:
                self._index_js = index_data_js(self.data, set(range(self.n_latents)))
            return self._index_js
        if name == "style.css":
            return STYLE_CSS
        if name == "index.js":
            return INDEX_JS
        return None

    def feature(self, latent: int) -> str | None:
        before = latent - 1 if latent > 0 else None
        after = latent + 1 if latent + 1 < self.n_latents else None
        return feature_page(self.data, latent, neighbours=(before, after))


class BuiltPages:
    """The files of a dashboard folder written by ``build_dashboard``."""

    def __init__(self, folder: Path, record: dict):
        self.folder = folder
        self.n_latents = int(record["n_latents"])
        self.fingerprint = record.get("fingerprint")

    def get(self, name: str) -> str | None:
        if name not in ("index.html", "index-data.js", "style.css", "index.js"):
            return None
        return self._read(self.folder / name)

    def feature(self, latent: int) -> str | None:
        return self._read(self.folder / "features" / f"{latent}.html")

    @staticmethod
    def _read(path: Path) -> str | None:
        return path.read_text(encoding="utf-8") if path.is_file() else None


class GraphPages:
    """The files of a graph folder written by ``write_graph_site`` (``monosemantic trace``)."""

    _NAMES = re.compile(r"^(index\.html|graph\.json|features/layer_\d+/\d+\.html)$")  # nothing else is read
    n_latents = 0  # the graph's features are pages under features/layer_L/, not latents of one dictionary
    fingerprint = None

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, name: str) -> str | None:
        return BuiltPages._read(self.folder / name) if self._NAMES.match(name) else None

    def feature(self, latent: int) -> str | None:
        return None


def open_pages(folder) -> LivePages | BuiltPages | GraphPages:
    """A page source for a feature folder, a dashboard folder or a graph folder."""
    folder = Path(folder)
    if (folder / GRAPH_FILE).is_file() and (folder / "index.html").is_file():
        return GraphPages(folder)
    record = read_dashboard(folder)
    if record is not None:
        return BuiltPages(folder, record)
    if (folder / "features.json").is_file():
        return LivePages(FeatureData.load(folder))
    raise MonosemanticError(f"{folder} is neither a feature folder (features.json), a dashboard (dashboard.json) "
                            "nor a graph (graph.json); run `monosemantic features`, `dashboard` or `trace` first")


class PromptRunner:
    """Runs the dictionary on a prompt with the model live; one prompt at a time (hooks are per model)."""

    def __init__(self, lm, dictionary, *, site: str | None = None, top_n: int = 8):
        self.lm, self.dictionary, self.site, self.top_n = lm, dictionary, site, top_n
        self._lock = threading.Lock()

    def run(self, text: str):
        """The ``features.PromptView`` of ``text``; MonosemanticError for a prompt the model cannot take."""
        if len(text) > MAX_PROMPT_CHARS:
            raise MonosemanticError(f"the prompt has {len(text):,} characters, more than the {MAX_PROMPT_CHARS:,} "
                                    "this app accepts; shorten it")
        with self._lock:
            return prompt_view(self.lm, self.dictionary, text, top_n=self.top_n, site=self.site)


class DashboardApp:
    """Answers requests from a page source and, when a model and dictionary are loaded, runs prompts."""

    def __init__(self, pages: LivePages | BuiltPages | GraphPages, runner: PromptRunner | None = None):
        self.pages, self.runner = pages, runner

    def handle(self, method: str, path: str, params: dict[str, str]) -> Response:
        if method not in ("GET", "POST"):
            return self._error(405, f"method {method} is not supported; use GET or POST")
        if path in ("/", ""):
            path = "/index.html"
        if path == "/prompt":
            return self._prompt_page(params.get("text"))
        if path == "/api/prompt":
            return self._prompt_api(params.get("text"))
        match = _FEATURE_PATH.match(path)
        if match:
            return self._feature(match.group(1))
        text = self.pages.get(path.lstrip("/"))
        if text is None:
            return self._error(404, f"there is no page at {path}; start from the index")
        if path.endswith(".html"):
            text = with_live_links(text)
        return Response(200, _TYPES[Path(path).suffix], text.encode("utf-8"))

    def _feature(self, raw: str) -> Response:
        n = self.pages.n_latents
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= n:
            return self._error(404, f"feature index {raw} is out of range: this dictionary has latents 0..{n - 1}")
        text = self.pages.feature(int(raw))
        if text is None:
            return self._error(404, f"latent {raw} has no page in this dashboard (it was built with max_pages); "
                                    "rebuild it with more pages, or serve the feature folder instead")
        return html_response(with_live_links(text))

    def _error(self, status: int, message: str) -> Response:
        body = f'{with_live_links(nav("/"))}<h1>Not available</h1><p class="error" id="error">{esc(message)}</p>'
        return html_response(page(f"Error {status}", body, root="/"), status)

    def _run(self, text: str):
        """(200, the prompt view) or (400, why not)."""
        if self.runner is None:
            return 400, ("prompts need a model and the dictionary: restart with "
                         "`monosemantic serve FOLDER --dictionary DIR [--model M]`")
        try:
            return 200, self.runner.run(text)
        except MonosemanticError as e:
            return 400, str(e)

    def _prompt_page(self, text: str | None) -> Response:
        status, shown = 200, ""
        if text is not None:
            status, result = self._run(text)
            shown = (f'<div id="prompt-result">{prompt_fragment(result)}</div>' if status == 200
                     else f'<p class="error" id="error">{esc(result)}</p>')
        form = (f'<form method="post" action="/prompt" id="prompt-form"><p><textarea name="text" id="text" rows="5" '
                f'placeholder="Type a prompt">{esc(text or "")}</textarea></p>'
                '<p><button type="submit" id="run">Run prompt</button></p></form>')
        body = f'{with_live_links(nav("/"))}<h1>Run a prompt</h1>{form}{shown}'
        return html_response(page("Run a prompt", body, root="/"), status)

    def _prompt_api(self, text: str | None) -> Response:
        if text is None:
            status, result = 400, "pass the prompt as the parameter text (e.g. /api/prompt?text=hello)"
        else:
            status, result = self._run(text)
        if status == 200:
            payload = {**view_json(result), "html": prompt_fragment(result)}
        else:
            payload = {"error": result}
        return Response(status, _TYPES[".json"], json.dumps(payload).encode("utf-8"))


def with_live_links(html: str) -> str:
    """Pages are rendered for the static site; served, their navigation also offers the prompt page."""
    return html.replace(LIVE_LINKS, '<a href="/prompt">Run a prompt</a>', 1)
