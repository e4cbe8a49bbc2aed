"""Inline SVG charts: no image files, crisp at any zoom, and cheap enough for thousands of pages."""

from __future__ import annotations

from .markup import esc, number


def histogram_svg(counts: list[int], edges: list[float], *, width: int = 560, height: int = 160,
                  title: str = "activation histogram") -> str:
    """Bars of ``counts`` over the bins ``edges`` (``len(edges) == len(counts) + 1``), axes labelled.

    Each bar carries a ``<title>`` with its range and count, shown on hover.
    """
    if len(edges) != len(counts) + 1:
        raise ValueError(f"a histogram needs one more edge than counts; got {len(counts)} counts, {len(edges)} edges")
    left, bottom, top = 44, 22, 8
    plot_w, plot_h = width - left - 8, height - bottom - top
    opening = (f'<svg class="hist" role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">')
    parts = [opening, f"<title>{esc(title)}</title>"]
    tallest = max(counts, default=0)
    if not counts or tallest == 0:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
                     "no non-zero activations</text>")
        parts.append("</svg>")
        return "".join(parts)
    bar_w = plot_w / len(counts)
    for i, count in enumerate(counts):
        if count == 0:
            continue
        bar_h = max(plot_h * count / tallest, 1.0)
        x, y = left + i * bar_w, top + plot_h - bar_h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{bar_h:.1f}">'
                     f"<title>{number(edges[i])} to {number(edges[i + 1])}: {count:,}</title></rect>")
    axis_y = top + plot_h
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" class="axis"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" class="axis"/>')
    parts.append(f'<text x="{left}" y="{height - 6}" text-anchor="start">{number(edges[0])}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">{number(edges[-1])}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{tallest:,}</text>')
    parts.append(f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)
