"""Evaluating dictionaries: reconstruction, downstream loss, and comparisons between dictionaries.

- :func:`evaluate_reconstruction`: MSE, FVU, cosine, L0/L1, shrinkage, dead/dense latents and
  the log10 density histogram on held-out rows (a tensor, pairs, or a store's batches via
  :func:`store_rows`), streamed.
- :func:`evaluate_splice`: next-token cross-entropy with the dictionary spliced into its site,
  against clean, zero- and mean-ablated runs (loss recovered, delta loss, KL).
- :func:`mmcs` and :func:`stitch`: decoder-direction comparisons.

Every result is a frozen dataclass holding the config that produced it, with ``to_dict()``
giving strict JSON. Importing this package also registers the baselines
(:mod:`monosemantic.baselines`), so saved baselines load and every evaluation can be run on them.
"""

from .. import baselines  # noqa: F401  (registers the baseline architectures)
from .compare import MMCSResult, StitchResult, decoder_directions, max_cosines, mmcs, stitch
from .density import DensityResult, density_summary
from .metrics import ReconstructionConfig, ReconstructionResult, evaluate_reconstruction
from .rows import activation_batches, store_rows
from .splice import (
    SpliceConfig,
    SpliceResult,
    evaluate_splice,
    evaluate_splices,
    scored_positions,
    site_mean,
    splice_sites,
)
from .windows import corpus_windows, store_windows

__all__ = ["DensityResult", "MMCSResult", "ReconstructionConfig", "ReconstructionResult", "SpliceConfig",
           "SpliceResult", "StitchResult", "activation_batches", "corpus_windows", "decoder_directions",
           "density_summary", "evaluate_reconstruction", "evaluate_splice", "evaluate_splices", "max_cosines", "mmcs",
           "scored_positions", "site_mean", "splice_sites", "stitch", "store_rows", "store_windows"]

# Labelled tasks, probing, clustering, absorption and reports (scikit-learn and matplotlib are
# imported only when used, so this package still imports without the `eval` extra).
from .absorption import (
    AbsorbedWord,
    AbsorptionConfig,
    AbsorptionResult,
    LetterAbsorption,
    absorption,
    measure_absorption,
)
from .clustering import Cluster, ClusteringConfig, ClusteringResult, TokenExample, cluster_codes
from .labels import (
    PYTHON_CATEGORIES,
    LabelledRows,
    labelled_activations,
    labelled_windows,
    labels_from_spans,
    labels_from_tokens,
    python_token_labels,
)
from .probing import ProbeScore, ProbingConfig, ProbingResult, probe_dictionaries
from .report import write_report
from .spelling import DEFAULT_PREFIX, LETTERS, first_letter_task, word_activations

__all__ += ["AbsorbedWord", "AbsorptionConfig", "AbsorptionResult", "Cluster", "ClusteringConfig", "ClusteringResult",
            "DEFAULT_PREFIX", "LETTERS", "LabelledRows", "LetterAbsorption", "PYTHON_CATEGORIES", "ProbeScore",
            "ProbingConfig", "ProbingResult", "TokenExample", "absorption", "cluster_codes", "first_letter_task",
            "labelled_activations", "labelled_windows", "labels_from_spans", "labels_from_tokens",
            "measure_absorption", "probe_dictionaries", "python_token_labels", "word_activations", "write_report"]

from .corpus import EvalCorpus, resolve_corpus, training_record  # noqa: E402
from .seeds import Interval, SeedOverlap, SeedOverlapMatrix, cross_seed_overlap, interval, overlap_matrix  # noqa: E402
from .suite import BASELINES, TASKS, evaluate_suite, fit_baselines, run_suite, site_rows, untrained_copy  # noqa: E402
from .suite_result import SuiteResult  # noqa: E402
from .task_probing import TaskProbeScore, TaskProbingResult, probe_tasks  # noqa: E402
from .tasks import BUILT_IN, Task, TaskWindows, read_labels, select_tasks, task_windows  # noqa: E402

__all__ += ["BASELINES", "BUILT_IN", "EvalCorpus", "Interval", "SeedOverlap", "SeedOverlapMatrix", "SuiteResult",
            "TASKS", "Task", "TaskProbeScore", "TaskProbingResult", "TaskWindows", "cross_seed_overlap",
            "evaluate_suite", "fit_baselines", "interval", "overlap_matrix", "probe_tasks", "read_labels",
            "resolve_corpus", "run_suite", "select_tasks", "site_rows", "task_windows", "training_record",
            "untrained_copy"]
