"""Every evaluation of one dictionary against baselines and controls, in one call.

What ``monosemantic evaluate`` runs. :func:`run_suite` returns a :class:`~.suite_result.SuiteResult`;
:func:`evaluate_suite` also writes it as a report. The text is resolved by :mod:`.corpus`: by
default the corpus the dictionary trained on, held-out windows only.

Contenders, in groups (see ``suite_result``):

- the dictionary, with its other seeds when given (an interval over seeds);
- ``untrained``: per seed, the same architecture and size freshly initialised (suite seed + i;
  the training init's data-dependent ``b_dec`` is not reproduced);
- ``random-model``: the same recipe trained on a randomly initialised copy of the model (given,
  as it must be trained beforehand; it reads its own model's activations of the same text);
- ``neurons``, ``pca``, ``ica``: baselines fitted on training-split windows of the training
  corpus (or of the evaluation corpus when the training data is unknown);
- ``activations``: a dense probe on the raw site, the ceiling of the contextual tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..baselines import fit_baseline
from ..data import storable_mask
from ..dictionaries import Dictionary, dictionary_from_config
from ..errors import MonosemanticError
from ..models import eval_mode
from .absorption import absorption
from .clustering import cluster_codes
from .corpus import EvalCorpus, resolve_corpus
from .frontier import budgets, truncated_curve
from .labels import PYTHON_CATEGORIES, labelled_activations, labelled_windows
from .metrics import evaluate_reconstruction
from .probing import probe_dictionaries
from .report import write_report
from .seeds import check_seed_group, overlap_matrix
from .splice import evaluate_splices
from .suite_result import SuiteResult
from .task_probing import ACTIVATIONS, probe_tasks
from .tasks import read_labels, select_tasks, task_windows

TASKS = ("reconstruction", "splice", "tasks", "probing", "clustering", "absorption")
BASELINES = ("identity", "pca", "ica")
UNTRAINED, RANDOM_MODEL = "untrained", "random-model"
# Latents matched across seeds: the Hungarian assignment grows as F**3 and holds F x F float64.
OVERLAP_LATENTS = 4096


def site_rows(lm, site: str, windows_WS: Tensor, batch_size: int = 8) -> Tensor:
    """Activations ``[N, D]`` of ``site`` at the positions a store would keep."""
    # Positions a store keeps get label 0, the rest -1 (which labelled_activations skips).
    keep_WS = storable_mask(windows_WS, lm.tokenizer.all_special_ids)
    return labelled_activations(lm, site, windows_WS, keep_WS.long() - 1, batch_size=batch_size).acts_ND


def fit_baselines(lm, site: str, kinds: Sequence[str], n_components: int, *, corpus: EvalCorpus | None = None,
                  n_windows: int = 64, context_length: int = 128, seed: int = 0,
                  options: dict[str, dict] | None = None) -> dict[str, Dictionary]:
    """Baselines fitted on training-split windows of ``corpus`` (default: the standard library).

    ``identity`` is the neuron basis; ``options`` maps a kind to its fit options, e.g.
    ``{"ica": {"max_iter": 200}}``.
    """
    if not kinds:
        return {}
    corpus = corpus or resolve_corpus("stdlib", context_length=context_length)
    train = replace(corpus, split="train")
    x_ND = site_rows(lm, site, train.windows(lm.tokenizer, n_windows))
    names = {"identity": "neurons"}
    return {names.get(kind, kind): fit_baseline(kind, x_ND, n_components=None if kind == "identity" else n_components,
                                                seed=seed, site=site, model=lm.name, **(options or {}).get(kind, {}))
            for kind in kinds}


def untrained_copy(dictionary: Dictionary, seed: int, rows_ND: Tensor | None = None) -> Dictionary:
    """``dictionary``'s architecture and size with freshly initialised weights (the untrained control).

    ``rows_ND``: activation rows of its site, on which an architecture whose untrained copies
    would be dense (``CALIBRATES``: BatchTopK, JumpReLU) sets its thresholds so that the control
    is as sparse as ``dictionary`` is on those rows. Without them such a copy keeps its initial
    thresholds: fine for comparing weights, not for codes.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        copy = dictionary_from_config(dictionary.config).to(dictionary.W_dec.device)
    if rows_ND is not None and copy.CALIBRATES:
        rows_ND = rows_ND.to(copy.W_dec.device)
        with torch.no_grad(), eval_mode(dictionary):
            l0 = float((dictionary.encode(rows_ND) != 0).sum(-1).float().mean())
        copy.calibrate_(rows_ND, l0)
    return copy.eval()


def evaluate_suite(lm, dictionary: Dictionary, out_dir: str | Path, **options) -> Path:
    """:func:`run_suite`, written as ``report.md/.html/.json`` in ``out_dir``; returns the .md path."""
    return write_report(run_suite(lm, dictionary, **options), out_dir)


def run_suite(lm, dictionary: Dictionary, *, name: str = "sae", seeds: Mapping[str, Dictionary] | None = None,
              random_control: Mapping[str, tuple[Dictionary, object]] | None = None, corpus=None,
              trained_on: dict | None = None, allow_trained: bool = False, labels: str | Path | None = None,
              task_names: Sequence[str] | None = None, tasks: Sequence[str] = TASKS, text_column: str = "text",
              baselines: Sequence[str] = BASELINES, n_windows: int = 64, probe_windows: int = 256,
              splice_windows: int | None = None,
              context_length: int | None = None, min_tokens: int = 2000, seed: int = 0,
              baseline_options: dict[str, dict] | None = None, fitted: Mapping[str, Dictionary] | None = None,
              sweep: Mapping[str, Dictionary] | None = None) -> SuiteResult:
    """Run ``tasks`` on ``dictionary`` (and ``seeds``: other seeds of it, by name), its controls and baselines.

    ``random_control``: ``{name: (dictionary, lm)}`` of dictionaries trained the same way on a
    randomly initialised copy of the model (``models.randomly_initialised``). ``labels``: a JSONL
    labels file (see ``tasks.read_labels``): its texts, every window of them, are probed for its
    labels in place of the built-in tasks (the other stages still read ``corpus``).
    ``fitted``: baselines already fitted (:func:`fit_baselines`), used instead of ``baselines``.
    ``sweep``: other dictionaries of the same site (a sweep), measured for the frontier only.
    ``splice_windows``: how many of the ``n_windows`` the spliced loss runs on (None: all); its full
    forwards are the suite's dearest step.
    """
    site = _checked_site(lm, dictionary, tasks, trained_on)
    if splice_windows is not None and (isinstance(splice_windows, bool) or not isinstance(splice_windows, int)
                                       or splice_windows < 1):
        raise MonosemanticError(f"splice_windows={splice_windows!r} is invalid; expected a positive int, or None "
                                "for all the evaluation windows")
    if name in (seeds or {}):
        raise MonosemanticError(f"a seed is named {name!r} like the evaluated dictionary; name each seed apart")
    members = {name: dictionary, **dict(seeds or {})}
    check_seed_group(members)
    if labels is not None:
        read_labels(labels)  # bad labels fail before any model runs
    where = resolve_corpus(corpus, trained_on=trained_on, context_length=context_length, text_column=text_column,
                           allow_trained=allow_trained)
    if fitted is None:
        n_components = min(lm.width(site), dictionary.config.d_sae)
        fitted = fit_baselines(lm, site, baselines, n_components, corpus=_fit_corpus(where, trained_on),
                               n_windows=n_windows, seed=seed, options=baseline_options)
    fitted = dict(fitted)
    run = _Run(lm, site, where, tasks, seed, min_tokens)
    # A control that calibrates (BatchTopK's threshold) does so on the evaluation rows.
    calibration_ND = run.rows(lm, n_windows) if dictionary.CALIBRATES else None
    untrained = {f"{UNTRAINED}:{m}" if len(members) > 1 else UNTRAINED: untrained_copy(d, seed + i, calibration_ND)
                 for i, (m, d) in enumerate(members.items())}
    randoms = dict(random_control or {})
    groups, roles = _groups(name, members, untrained, randoms, fitted)
    own = {**members, **untrained, **fitted}
    task_probing = None
    if "tasks" in tasks:  # first: it tells whether the corpus is Python code, which later stages need
        task_probing = run.task_probing(own, randoms, probe_windows, task_names, labels)
        groups[ACTIVATIONS], roles[ACTIVATIONS] = (ACTIVATIONS,), "ceiling"
    # Full forwards are the suite's dearest step (benchmarks/README.md): the spliced loss is
    # measured for the first member of the dictionary's and the untrained group only. A complete
    # basis reconstructs exactly, and a random model's own loss says nothing about the real one.
    spliced = {groups[name][0], groups[UNTRAINED][0]}
    per_dictionary = run.per_dictionary(own, randoms, n_windows, spliced=spliced, splice_windows=splice_windows)
    if "splice" in tasks:
        run.notes.append(f"spliced loss measured for {', '.join(sorted(spliced))} only (one member per group; not "
                         "for the baselines, which reconstruct exactly, nor for the random-model control)")
    frontier = None
    if "reconstruction" in tasks:
        per_dictionary |= run.per_dictionary({k: d for k, d in (sweep or {}).items() if k not in own}, {}, n_windows,
                                             stages=("reconstruction",))
        frontier = run.frontier(fitted, n_windows)
    probing = run.category_probing({**members, **fitted}, n_windows) if "probing" in tasks else None
    if "absorption" in tasks:
        per_dictionary[name] = per_dictionary.get(name, ()) + (absorption(lm, dictionary, site),)
    return SuiteResult(
        title=f"Evaluation of {name} on {lm.name} {site}", model=lm.name, site=site, corpus=where,
        ran=tuple(t for t in TASKS if t in tasks and t not in run.skipped), notes=tuple(run.notes), groups=groups,
        roles=roles, per_dictionary=per_dictionary, probing=probing, task_probing=task_probing,
        seed_overlap=overlap_matrix(members, max_latents=OVERLAP_LATENTS) if len(members) > 1 else None,
        frontier=frontier)


def _groups(name: str, members: dict, untrained: dict, randoms: dict, fitted: dict) -> tuple[dict, dict]:
    """(group -> member names, group -> role) in report order: the dictionary, controls, baselines."""
    groups = {name: tuple(members), UNTRAINED: tuple(untrained), **({RANDOM_MODEL: tuple(randoms)} if randoms else {}),
              **{b: (b,) for b in fitted}}
    roles = {name: "dictionary", UNTRAINED: "control", **({RANDOM_MODEL: "control"} if randoms else {}),
             **{b: "baseline" for b in fitted}}
    return groups, roles


class _Run:
    """One suite's model, site, corpus and windows, shared by its stages."""

    def __init__(self, lm, site: str, corpus: EvalCorpus, tasks: Sequence[str], seed: int, min_tokens: int):
        self.lm, self.site, self.corpus, self.tasks, self.seed, self.min_tokens = lm, site, corpus, tasks, seed, \
            min_tokens
        self.notes: list[str] = []
        self.skipped: set[str] = set()
        self.python = corpus.corpus.get("kind") == "stdlib"
        self._rows = None
        self._windows: dict[int, Tensor] = {}
        self._acts: dict[tuple, Tensor] = {}

    def per_dictionary(self, own: dict, randoms: dict, n_windows: int, stages=None,
                       spliced: set | None = None, splice_windows: int | None = None) -> dict[str, tuple]:
        """Reconstruction, spliced loss (of the ``spliced`` names; default all) and clustering per contender."""
        stages = self.tasks if stages is None else stages
        everyone = {**{k: (d, self.lm) for k, d in own.items()}, **randoms}
        out: dict[str, tuple] = {label: () for label in everyone}
        if "reconstruction" in stages:
            for label, (candidate, lm) in everyone.items():
                rows = self.rows(lm, n_windows)
                out[label] += (evaluate_reconstruction(candidate, rows, min_tokens=self.min_tokens),)
        if "splice" in stages:
            # One call per model: the clean and ablated runs are shared by its dictionaries.
            for lm in {id(lm): lm for _, lm in everyone.values()}.values():
                chosen = {k: d for k, (d, m) in everyone.items() if m is lm and (spliced is None or k in spliced)}
                if chosen:
                    windows_WS = self.windows(n_windows)[:splice_windows]
                    for label, result in evaluate_splices(lm, chosen, windows_WS).items():
                        out[label] += (result,)
        if "clustering" in stages:
            self._clustering(own, n_windows, out)
        return out

    def windows(self, n_windows: int) -> Tensor:
        if n_windows not in self._windows:
            self._windows[n_windows] = self.corpus.windows(self.lm.tokenizer, n_windows)
        return self._windows[n_windows]

    def rows(self, lm, n_windows: int) -> Tensor:
        """Activations of ``lm`` (the model, or a random-model control's) at the storable positions."""
        key = (id(lm), n_windows)
        if key not in self._acts:
            self._acts[key] = site_rows(lm, self.site, self.windows(n_windows))
        return self._acts[key]

    def frontier(self, fitted: dict, n_windows: int) -> dict:
        acts_ND = self.rows(self.lm, n_windows)
        return {name: truncated_curve(basis, acts_ND, budgets(basis.d_sae)) for name, basis in fitted.items()}

    def task_probing(self, own: dict, randoms: dict, n_windows: int, task_names, labels):
        if labels is not None:
            corpus = replace(resolve_corpus(Path(labels)), split="all", context_length=self.corpus.context_length,
                             note="the labels file, every window")
            data = task_windows(self.lm.tokenizer, corpus, (), n_windows, labelled=read_labels(labels))
        else:
            corpus = self.corpus
            data = task_windows(self.lm.tokenizer, corpus, select_tasks(task_names), n_windows)
            # The corpus is code when most positions are in documents that parse as Python.
            code_WS = data.labels.get("code")
            if code_WS is not None:
                self.python = bool((code_WS[data.keep_WS] == 1).float().mean() >= 0.5)
        # Rows in keep_WS order: site_rows keeps the same storable positions task_windows marked.
        acts_ND = site_rows(self.lm, self.site, data.windows_WS)
        contenders: dict[str, tuple] = {ACTIVATIONS: (None, acts_ND), **{k: (d, acts_ND) for k, d in own.items()}}
        for label, (candidate, lm) in randoms.items():
            contenders[label] = (candidate, site_rows(lm, self.site, data.windows_WS))
        result = probe_tasks(contenders, data, corpus=corpus.to_dict(), seed=self.seed)
        if not result.tasks:
            self.notes.append("no contextual task had enough positives and negatives: " +
                              "; ".join(f"{t}: {why}" for t, why in result.skipped[:3]))
        return result

    def category_probing(self, contenders: dict, n_windows: int):
        if not self.python:
            self.skipped.add("probing")
            self.notes.append("token-category probing skipped: the corpus is not Python code")
            return None
        rows = self._category_rows(n_windows)[1]
        return probe_dictionaries(contenders, rows.acts_ND, rows.labels_N, rows.window_N, classes=PYTHON_CATEGORIES,
                                  seed=self.seed)

    def _clustering(self, own: dict, n_windows: int, out: dict) -> None:
        if not self.python:
            self.skipped.add("clustering")
            self.notes.append("clustering skipped: its classes are Python token categories and the corpus is not "
                              "Python code")
            return
        windows_WS, rows = self._category_rows(n_windows)
        for label, candidate in own.items():
            out[label] += (cluster_codes(candidate, rows, windows_WS, self.lm.tokenizer, classes=PYTHON_CATEGORIES,
                                         seed=self.seed, name=label),)

    def _category_rows(self, n_windows: int):
        if self._rows is None:
            c = self.corpus
            windows_WS, labels_WS = labelled_windows(self.lm.tokenizer, n_windows, c.context_length,
                                                     corpus=c.source(), prepend_bos=c.prepend_bos,
                                                     holdout=c.holdout if c.split == "holdout" else None)
            self._rows = windows_WS, labelled_activations(self.lm, self.site, windows_WS, labels_WS)
        return self._rows


def _fit_corpus(where: EvalCorpus, trained_on: dict | None) -> EvalCorpus:
    """Where baselines are fitted: the training corpus's training windows, like the dictionary's; else
    the evaluation corpus's (its training split by the same rule)."""
    if trained_on is not None:
        try:
            return replace(resolve_corpus(None, trained_on=trained_on, allow_trained=True), split="train")
        except MonosemanticError:
            pass  # the training corpus is gone or changed: fit on the text being scored
    return replace(where, split="train")


def _checked_site(lm, dictionary: Dictionary, tasks: Sequence[str], trained_on: dict | None = None) -> str:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise MonosemanticError(f"unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(TASKS)}")
    site = dictionary.config.site_in
    if site is None:
        raise MonosemanticError("the dictionary records no input site; it cannot be matched to the model's activations")
    width = lm.width(site)
    if width != dictionary.config.d_in:
        raise MonosemanticError(f"dictionary expects d_in={dictionary.config.d_in} but {lm.name} site {site} has "
                                f"width {width}; evaluate it on the model it was trained for")
    # The training record names the model the activations really came from (imported dictionaries
    # name models in their own library's terms, so only a recorded run is checked).
    model = (trained_on or {}).get("model") or (dictionary.config.model if trained_on is not None else None)
    if model is not None and model != lm.name and Path(model).name != Path(lm.name).name:
        raise MonosemanticError(f"the dictionary was trained on model {model!r} but the evaluation runs {lm.name!r}; "
                                f"pass --model {model} (or the same model's folder)")
    return site
