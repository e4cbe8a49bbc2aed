"""A human report of evaluation results: ``report.md``, ``report.html`` and ``report.json`` with PNG plots.

``write_report(results, folder)`` takes a :class:`~.suite_result.SuiteResult` (which adds the
corpus and tasks that ran, the contextual probing table with intervals over seeds and its plot
``tasks.png``, and the cross-seed overlap) or result dataclasses (a list, or a dict naming each,
a value may also be a list of results of one dictionary) and writes, per kind of result found:

- reconstruction: a table per dictionary (baselines included) with L0, FVU, cosine, dead and
  dense latents; plots of the L0-FVU frontier (``frontier.png``) and the log10 density
  histograms (``densities.png``);
- spliced loss: clean, spliced and ablated cross-entropy, loss recovered, KL;
- probing (token categories): overall accuracy against k for every dictionary, activations and the majority
  class (``probing-N.png``), and per-class F1 of the full probes;
- absorption: means per dictionary, a per-letter table (``absorption.png``);
- clustering: purity and NMI, and each cluster's tokens in context;
- MMCS and stitching tables.

``report.json`` holds every table (numbers unformatted) and every result's ``to_dict()``.
Plots need matplotlib; without it the report says so and has tables only.
"""

from __future__ import annotations

import html
import json
import math
from functools import partial
from pathlib import Path

from ..errors import MonosemanticError
from . import plots
from .absorption import AbsorptionResult
from .clustering import ClusteringResult
from .compare import MMCSResult, StitchResult
from .metrics import ReconstructionResult
from .probing import ProbingResult
from .report_tables import Section, Table
from .results import Result, jsonable
from .seeds import Interval
from .splice import SpliceResult
from .suite_report import suite_sections
from .suite_result import SuiteResult


def write_report(results, folder, *, title: str = "Evaluation report", plot: bool = True) -> Path:
    """``results``: a :class:`~.suite_result.SuiteResult`, or results as below.

    Writes ``report.md``, ``report.html``, ``report.json`` and the plots into ``folder``; returns the .md path.
    """
    suite = results if isinstance(results, SuiteResult) else None
    if suite is not None:
        title = suite.title if title == "Evaluation report" else title
        results = {**suite.per_dictionary, **({"token categories": suite.probing} if suite.probing else {})}
    named = named_results(results)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    draw = plot and plots.available()
    sections = suite_sections(suite, folder, draw) if suite is not None else []
    curves = suite.frontier if suite is not None else None
    builders = (partial(_reconstruction, curves=curves), *_BUILDERS)
    sections += [section for build in builders if (section := build(named, folder, draw)) is not None]
    others = [name for name, r in named if not isinstance(r, _KNOWN)]
    if others:
        sections.append(Section("Other results", notes=[f"In report.json only: {', '.join(others)}."]))
    if plot and not draw:
        note = "Plots skipped: matplotlib is not installed (pip install matplotlib)."
        sections.insert(0, Section("Plots", notes=[note]))
    (folder / "report.md").write_text(_markdown(title, sections), encoding="utf-8")
    (folder / "report.html").write_text(_html(title, sections), encoding="utf-8")
    payload = {"title": title, "sections": [_section_json(s) for s in sections],
               "results": [{"name": name, "kind": type(r).__name__, "result": r.to_dict()} for name, r in named],
               **({"suite": suite.to_dict()} if suite is not None else {})}
    (folder / "report.json").write_text(json.dumps(jsonable(payload), indent=1, allow_nan=False), encoding="utf-8")
    return folder / "report.md"


def named_results(results) -> list[tuple[str, Result]]:
    """``(name, result)`` pairs from a list or a dict (values: a result or a list of them), names made unique."""
    if isinstance(results, Result):
        results = [results]
    if isinstance(results, dict):
        pairs = [(str(name), r) for name, value in results.items()
                 for r in (value if isinstance(value, (list, tuple)) else [value])]
    elif isinstance(results, (list, tuple)):
        pairs = [(default_name(r), r) for r in results]
    else:
        raise MonosemanticError(f"write_report takes a list or a dict of evaluation results; got "
                                f"{type(results).__name__}")
    for name, r in pairs:
        if not isinstance(r, Result):
            raise MonosemanticError(f"{name!r} is a {type(r).__name__}, not an evaluation result; pass the dataclasses "
                                    "that evaluate_* functions return")
    seen: dict[tuple[str, type], int] = {}
    unique = []
    for name, r in pairs:
        count = seen[(name, type(r))] = seen.get((name, type(r)), 0) + 1
        unique.append((name if count == 1 else f"{name} #{count}", r))
    return unique


def default_name(result: Result) -> str:
    """A short name from the dictionary config a result carries: ``topk-4096-k32``, ``pca-64``."""
    config = getattr(result, "dictionary", None)
    if isinstance(config, dict) and "arch" in config:
        k = (config.get("options") or {}).get("k")
        return f"{config['arch']}-{config.get('d_sae')}" + (f"-k{k}" if k is not None else "")
    return getattr(result, "name", None) or type(result).__name__.removesuffix("Result").lower()


# ----- sections --------------------------------------------------------------------------------

def _reconstruction(named, folder: Path, draw: bool, curves: dict | None = None) -> Section | None:
    """``curves``: baseline name -> ((l0, fvu), ...) truncated to each L0; those baselines are drawn as
    curves instead of points at their full width."""
    items = [(n, r) for n, r in named if isinstance(r, ReconstructionResult)]
    if not items:
        return None
    rows = [[n, r.dictionary.get("arch"), r.dictionary.get("d_sae"), r.n_tokens, r.l0, r.fvu, r.mse, r.cosine,
             r.relative_reconstruction_bias, 100 * r.density.dead_fraction, 100 * r.density.dense_fraction]
            for n, r in items]
    section = Section("Reconstruction", [Table(["dictionary", "arch", "latents", "tokens", "L0", "FVU", "MSE",
                                                "cosine", "rel. bias", "dead %", "dense %"], rows)])
    if draw:
        plots.frontier([(n, r.l0, r.fvu) for n, r in items if _finite(r.l0, r.fvu) and n not in (curves or {})],
                       folder / "frontier.png", curves={k: list(v) for k, v in (curves or {}).items()})
        plots.densities([(n, list(r.density.histogram_edges), list(r.density.histogram_counts)) for n, r in items],
                        folder / "densities.png")
        section.images += ["frontier.png", "densities.png"]
    return section


def _splice(named, folder: Path, draw: bool) -> Section | None:
    items = [(n, r) for n, r in named if isinstance(r, SpliceResult)]
    if not items:
        return None
    rows = [[n, r.config.site_out, r.n_tokens, r.ce_clean, r.ce_spliced, r.ce_zero, r.ce_mean, r.delta_loss,
             r.loss_recovered, r.loss_recovered_mean, r.kl_spliced] for n, r in items]
    return Section("Spliced loss", [Table(["dictionary", "site", "tokens", "CE clean", "CE spliced", "CE zero",
                                           "CE mean", "delta loss", "loss recovered", "recovered vs mean",
                                           "KL spliced"], rows)],
                   notes=["Cross-entropy in nats; loss recovered = (CE zero - CE spliced) / (CE zero - CE clean)."])


def _probing(named, folder: Path, draw: bool) -> Section | None:
    items = [(n, r) for n, r in named if isinstance(r, ProbingResult)]
    if not items:
        return None
    section = Section("Probing")
    for index, (name, r) in enumerate(items, start=1):
        probes = list(dict.fromkeys(s.name for s in r.scores))
        ks = list(r.config.ks)
        rows = [[p] + [_get(r, p, k, "overall") for k in ks] + [_get(r, p, None, "overall")] for p in probes]
        section.tables.append(Table(["probe"] + [f"k={k}" for k in ks] + ["all"], rows,
                                    f"{name}: held-out accuracy ({r.n_train} train / {r.n_test} test tokens)"))
        f1_rows = [[c, r.test_counts[i]] + [_get(r, p, None, c, "f1") for p in probes]
                   for i, c in enumerate(r.classes)]
        section.tables.append(Table(["class", "test tokens"] + [f"{p} F1" for p in probes], f1_rows,
                                    f"{name}: per-class F1 of the full probes"))
        if draw:
            # Dictionaries get a line over k; the activations only have their full probe, a level.
            curves = {p: (ks if p in r.dictionaries else [],
                          [_get(r, p, k, "overall") for k in ks] if p in r.dictionaries else [],
                          _get(r, p, None, "overall")) for p in probes if p != "majority"}
            image = f"probing-{index}.png"
            plots.probing_curves(curves, _get(r, "majority", None, "overall"), folder / image, f"Probing: {name}")
            section.images.append(image)
    return section


def _get(result: ProbingResult, name: str, k, target: str, metric: str = "accuracy") -> float | None:
    for s in result.scores:
        if (s.name, s.k, s.target) == (name, k, target):
            return getattr(s, metric)
    return None


def _absorption(named, folder: Path, draw: bool) -> Section | None:
    items = [(n, r) for n, r in named if isinstance(r, AbsorptionResult)]
    if not items:
        return None
    summary = [[n, f"{r.n_measured}/{len(r.letters)}", r.mean_absorption_rate, r.mean_absorption_fraction,
                r.mean_main_f1, r.probe_accuracy] for n, r in items]
    section = Section("Feature absorption (first letter)", [Table(
        ["dictionary", "letters measured", "absorption rate", "absorption fraction", "main latent F1",
         "probe accuracy"], summary)],
        notes=[("Rate: absorbed / probe true positives missed by the main latents; fraction: absorbed / true "
                "positives; means over measured letters (main latent F1 >= min_main_f1).")])
    for name, r in items:
        rows = [[e.letter, ", ".join(map(str, e.main_latents)), e.main_f1, e.probe_f1, e.n_true_positives,
                 e.n_missed, e.n_absorbed, e.absorption_rate,
                 ", ".join(f"{f} ({c})" for f, c in e.absorbing_latents[:3]),
                 ", ".join(f"{a.word.strip()}->{a.latent}" for a in e.examples[:3])] for e in r.letters]
        section.tables.append(Table(["letter", "main latents", "main F1", "probe F1", "true positives", "missed",
                                     "absorbed", "rate", "absorbing latents (words)", "examples"], rows, name))
    if draw:
        plots.absorption_bars({n: {e.letter: e.absorption_fraction for e in r.letters} for n, r in items},
                              folder / "absorption.png")
        section.images.append("absorption.png")
    return section


def _clustering(named, folder: Path, draw: bool) -> Section | None:
    items = [(n, r) for n, r in named if isinstance(r, ClusteringResult)]
    if not items:
        return None
    section = Section("Clustering", [Table(["codes", "clusters", "tokens", "purity", "NMI"],
                                           [[n, r.config.n_clusters, r.n_tokens, r.purity, r.nmi] for n, r in items])])
    for name, r in items:
        rows = [[c.index, c.size, c.majority_label, c.purity, ", ".join(f"{t!r} ({k})" for t, k in c.top_tokens[:5]),
                 c.examples[0].context if c.examples else ""] for c in r.clusters[:12]]
        section.tables.append(Table(["cluster", "tokens", "majority label", "purity", "top tokens", "nearest centre"],
                                    rows, f"{name}: largest clusters"))
    return section


def _comparisons(named, folder: Path, draw: bool) -> Section | None:
    mmcs = [[n, r.n_a, r.n_b, r.a_to_b, r.b_to_a, r.symmetric] for n, r in named if isinstance(r, MMCSResult)]
    stitch = [[n, r.n_small, r.n_large, r.threshold, r.n_resplit, r.n_novel] for n, r in named
              if isinstance(r, StitchResult)]
    if not mmcs and not stitch:
        return None
    section = Section("Decoder comparisons")
    if mmcs:
        section.tables.append(Table(["pair", "latents a", "latents b", "MMCS a->b", "MMCS b->a", "symmetric"], mmcs,
                                    "Mean max cosine similarity"))
    if stitch:
        section.tables.append(Table(["pair", "small", "large", "threshold", "re-split", "novel"], stitch,
                                    "Stitching"))
    return section


_BUILDERS = (_splice, _probing, _absorption, _clustering, _comparisons)
_KNOWN = (ReconstructionResult, SpliceResult, ProbingResult, AbsorptionResult, ClusteringResult, MMCSResult,
          StitchResult)


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ----- rendering -------------------------------------------------------------------------------

def cell(value) -> str:
    """A table cell as text: floats to 4 significant digits, missing values as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, Interval):
        return f"{value.mean:.3f}" + (f" [{value.low:.3f}, {value.high:.3f}]" if value.n > 1 else "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md_cell(value) -> str:
    # A pipe would end the cell and a newline the row; source tokens have both.
    return cell(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "⏎").replace("\r", "")


def _markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [note for note in section.notes] + ([""] if section.notes else [])
        for table in section.tables:
            lines += ([f"**{table.title}**", ""] if table.title else [])
            lines.append("| " + " | ".join(table.headers) + " |")
            lines.append("|" + "|".join("---" for _ in table.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
            lines.append("")
        lines += [f"![{image}]({image})" for image in section.images] + ([""] if section.images else [])
    return "\n".join(lines)


_STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
          "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;white-space:pre}"
          "th{background:#eee}img{max-width:100%}</style></head><body>")


def _html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>", _STYLE,
             f"<h1>{esc(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        parts += [f"<p>{esc(note)}</p>" for note in section.notes]
        for table in section.tables:
            if table.title:
                parts.append(f"<h3>{esc(table.title)}</h3>")
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.headers) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in row) + "</tr>" for row in table.rows]
            parts.append("</table>")
        parts += [f"<p><img src='{esc(image)}' alt='{esc(image)}'></p>" for image in section.images]
    return "\n".join(parts + ["</body></html>"])


def _section_json(section: Section) -> dict:
    return {"title": section.title, "notes": section.notes, "images": section.images,
            "tables": [{"title": t.title, "headers": t.headers,
                        "rows": [[v.to_dict() if isinstance(v, Result) else v for v in row] for row in t.rows]}
                       for t in section.tables]}
