"""Pictures and pages of a dictionary's features: the static dashboard, the local web app, and HTML views.

- :func:`build_dashboard`: a self-contained HTML site (index with search and sorting, one page
  per latent) from a feature folder, opening from ``file://`` with no network;
- :func:`build_app` / :func:`make_server`: ``monosemantic serve``, the same pages served on
  127.0.0.1 plus a prompt form that runs the dictionary live;
- :func:`graph_html` / :func:`write_graph_page`: an attribution graph (``circuits.Graph``) as a page;
- :func:`prompt_html`: a ``features.PromptView`` as a standalone page; :func:`token_spans_html` is
  the coloured-token markup every page shares.
"""

from .app import DashboardApp, PromptRunner, Response
from .graph_page import graph_html, write_graph_page, write_graph_site
from .prompt_page import prompt_html
from .server import build_app, make_server, server_url
from .site import build_dashboard, read_dashboard
from .tokens import act_colour, token_spans_html

__all__ = ["DashboardApp", "PromptRunner", "Response", "act_colour", "build_app", "build_dashboard", "graph_html",
           "make_server", "prompt_html", "read_dashboard", "server_url", "token_spans_html", "write_graph_page",
           "write_graph_site"]
