"""Why the SAE's single best latent loses to a neuron on contextual tasks: coverage (issue 13).

A sparse latent is 0 on most tokens, and every token where the chosen latent is 0 ties with
every other such token. If the latent fires on a share ``p`` of a task's positives and ``q`` of
its negatives, no ordering of the firing tokens gives a k=1 AUROC above

    ceiling = max(p + (1 - p) * (1 - q) / 2, q + (1 - q) * (1 - p) / 2)

(the first when the probe reads the latent as evidence for the task: firing positives beat every
silent negative and, at best, every firing negative, and silent pairs tie; the second when it
reads the latent as evidence against). A neuron is never 0, so its ceiling is 1.

This script reads a finished run of the demo's pipeline (``monosemantic demo`` or
``benchmarks/large.py``), rebuilds its probing windows (the same held-out windows and tasks the
suite scored), and, for each token task and each trained seed, reports the k=1 latent the suite
chose (from ``eval/report.json``), its ``p``, ``q``, ceiling and AUROC, and the share of
positives at least one of the k=5 latents covers.

    python benchmarks/coverage.py RUN_FOLDER [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from monosemantic.demo import recorded_headline_name
from monosemantic.dictionaries import load_dictionary_native
from monosemantic.evaluation import resolve_corpus, training_record
from monosemantic.evaluation.features import dictionary_codes, issparse
from monosemantic.evaluation.suite import site_rows
from monosemantic.evaluation.tasks import select_tasks, task_windows
from monosemantic.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description="Coverage of the k=1 probing latents of a finished demo run.")
    parser.add_argument("run", type=Path, help="a demo output folder (summary.json, sweep/, eval/report.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()

    summary = json.loads((args.run / "summary.json").read_text(encoding="utf-8"))
    given = summary["settings"]
    site, seed = given["site"], given["seed"]
    name = recorded_headline_name(given)
    suite = json.loads((args.run / "eval" / "report.json").read_text(encoding="utf-8"))["suite"]
    probing = suite["task_probing"]
    members = suite["groups"][name]  # the seeds as the suite names them: name, name_s1, ...
    chosen = {(s["name"], s["task"], s["k"]): s for s in probing["scores"]}
    token_tasks = [t["name"] for t in probing["tasks"] if not t["pooled"]]

    lm = load_model("smollm2-135m")  # the demo's model
    first = f"{name}_s{seed}"
    corpus = resolve_corpus(trained_on=training_record(args.run / "sweep" / first))
    data = task_windows(lm.tokenizer, corpus, select_tasks(token_tasks), probing["n_windows"])
    acts_ND = site_rows(lm, site, data.windows_WS)

    rows = []
    for member in members:
        folder = args.run / "sweep" / (first if member == name else member)
        codes = dictionary_codes(load_dictionary_native(folder), acts_ND)
        for task in token_tasks:
            k1, k5 = chosen.get((member, task, 1)), chosen.get((member, task, 5))
            if k1 is None or k5 is None:
                continue
            y_N = data.labels[task][data.keep_WS].numpy()
            fired_N = _fired(codes, k1["latents"][:1])
            p, q = fired_N[y_N == 1].mean(), fired_N[y_N == 0].mean()
            union = _fired(codes, k5["latents"])[y_N == 1].mean()
            neuron = chosen.get(("neurons", task, 1))
            ceiling = max(p + (1 - p) * (1 - q) / 2, q + (1 - q) * (1 - p) / 2)
            rows.append({"seed": member, "task": task, "positives": float((y_N == 1).mean()), "p": float(p),
                         "q": float(q), "ceiling": float(ceiling), "auroc": k1["auroc"], "k5_union": float(union),
                         "neuron_auroc": neuron["auroc"] if neuron else float("nan")})
    text = _tables(rows, name)
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")


def _fired(codes, latents: list[int]) -> np.ndarray:
    """Boolean ``[N]``: any of ``latents`` is nonzero on the row."""
    block = codes[:, latents]
    block = block.toarray() if issparse(block) else np.asarray(block)
    return (block != 0).any(axis=1)


def _tables(rows: list[dict], name: str) -> str:
    tasks = sorted({r["task"] for r in rows}, key=lambda t: -np.mean([r["positives"] for r in rows if r["task"] == t]))
    out = [f"k=1 latents of {name} on {len(tasks)} token tasks (means over its seeds)", "",
           "| task | positives | p: positives it fires on | q: negatives it fires on | ceiling | AUROC k=1 "
           "| neuron AUROC k=1 | positives any of the k=5 latents covers |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        cells = [np.mean([r[key] for r in mine]) for key in ("positives", "p", "q", "ceiling", "auroc",
                                                                "neuron_auroc", "k5_union")]
        out.append(f"| {task} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    means = {key: np.mean([r[key] for r in rows]) for key in ("p", "q", "ceiling", "auroc", "neuron_auroc",
                                                               "k5_union")}
    # p and q are over every probed row, the AUROC over the test split only: it can pass the ceiling a little.
    at_ceiling = np.mean([r["ceiling"] - r["auroc"] < 0.05 for r in rows])
    out += ["", f"Over every (seed, task): mean p {means['p']:.3f}, q {means['q']:.3f}; mean ceiling "
            f"{means['ceiling']:.3f}; mean AUROC {means['auroc']:.3f} (neurons {means['neuron_auroc']:.3f}); "
            f"AUROC within 0.05 of its ceiling in {at_ceiling:.0%} of them; the k=5 latents together cover "
            f"{means['k5_union']:.3f} of the positives."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
