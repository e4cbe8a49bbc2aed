"""The report sections that come from a :class:`~.suite_result.SuiteResult` as a whole: which text
and tasks, the contextual probing table with intervals, and the seeds."""

from __future__ import annotations

import math
from pathlib import Path

from . import plots
from .report_tables import Section, Table
from .seeds import SeedOverlapMatrix
from .suite_result import SuiteResult
from .task_probing import ACTIVATIONS, TaskProbingResult


def suite_sections(suite: SuiteResult, folder: Path, draw: bool) -> list[Section]:
    sections = [_corpus(suite)]
    if suite.task_probing is not None and suite.task_probing.tasks:
        sections.append(_tasks(suite, suite.task_probing, folder, draw))
    if suite.seed_overlap is not None:
        sections.append(_seeds(suite.seed_overlap))
    return sections


def _corpus(suite: SuiteResult) -> Section:
    corpus = suite.corpus
    notes = [f"Corpus: {corpus.label} ({_describe(corpus.corpus)}); windows of {corpus.context_length} tokens, "
             f"{corpus.split} split: {corpus.note}.",
             f"Stages that ran: {', '.join(suite.ran) or 'none'}."]
    notes += [f"Note: {note}." for note in suite.notes]
    probing = suite.task_probing
    if probing is not None:
        notes.append(f"Contextual tasks scored ({len(probing.tasks)}): "
                     f"{', '.join(t.name for t in probing.tasks) or 'none'}.")
        if probing.skipped:
            notes.append(f"Tasks not scored ({len(probing.skipped)}): "
                         + "; ".join(f"{name} ({why})" for name, why in probing.skipped))
    members = [[g, suite.roles[g], ", ".join(m)] for g, m in suite.groups.items()]
    return Section("Corpus, tasks and contenders", [Table(["group", "role", "members"], members)], notes=notes)


def _describe(corpus: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in corpus.items() if k in ("kind", "path", "dataset", "python", "files"))


def _tasks(suite: SuiteResult, probing: TaskProbingResult, folder: Path, draw: bool) -> Section:
    ks = list(probing.config.ks)
    rows = [[row["group"], row["role"], row["members"]] + [row[f"auroc_k{k}"] for k in ks] + [row["auroc_dense"]]
            for row in suite.headline(ks)]
    headline = Table(["group", "role", "members"] + [f"AUROC k={k}" for k in ks] + ["AUROC dense"], rows,
                     f"Mean over {len(probing.tasks)} tasks; interval: 95% over the group's members (seeds)")
    first = {g: m[0] for g, m in suite.groups.items()}
    per_task = [[t.name, t.family, t.positives_test, t.n_test]
                + [probing.per_task(first[g], None if g == ACTIVATIONS else 1).get(t.name) for g in suite.groups]
                for t in probing.tasks]
    detail = Table(["task", "family", "test positives", "test rows"] + [f"{g} k=1" if g != ACTIVATIONS else g
                                                                       for g in suite.groups], per_task,
                   "AUROC per task (first member of each group; the activations' dense probe)")
    section = Section("Contextual probing", [headline, detail], notes=[suite.verdict()])
    if draw:
        curves = {}
        for group in suite.groups:
            if group == ACTIVATIONS:
                continue
            points = [(k, iv.mean, iv.low, iv.high) for k in ks if (iv := suite.task_interval(group, k)) is not None]
            if points:
                curves[group] = points
        ceiling = suite.task_interval(ACTIVATIONS, None)
        plots.task_intervals(curves, ceiling.mean if ceiling is not None else math.nan, folder / "tasks.png",
                             f"k-sparse probes on {len(probing.tasks)} contextual tasks")
        section.images.append("tasks.png")
    return section


def _seeds(matrix: SeedOverlapMatrix) -> Section:
    rows = [[f"{o[0]} ~ {o[1]}", overlap.mean_cosine, overlap.share] for o, overlap in zip(matrix.pairs,
                                                                                         matrix.overlaps)]
    return Section("Seeds: train twice, same features?", [Table(["pair", "matched cosine", "share >= threshold"], rows,
                                                                f"Hungarian-matched decoder rows, threshold "
                                                                f"{matrix.threshold}")],
                   notes=[f"Mean share of latents with a partner at cosine >= {matrix.threshold}: {matrix.share} "
                          f"(pairs share seeds, so this interval is narrower than an independent one)."])
