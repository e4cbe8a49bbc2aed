"""The whole pipeline on the embedded defaults, offline: what ``monosemantic demo`` runs.

SmolLM2-135M's ``blocks.6.resid_post`` on the Python standard library's sources: harvest once,
train the headline recipe from three init seeds in one pass over that store, train it on a
randomly initialised copy of the model (the random-model control), evaluate the seeds against
the neuron basis, PCA, ICA and both controls with intervals, analyse every dictionary's features
on held-out windows, explain and score a sample of latents of each (the founding paper's
comparison, with a check of the judge against the controls), and build the dashboard. Each stage
writes under ``out`` and a rerun picks up what is already there (the harvests and the trainings
resume; the later stages are recomputed). ``benchmarks/large.py`` runs the same pipeline at the
largest scale these machines allow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from .evaluation.results import jsonable

CONTROL = "untrained"  # the headline dictionary's architecture and size with its initial weights
RANDOM_MODEL = "random-model"  # the same recipe trained on a randomly initialised SmolLM2


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of each stage; the defaults finish in well under 30 minutes on 2 CPU cores."""

    site: str = "blocks.6.resid_post"  # where the dictionaries read the model
    corpus: str = "stdlib"  # any corpus spec (data.text_source), e.g. "stdlib+kjv" for code and prose
    tokens: int = 300_000  # activation rows harvested (the whole corpus when it has fewer)
    # Rows harvested from the random model (at most ``tokens``; None: ``tokens``). Its control still
    # trains on train_tokens rows, several epochs of these: fewer distinct rows, not fewer steps.
    random_tokens: int | None = 100_000
    arch: str = "topk"  # any single-site architecture; its sparsity option (k, l0_coeff, ...) takes the sparsities
    train_tokens: int = 1_000_000  # rows each dictionary trains on (several epochs of the store)
    batch_size: int = 4096
    checkpoint_every: int | None = 1000  # training steps between checkpoints a rerun resumes from
    sparsities: tuple[float, ...] = (32,)  # values of the sparsity option swept (every point from every seed)
    expansions: tuple[int, ...] = (8,)  # dictionary sizes swept, as multiples of the width
    headline_sparsity: float = 32  # the dictionary evaluated against the baselines
    headline_expansion: int = 8
    extra_seeds: tuple[int, ...] = (1, 2)  # more init seeds of every point, trained in the same pass (intervals)
    random_control: bool = True  # train the headline recipe on a randomly initialised copy of the model
    eval_windows: int = 64  # held-out windows for reconstruction and clustering
    splice_windows: int = 32  # the first of those the spliced loss runs on (full forwards: the dearest step)
    probe_windows: int = 256  # held-out windows for the contextual probing tasks
    feature_windows: int = 128  # held-out windows for feature analysis and autointerp
    autointerp_latents: str = "random50"  # latents explained and scored per dictionary
    context_length: int = 128
    min_tokens: int = 2000  # fewest scored tokens the evaluation accepts
    ica_max_iter: int = 300  # FastICA iterations (whether it converged is kept in the ICA's config)
    seed: int = 0


class DemoResult(NamedTuple):
    """Where the demo's outputs are, and its headline numbers."""

    summary: Path  # summary.md: the headline table, the sweep and the stage times
    report: Path  # the evaluation report (report.md, with .html and .json beside it)
    dashboard: Path  # the dashboard's index.html
    rows: list[dict]  # one headline row per group (the SAE's seeds first, then controls and baselines)
    suite: object  # the evaluation's SuiteResult
    judge: object  # the JudgeCheck of the offline judge against the controls (None without controls)


def run_demo(out: str | Path, settings: DemoSettings = DemoSettings(), *, lm=None, threads: int | None = None,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``out``; ``lm`` defaults to the embedded SmolLM2-135M."""
    from .evaluation import training_record
    from .evaluation.report import write_report

    out = Path(out)
    clock = _Clock(echo)
    if lm is None:
        from .models import load_model

        with clock("load the embedded SmolLM2-135M"):
            lm = load_model("smollm2-135m", threads=threads)
    sweep, random = _train(lm, out, settings, clock)
    name = headline_name(settings)
    members = seed_members(name, sweep.dictionaries, (settings.seed, *settings.extra_seeds))
    others = {k: d for k, d in sweep.dictionaries.items() if k not in members}  # the rest of the grid
    # The first seed stands for the recipe under its plain name; the others are its seeds.
    first = f"{name}_s{settings.seed}"
    sae = members.pop(first)
    trained_on = training_record(out / "sweep" / first)
    suite, fitted = _evaluate(lm, name, sae, members, random, others, trained_on, settings, clock)
    report = write_report(suite, out / "eval")
    contenders = {name: sae, **fitted}
    comparison, judge, feature_folder = _features(lm, name, contenders, random, trained_on, out, settings, clock)
    with clock("build the dashboard"):
        from .viz import build_dashboard

        dashboard = build_dashboard(feature_folder, out / "dashboard", dictionary=contenders[name],
                                    progress=False) / "index.html"
    rows = headline_rows(suite, comparison)
    summary = _write_summary(out, lm.name, settings, rows, suite, judge, sweep, clock.times, report, dashboard)
    return DemoResult(summary, report, dashboard, rows, suite, judge)


def seed_members(name: str, dictionaries: dict, seeds: tuple[int, ...]) -> dict:
    """The headline's dictionary from each seed, by its sweep name (``{name}_s{seed}``)."""
    missing = [f"{name}_s{seed}" for seed in seeds if f"{name}_s{seed}" not in dictionaries]
    if missing:
        from .errors import MonosemanticError

        raise MonosemanticError(f"the headline dictionary {missing[0]} is not in the sweep "
                                f"({', '.join(dictionaries)}); make headline_sparsity and headline_expansion one "
                                "of the swept values")
    return {f"{name}_s{seed}": dictionaries[f"{name}_s{seed}"] for seed in seeds}


def headline_name(settings: DemoSettings) -> str:
    """The sweep's name of the headline dictionary, e.g. ``topk_k32_x8``."""
    from .training.sweep import DictionarySpec, dictionary_name, sparsity_option_of

    option = sparsity_option_of(settings.arch)
    options = {option: settings.headline_sparsity} if option else {}
    return dictionary_name(DictionarySpec(settings.arch, settings.headline_expansion, options))


def recorded_headline_name(given: dict) -> str:
    """:func:`headline_name` of a finished run, from the settings its ``summary.json`` records (runs
    before 2026-12-05 recorded ``headline_k``)."""
    sparsity = given["headline_sparsity"] if "headline_sparsity" in given else given["headline_k"]
    return headline_name(DemoSettings(arch=given["arch"], headline_sparsity=sparsity,
                                      headline_expansion=given["headline_expansion"]))


class _Clock:
    """Times named stages and announces them."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo, self.times = echo, {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.echo(f"[demo] {stage} ...")
        start = time.perf_counter()
        yield
        self.times[stage] = time.perf_counter() - start
        self.echo(f"[demo] {stage}: {self.times[stage]:.0f} s")


def _train(lm, out: Path, settings: DemoSettings, clock: _Clock):
    """(the sweep, with every point of the grid from every init seed, and the random-model control as
    (dictionary, lm) or None)."""
    from .activations import harvest
    from .training import TrainConfig, sweep_from_store
    from .training.sweep import sparsity_option_of

    corpus = "the Python standard library" if settings.corpus == "stdlib" else f"corpus {settings.corpus}"
    with clock(f"harvest {settings.tokens:,} tokens of {settings.site} from {corpus}"):
        store = harvest(lm, [settings.site], out / "store", corpus=settings.corpus, n_tokens=settings.tokens,
                        context_length=settings.context_length)
    config = TrainConfig(total_tokens=settings.train_tokens, batch_size=settings.batch_size, seed=settings.seed,
                         checkpoint_every=settings.checkpoint_every)
    seeds = (settings.seed, *settings.extra_seeds)
    option = sparsity_option_of(settings.arch)
    grid = f"{option} in {list(settings.sparsities)} x expansion in {list(settings.expansions)}"
    # Every seed trains in the same pass, on the same batches: seeds differ only in their initialisation.
    with clock(f"train {settings.arch} ({grid}) from init seeds {list(seeds)} in one pass on "
               f"{settings.train_tokens:,} tokens"):
        sweep = sweep_from_store(store, out / "sweep", arch=settings.arch, config=config,
                                 expansions=list(settings.expansions), sparsities=list(settings.sparsities),
                                 seeds=seeds)
    random = None
    if settings.random_control:
        from .models import randomly_initialised

        random_lm = randomly_initialised(lm, settings.seed)
        with clock("harvest and train the same recipe on a randomly initialised copy of the model"):
            random_store = harvest(random_lm, [settings.site], out / "random-model" / "store", corpus=settings.corpus,
                                   n_tokens=min(settings.random_tokens or settings.tokens, settings.tokens),
                                   context_length=settings.context_length)
            trained = sweep_from_store(random_store, out / "random-model" / "sweep", arch=settings.arch, config=config,
                                       expansions=[settings.headline_expansion],
                                       sparsities=[settings.headline_sparsity])
        random = (next(iter(trained.dictionaries.values())), random_lm)
    return sweep, random


def _evaluate(lm, name: str, sae, seeds: dict, random, sweep_dictionaries: dict, trained_on: dict | None,
              settings: DemoSettings, clock: _Clock):
    """(the SuiteResult, the fitted baselines by name)."""
    from .evaluation import fit_baselines, resolve_corpus, run_suite

    with clock("fit the baselines (neurons, PCA, ICA)"):
        fitted = fit_baselines(lm, settings.site, ["identity", "pca", "ica"], min(lm.width(settings.site),
                                                                               sae.config.d_sae),
                               corpus=resolve_corpus(trained_on=trained_on), n_windows=settings.eval_windows,
                               seed=settings.seed, options={"ica": {"max_iter": settings.ica_max_iter}})
    stages = "reconstruction, spliced loss, contextual probing, token categories, clustering, absorption"
    with clock(f"evaluate against neurons, PCA, ICA and the controls ({stages})"):
        suite = run_suite(lm, sae, name=name, seeds=seeds, random_control={RANDOM_MODEL: random} if random else None,
                          trained_on=trained_on, n_windows=settings.eval_windows, probe_windows=settings.probe_windows,
                          splice_windows=settings.splice_windows,
                          min_tokens=settings.min_tokens, seed=settings.seed, fitted=fitted, sweep=sweep_dictionaries)
    return suite, fitted


def _features(lm, name: str, contenders: dict, random, trained_on: dict | None, out: Path, settings: DemoSettings,
              clock: _Clock):
    """Feature folders and autointerp of every contender and control; (comparison, judge check, SAE's folder)."""
    from .autointerp import analyze_and_score, compare_autointerp, judge_check
    from .data import storable_mask
    from .evaluation import resolve_corpus, untrained_copy
    from .features import site_activations

    corpus = resolve_corpus(trained_on=trained_on)
    windows_WS = corpus.windows(lm.tokenizer, settings.feature_windows)
    # One forward per model, shared by every dictionary analysed on it.
    acts_WSD = site_activations(lm, settings.site, windows_WS)
    # Controls: the same architecture and size untrained, and trained on a random model. The judge
    # is believed only where it scores the trained SAE above both (judge_check).
    runs = {label: (d, lm, acts_WSD) for label, d in contenders.items()}
    sae = contenders[name]
    calibration_ND = acts_WSD[storable_mask(windows_WS, lm.tokenizer.all_special_ids)] if sae.CALIBRATES else None
    runs[CONTROL] = (untrained_copy(sae, settings.seed, calibration_ND), lm, acts_WSD)
    if random is not None:
        dictionary, random_lm = random
        runs[RANDOM_MODEL] = (dictionary, random_lm, site_activations(random_lm, settings.site, windows_WS))
    results = {}
    for label, (dictionary, model, model_acts_WSD) in runs.items():
        with clock(f"analyse the features of {label} and score {settings.autointerp_latents} of them"):
            results[label] = analyze_and_score(model, dictionary, windows_WS, settings.autointerp_latents,
                                               seed=settings.seed, name=label, folder=out / "features" / label,
                                               analyze_options={"seed": settings.seed, "acts_WSD": model_acts_WSD},
                                               progress=False)
    controls = [c for c in (CONTROL, RANDOM_MODEL) if c in results]
    return compare_autointerp(results), judge_check(results, name, controls), out / "features" / name


def headline_rows(suite, comparison) -> list[dict]:
    """One row per group: width, L0 and FVU and task AUROC (intervals over seeds), loss recovered and autointerp
    scores (the first member)."""
    from .evaluation import ReconstructionResult
    from .evaluation.splice import SpliceResult

    scores = {row.name: row for row in comparison.rows}
    rows = []
    for group, members in suite.groups.items():
        if suite.roles[group] == "ceiling":
            continue
        recon, splice = suite.result(members[0], ReconstructionResult), suite.result(members[0], SpliceResult)
        score = scores.get(group)
        rows.append({
            "dictionary": group, "role": suite.roles[group], "seeds": len(members),
            "latents": recon.dictionary["d_sae"] if recon else None,
            "l0": suite.result_interval(group, ReconstructionResult, "l0") if recon else None,
            "fvu": suite.result_interval(group, ReconstructionResult, "fvu") if recon else None,
            "loss_recovered": splice.loss_recovered if splice else None,
            "auroc_k1": suite.task_interval(group, 1), "auroc_k2": suite.task_interval(group, 2),
            "auroc_k5": suite.task_interval(group, 5),
            "detection": score.detection if score else None, "fuzzing": score.fuzzing if score else None,
        })
    return rows


_COLUMNS = (("dictionary", "dictionary"), ("seeds", "seeds"), ("latents", "latents"), ("l0", "L0"), ("fvu", "FVU"),
            ("loss_recovered", "loss recovered"), ("auroc_k1", "task AUROC k=1"), ("auroc_k5", "task AUROC k=5"),
            ("detection", "detection"), ("fuzzing", "fuzzing"))


def table_cell(value) -> str:
    """A headline value as printed: an Interval as ``mean [low, high]``, floats to 3 decimals, None as -."""
    from .evaluation import Interval

    if value is None:
        return "-"
    if isinstance(value, Interval):
        spread = value.n > 1 and f"{value.low:.3f}" != f"{value.high:.3f}"  # no brackets around a constant
        return f"{value.mean:.3f}" + (f" [{value.low:.3f}, {value.high:.3f}]" if spread else "")
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def headline_table(rows: list[dict]) -> str:
    """The headline rows as a Markdown table (intervals: 95% over seeds)."""
    lines = ["| " + " | ".join(title for _, title in _COLUMNS) + " |",
             "|" + "|".join("---" if key == "dictionary" else "---:" for key, _ in _COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_cell(row[key]) for key, _ in _COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def verdict(suite, judge) -> str:
    """The verdict of the probing intervals, then whether the offline judge can be believed."""
    text = suite.verdict(1)
    if judge is not None:
        text += " " + judge.message
    return text


def _write_summary(out: Path, model: str, settings: DemoSettings, rows: list[dict], suite, judge, sweep, times: dict,
                   report: Path, dashboard: Path) -> Path:
    sweep_lines = ["| dictionary | FVU | L0 | dead fraction |", "|---|---:|---:|---:|"]
    for name, metrics in sweep.metrics.items():
        sweep_lines.append(f"| {name} | {metrics.get('fvu', float('nan')):.3f} | {metrics.get('l0', float('nan')):.1f} "
                           f"| {metrics.get('dead_fraction', float('nan')):.3f} |")
    stage_lines = [f"- {stage}: {seconds:.0f} s" for stage, seconds in times.items()]
    tasks = suite.task_probing
    text = "\n".join([
        f"# monosemantic demo: {model} {settings.site}", "",
        f"## Headline ({suite.corpus.label}, {suite.corpus.split} windows; "
        f"{len(tasks.tasks) if tasks else 0} contextual tasks; intervals: 95% over seeds)", "",
        headline_table(rows), "", verdict(suite, judge), "",
        "## The sweep (training metrics of the last logged step, normalised space)", "", *sweep_lines, "",
        "## Stages", "", *stage_lines, f"- total: {sum(times.values()):.0f} s", "",
        f"Evaluation report: {report}", f"Dashboard: {dashboard}", ""])
    path = out / "summary.md"
    path.write_text(text, encoding="utf-8")
    payload = {"settings": asdict(settings), "headline": [{k: v.to_dict() if hasattr(v, "to_dict") else v
                                                           for k, v in row.items()} for row in rows],
               "verdict": verdict(suite, judge), "judge": judge.to_dict() if judge else None, "times": times,
               "sweep": sweep.metrics}
    (out / "summary.json").write_text(json.dumps(jsonable(payload), indent=2) + "\n", encoding="utf-8")
    return path
