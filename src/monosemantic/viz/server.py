"""``monosemantic serve``: the dashboard as a local web app that also runs new prompts live.

The standard library's ``ThreadingHTTPServer`` is enough for one researcher's browser and adds
no dependency. It binds 127.0.0.1 unless told otherwise: the app runs a model on whatever it is
sent, so it should not be reachable from other machines by default.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import MonosemanticError
from ..features import dictionary_fingerprint
from .app import DashboardApp, PromptRunner, Response, open_pages

MAX_BODY_BYTES = 1 << 20
# A client has this long for each read or write of a request (a stalled one no longer holds a thread).
REQUEST_TIMEOUT_S = 30.0
# Names a browser may send in Host for a server on the loopback: anything else is DNS rebinding,
# a page from elsewhere that made its own name point at this machine.
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
# Pages load only their own scripts and styles; token colours are inline style attributes.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _handler_for(app: DashboardApp, quiet: bool, timeout: float):
    class Handler(BaseHTTPRequestHandler):
        server_version = "monosemantic"

        def do_GET(self):
            if self._host_allowed():
                self._answer(self._params(self._query()))

        def do_POST(self):
            if not self._host_allowed():
                return
            given = self.headers.get("Content-Length") or "0"
            if not given.isdigit():
                self._send(_text(400, f"Content-Length {given[:20]!r} is not a byte count"))
                return
            length = int(given)
            if length > MAX_BODY_BYTES:
                self._send(_text(413, f"request body too large; at most {MAX_BODY_BYTES:,} bytes"))
                return
            form = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
            self._answer({**self._params(self._query()), **self._params(form)})

        def _host_allowed(self) -> bool:
            bound, port = cast(ThreadingHTTPServer, self.server).server_address[:2]
            if bound not in _LOOPBACK_ADDRESSES:
                return True  # bound for other machines on purpose: their names cannot be known here
            host = (self.headers.get("Host") or "").strip().lower()
            if host in _LOOPBACK_NAMES or host in {f"{name}:{port}" for name in _LOOPBACK_NAMES}:
                return True
            self._send(_text(403, f"Host {host[:60]!r} is not this server's; open it as http://127.0.0.1:{port}/"))
            return False

        def _query(self) -> str:
            return urlsplit(self.path).query

        @staticmethod
        def _params(encoded: str) -> dict[str, str]:
            return {k: v[-1] for k, v in parse_qs(encoded, keep_blank_values=True).items()}

        def _answer(self, params: dict[str, str]) -> None:
            path = unquote(urlsplit(self.path).path)
            try:
                response = app.handle(self.command, path, params)
            except Exception as e:  # noqa: BLE001 - one bad request must not stop the app
                self.log_error("error answering %s: %r", path, e)
                response = Response(500, "text/plain; charset=utf-8", f"internal error: {e}".encode())
            self._send(response)

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format, *args):
            if not quiet:
                super().log_message(format, *args)

    Handler.timeout = timeout  # seconds per socket read or write (StreamRequestHandler.setup applies it)
    return Handler


def _text(status: int, message: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", message.encode())


def make_server(app: DashboardApp, host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False,
                timeout: float = REQUEST_TIMEOUT_S) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for ``app``; port 0 picks a free port (see ``server_url``).

    Each request must arrive within ``timeout`` seconds per read, with a body of at most
    MAX_BODY_BYTES; on the loopback, a request whose Host header names another site is refused
    (DNS rebinding).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise MonosemanticError(f"port {port!r} is invalid; expected 0 to 65535 (--port; 0 picks any free one)")
    try:
        server = ThreadingHTTPServer((host, port), _handler_for(app, quiet, timeout))
    except OSError as e:
        raise MonosemanticError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                                "pick another --port, or 0 for any free one") from None
    server.daemon_threads = True
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def build_app(folder, *, dictionary=None, lm=None, site: str | None = None) -> DashboardApp:
    """The app for a feature or dashboard folder; prompts run when both ``dictionary`` and ``lm`` are given.

    The dictionary must be the one the folder was made from (same fingerprint).
    """
    pages = open_pages(folder)
    runner = None
    if dictionary is not None and lm is not None:
        if pages.fingerprint and dictionary_fingerprint(dictionary) != pages.fingerprint:
            raise MonosemanticError(f"{folder} was made from another dictionary (fingerprint "
                                    f"{str(pages.fingerprint)[:12]}); pass the dictionary it was made from")
        runner = PromptRunner(lm, dictionary.to(lm.device), site=site)
    return DashboardApp(pages, runner)


def recorded_site(folder) -> str | None:
    """The site a feature or dashboard folder says its dictionary reads, when it says."""
    for name in ("dashboard.json", "features.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("site")
            except (OSError, ValueError):
                return None
    return None
