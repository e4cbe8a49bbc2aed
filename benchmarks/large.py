"""The founding claim at the largest scale a 2-core CPU machine allows (issue 13).

Harvests the whole default corpus with English prose interleaved (``stdlib+kjv``: every file of
the standard library and the King James Bible, a few million tokens) from SmolLM2-135M's
``blocks.6.resid_post`` once, trains each recipe from three init seeds for many epochs of that
store, trains the same recipe on a randomly initialised SmolLM2, and evaluates everything the
demo evaluates (neurons, PCA, ICA, the untrained copies, the random-model control; contextual
probing with intervals over the seeds; the offline judge with its check against the controls).

It is the demo's pipeline (``monosemantic.demo.run_demo``) at other sizes, so the demo and this
benchmark can never measure differently. Every stage resumes: rerun the same command after a
crash and the harvests and trainings continue where they stopped; finished ones are not redone.

    python benchmarks/large.py --out ~/.cache/monosemantic/benchmarks/large --arch topk

writes ``<out>/<arch>/summary.md`` per recipe and ``<out>/table.md`` (every recipe run so far).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from monosemantic.activations.plan import plan_shards
from monosemantic.data import text_source, token_windows
from monosemantic.demo import DemoSettings, recorded_headline_name, run_demo, table_cell
from monosemantic.evaluation import Interval
from monosemantic.models import load_model

CORPUS = "stdlib+kjv"
ALL_TOKENS = 100_000_000  # more than the corpus holds: harvest all of it


def main() -> None:
    parser = argparse.ArgumentParser(description="The founding claim at the largest scale a 2-core CPU allows.")
    parser.add_argument("--out", type=Path, default=Path("~/.cache/monosemantic/benchmarks/large").expanduser())
    parser.add_argument("--arch", action="append", help="recipes to run (repeatable; default topk)")
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--tokens", type=int, default=ALL_TOKENS, help="rows harvested (default: the whole corpus)")
    parser.add_argument("--random-tokens", type=int, default=1_000_000,
                        help="rows harvested from the random model (its control trains several epochs of them)")
    parser.add_argument("--train-tokens", type=int, default=10_000_000)
    parser.add_argument("--sparsity", type=_number, default=32,
                        help="value of each recipe's sparsity option: k for topk/batchtopk/matryoshka, l0_coeff for "
                             "jumprelu")
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    out = args.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model("smollm2-135m", threads=args.threads)
    tokens = min(args.tokens, corpus_rows(lm, args.corpus, DemoSettings.context_length))
    for arch in args.arch or ["topk"]:
        settings = DemoSettings(corpus=args.corpus, tokens=tokens, random_tokens=args.random_tokens,
                                train_tokens=args.train_tokens, arch=arch, sparsities=(args.sparsity,),
                                expansions=(args.expansion,), headline_sparsity=args.sparsity,
                                headline_expansion=args.expansion,
                                checkpoint_every=200)  # a step here is seconds: lose little to a kill
        folder = out / arch
        _share_stores(out, folder)
        start = time.perf_counter()
        run_demo(folder, settings, lm=lm, echo=lambda line, arch=arch: print(f"[{arch}] {line}", flush=True))
        print(f"[{arch}] done in {time.perf_counter() - start:.0f} s", flush=True)
    table = collect(out) + "\n" + movement(out)
    (out / "table.md").write_text(table, encoding="utf-8")
    print(table)


def _number(text: str) -> int | float:
    """An option value as given: ``32`` stays an int (k), ``0.5`` is a float (a coefficient)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def corpus_rows(lm, corpus: str, context_length: int) -> int:
    """The storable rows of the whole corpus, counted as the harvest plans them."""
    windows = token_windows(text_source(corpus), lm.tokenizer, context_length)
    special_ids = sorted(set(lm.tokenizer.all_special_ids))
    return plan_shards(windows, special_ids, n_tokens=2**62, windows_per_shard=128, skip_first=True)[1]


def _share_stores(out: Path, folder: Path) -> None:
    """Every recipe reads the one harvest of each model (the demo harvests into ``store`` under its folder)."""
    for shared, link in ((out / "store", folder / "store"), (out / "random-store", folder / "random-model" / "store")):
        shared.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(shared.resolve(), link, target_is_directory=True)


_COLUMNS = ("dictionary", "seeds", "L0", "FVU", "loss recovered", "dead share", "AUROC k=1", "AUROC k=2", "AUROC k=5",
            "detection", "fuzzing")


def collect(out: Path) -> str:
    """One Markdown table of every finished recipe under ``out``: its seeds, then its controls and baselines."""
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}", "",
             "| recipe | " + " | ".join(_COLUMNS) + " |", "|---|---|" + "---:|" * (len(_COLUMNS) - 1)]
    for summary in sorted(out.glob("*/summary.json")):
        data = json.loads(summary.read_text(encoding="utf-8"))
        given = data["settings"]
        name = recorded_headline_name(given)
        seeds = [data["sweep"][k]["dead_fraction"] for k in data["sweep"] if k.startswith(f"{name}_s")]
        dead = sum(seeds) / len(seeds) if seeds else None  # the last logged step's, mean over the seeds
        for row in data["headline"]:
            cells = [row["dictionary"], row["seeds"], _cell(row["l0"]), _cell(row["fvu"]), _cell(row["loss_recovered"]),
                     _cell(dead) if row["role"] == "dictionary" else "-", _cell(row["auroc_k1"]),
                     _cell(row.get("auroc_k2")), _cell(row["auroc_k5"]), _cell(row["detection"]),
                     _cell(row["fuzzing"])]
            lines.append(f"| {summary.parent.name} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    """A summary.json value (an Interval saved as a dict) as the demo prints it."""
    return table_cell(Interval(**value) if isinstance(value, dict) else value)


def movement(out: Path) -> str:
    """How far each seed's decoder moved from its own initialisation (its untrained copy): the
    Hungarian-matched mean decoder cosine, over 2,048 latents. Near 1: training barely moved it."""
    from monosemantic.dictionaries import load_dictionary_native
    from monosemantic.evaluation import untrained_copy
    from monosemantic.evaluation.seeds import cross_seed_overlap

    lines = ["| seed | matched cosine with its own initialisation | share >= 0.7 |", "|---|---:|---:|"]
    for folder in sorted(out.glob("*/sweep/*_s[0-9]*")):
        if not (folder / "config.json").exists():
            continue
        trained = load_dictionary_native(folder)
        seed = int(folder.name.rsplit("_s", 1)[1])
        overlap = cross_seed_overlap(trained, untrained_copy(trained, seed), max_latents=2048)
        lines.append(f"| {folder.parent.parent.name}/{folder.name} | {overlap.mean_cosine:.3f} | {overlap.share:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
