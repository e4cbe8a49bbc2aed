"""One latent's page: statistics, explanation, histogram, logit and input-token tables, examples."""

from __future__ import annotations

import functools

from ..features.shading import visible_token
from .markup import esc, number, percent, scores_text, show_token
from .pages import nav, page
from .svg import histogram_svg
from .tokens import token_spans_html


def feature_page(data, latent: int, *, neighbours: tuple[int | None, int | None] = (None, None)) -> str:
    """The HTML page of ``latent``; ``neighbours`` are the previous and next latents that have pages."""
    scale = data.max_act(latent)
    sections = [
        _header(data, latent, neighbours),
        _summary(data, latent),
        _histogram(data, latent),
        _logit_tables(data, latent),
        _input_tokens(data, latent),
        _examples("Top activations", data, data.top_examples(latent), scale),
        _quantiles(data, latent, scale),
        _examples("Random contexts where it is zero", data, data.negative_examples(latent), scale),
    ]
    return page(f"Latent {latent}", "\n".join(sections), root="../")


def _histogram(data, latent: int) -> str:
    svg = histogram_svg(*data.histogram(latent))
    return f'<h2>Activation histogram</h2><p class="muted">positive activations only</p>{svg}'


def _header(data, latent: int, neighbours) -> str:
    before, after = neighbours
    links = []
    if before is not None:
        links.append(f'<a href="{before}.html" rel="prev">← latent {before}</a>')
    if after is not None:
        links.append(f'<a href="{after}.html" rel="next">latent {after} →</a>')
    return (f"{nav('../', here=f'latent {latent} of {data.n_latents:,}')}\n"
            f"<h1>Latent {latent}</h1><p>{' · '.join(links)}</p>")


def _summary(data, latent: int) -> str:
    stats = (("density", percent(data.density(latent))), ("max activation", number(data.max_act(latent))),
             ("mean activation", number(data.mean_act(latent))))
    cells = "".join(f"<div><span>{name}</span>{value}</div>" for name, value in stats)
    explanation = data.explanation(latent)
    shown = (f'<p class="explanation" id="explanation">{esc(explanation)}</p>' if explanation
             else '<p class="muted" id="explanation">No explanation yet.</p>')
    scores = scores_text(data.score(latent))
    if scores:
        shown += f'<p id="score">Score: {esc(scores)}</p>'
    return f'<div class="stats">{cells}</div>{shown}'


def _token_table(title: str, headers: tuple[str, ...], rows: list[tuple]) -> str:
    head = "".join(f'<th class="{"num" if i else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i else "tokens"}">{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return f"<div><h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _logit_tables(data, latent: int) -> str:
    promoted, suppressed = data.logit_effects(latent)

    def rows(pairs):
        return [(show_token(data.token_str(t)), number(v)) for t, v in pairs]

    return ('<h2>Logit effects</h2><div class="columns">'
            + _token_table("Promoted", ("token", "logit"), rows(promoted))
            + _token_table("Suppressed", ("token", "logit"), rows(suppressed)) + "</div>")


def _input_tokens(data, latent: int) -> str:
    rows = [(show_token(data.token_str(t)), f"{n:,}", number(mean)) for t, n, mean in data.top_input_tokens(latent)]
    return "<h2>Input tokens it fires on</h2>" + _token_table("", ("token", "fires", "mean act"), rows)


@functools.lru_cache(maxsize=1 << 16)
def _silent_token(text: str) -> str:
    # Cached: a vocabulary's few thousand distinct tokens fill thousands of pages.
    return esc(visible_token(text)) + ("<br>" if "\n" in text else "")


def example_html(tokens: list[str], acts: list[float], scale: float) -> str:
    """A context with its firing tokens highlighted (``token_spans_html``); tokens where the latent is
    exactly zero are plain escaped text, which keeps a page of mostly-silent contexts small and quick."""
    parts: list[str] = []
    start = 0
    for end in range(len(tokens) + 1):
        silent = end < len(tokens) and acts[end] == 0
        if end == len(tokens) or silent:
            if end > start:
                parts.append(token_spans_html(tokens[start:end], acts[start:end], scale))
            if silent:
                parts.append(_silent_token(tokens[end]))
            start = end + 1
    return "".join(parts)


def _example(data, example, scale: float) -> str:
    peak = example.acts[example.peak] if example.acts else 0.0
    spans = example_html(data.tokens_str(example.tokens), example.acts, scale)
    return f'<div class="example"><span class="peak-act">{number(peak)}</span>{spans}</div>'


def _examples(title: str, data, examples, scale: float, level: str = "h2") -> str:
    shown = "".join(_example(data, e, scale) for e in examples) or '<p class="muted">none</p>'
    return f"<{level}>{esc(title)}</{level}>{shown}"


def _quantiles(data, latent: int, scale: float) -> str:
    bins = data.quantile_examples(latent)
    if not any(bins):
        return ""
    parts = ["<h2>Examples across the activation range</h2>"]
    for number_, examples in reversed(list(enumerate(bins))):
        if examples:
            peaks = [e.acts[e.peak] for e in examples]
            title = f"Interval {number_ + 1} of {len(bins)}: peaks {number(min(peaks))} to {number(max(peaks))}"
            parts.append(_examples(title, data, examples, scale, level="h3"))
    return "".join(parts)
