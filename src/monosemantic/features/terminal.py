"""The prompt view in a terminal (rich): coloured tokens, features left and neurons right.

Colour intensity is a token's activation divided by the largest absolute activation of its
row, so every row uses the full scale (orange for positive, blue for negative; the scale of
:mod:`.shading`). The same view as HTML is ``viz.prompt_html``.
"""

from __future__ import annotations

from .prompt import PromptView, ViewRow
from .shading import act_alpha, act_rgb, visible_token


def row_max(row: ViewRow) -> float:
    return max((abs(a) for a in row.acts), default=0.0)


def _blend(act: float, max_act: float) -> str:
    alpha = act_alpha(act, max_act)
    r, g, b = act_rgb(act)
    mix = [round(255 + (c - 255) * alpha) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def _row_text(tokens: list[str], row: ViewRow):
    from rich.text import Text

    text, top = Text(overflow="fold"), row_max(row)
    for token, act in zip(tokens, row.acts):
        text.append(visible_token(token), style=f"black on {_blend(act, top)}")
    return text


def render_terminal(view: PromptView, console=None) -> None:
    """Print the view with rich: one table row per rank, features left and neurons right."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"top features and neurons at {view.site}", show_lines=True, expand=True)
    table.add_column("feature", no_wrap=True)
    table.add_column("activation per token", ratio=1)
    table.add_column("neuron", no_wrap=True)
    table.add_column("activation per token", ratio=1)
    for rank in range(max(len(view.features), len(view.neurons))):
        cells = []
        for rows, sign in ((view.features, "Σ"), (view.neurons, "Σ|·|")):
            if rank < len(rows):
                row = rows[rank]
                cells += [f"{row.index}\n{sign} {row.total:.3g}\nmax {row_max(row):.3g}", _row_text(view.tokens, row)]
            else:
                cells += ["", ""]
        table.add_row(*cells)
    console.print(table)
