"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot`` and no ``matplotlib.use``: the figures never touch the process's global backend,
so writing a report from a notebook or a GUI session changes nothing there. matplotlib is
optional; :func:`available` says whether it is installed.
"""

from __future__ import annotations

import math
from pathlib import Path


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def frontier(points: list[tuple[str, float, float]], path: Path,
             curves: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """L0 against FVU, one labelled point per dictionary (lower left is better), and ``curves``:
    dense bases truncated to each L0 (their full-width point, FVU 0, would sit off a log axis)."""
    figure, axes = _figure()
    for name, curve in (curves or {}).items():
        axes.plot([l0 for l0, _ in curve], [fvu for _, fvu in curve], linestyle="--", marker=".", linewidth=1,
                  label=f"{name}, top-L0 coordinates")
    if curves:
        axes.legend(fontsize=7)
    labelled: list[tuple[float, float]] = []
    for name, l0, fvu in points:
        axes.scatter([l0], [fvu], s=36)
        # Seeds of one recipe land on top of each other: label the first of a cluster only.
        if not any(abs(math.log10(max(l0, 1e-9) / max(a, 1e-9))) < 0.03 and abs(fvu - b) < 0.03
                   for a, b in labelled):
            axes.annotate(name, (l0, fvu), textcoords="offset points", xytext=(4, 4), fontsize=8)
            labelled.append((l0, fvu))
    if all(l0 > 0 for _, l0, _ in points) and len(points) > 1:
        from matplotlib.ticker import NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # labels on 2x, 3x, ... would overlap
    axes.set_xlabel("L0 (mean latents firing per token)")
    axes.set_ylabel("FVU (fraction of variance unexplained)")
    axes.set_title("Sparsity-reconstruction frontier")
    axes.grid(True, alpha=0.3)
    return _save(figure, path)


def densities(histograms: list[tuple[str, list[float], list[int]]], path: Path) -> Path:
    """Log10 firing-density histograms, one step line per dictionary (edges shared)."""
    figure, axes = _figure()
    for name, edges, counts in histograms:
        axes.stairs(counts, edges, label=name, linewidth=1.5)
    axes.set_xlabel("log10 firing density")
    axes.set_ylabel("latents")
    axes.set_title("Latent firing densities (dead latents not shown)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def probing_curves(curves: dict[str, tuple[list[int], list[float | None], float | None]], majority: float | None,
                   path: Path, title: str) -> Path:
    """Overall probe accuracy against k, one line per name; dotted: its probe on all latents; dashed: majority.

    An accuracy of None (no probe at that k) leaves a gap in its line.
    """
    figure, axes = _figure()
    all_ks = sorted({k for ks, _, _ in curves.values() for k in ks})
    for name, (ks, accuracies, full) in curves.items():
        ys = [math.nan if a is None else a for a in accuracies]
        line = axes.plot(ks, ys, marker="o", label=name)[0] if ks else None
        if full is not None and not math.isnan(full):
            # A name without a curve (the raw activations) gets a black level of its own.
            color = line.get_color() if line is not None else "black"
            axes.axhline(full, linestyle=":", color=color, label=f"{name} (all)" if line is None else None)
    if majority is not None and not math.isnan(majority):
        axes.axhline(majority, linestyle="--", color="grey", label="majority class")
    _k_axis(axes, all_ks, "k (latents per class)")
    axes.set_ylabel("held-out accuracy")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def absorption_bars(series: dict[str, dict[str, float]], path: Path) -> Path:
    """Absorption fraction per letter (``{name: {letter: value}}``), grouped bars, one colour per name."""
    figure, axes = _figure(8.0, 4.2)
    letters = sorted({letter for values in series.values() for letter in values})
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        heights = [values.get(letter, math.nan) for letter in letters]
        axes.bar([j + i * width for j in range(len(letters))], [0.0 if math.isnan(h) else h for h in heights],
                 width=width, label=name)
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(letters))], letters)
    axes.set_ylabel("absorbed / true positives")
    axes.set_title("Feature absorption per first letter")
    axes.legend(fontsize=8)
    return _save(figure, path)


def task_intervals(groups: dict[str, list[tuple[int, float, float, float]]], ceiling: float | None, path: Path,
                   title: str) -> Path:
    """Mean task AUROC against k per group, with its interval over seeds as error bars, and the dense ceiling."""
    figure, axes = _figure()
    for offset, (name, points) in enumerate(groups.items()):
        ks = [k * (1 + 0.03 * (offset - len(groups) / 2)) for k, _, _, _ in points]  # side by side, not on top
        means = [m for _, m, _, _ in points]
        lows = [m - lo if math.isfinite(lo) else 0.0 for _, m, lo, _ in points]
        highs = [hi - m if math.isfinite(hi) else 0.0 for _, m, _, hi in points]
        axes.errorbar(ks, means, yerr=[lows, highs], marker="o", capsize=3, label=name)
    if ceiling is not None and math.isfinite(ceiling):
        axes.axhline(ceiling, color="black", linestyle="--", linewidth=1, label="dense probe (ceiling)")
    axes.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    _k_axis(axes, sorted({k for points in groups.values() for k, _, _, _ in points}), "k (latents per probe)")
    axes.set_ylabel("mean AUROC over tasks (95% interval over seeds)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _k_axis(axes, ks: list[int], label: str) -> None:
    """A log x axis ticked at the probed k's only, as plain numbers."""
    axes.set_xscale("log")
    if ks:
        axes.set_xticks(ks, [str(k) for k in ks])
        axes.minorticks_off()
    axes.set_xlabel(label)
