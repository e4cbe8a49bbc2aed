"""How long the evaluation suite takes on the demo's SAE, its seeds, its controls and the baselines.

Run by hand after `monosemantic demo` (it reads the demo's folder):

    python benchmarks/evaluate.py --demo runs/demo

Times, in one process: fitting the baselines, then each stage of the suite alone (each run
pays its own windows and activations, so the parts add up to more than the whole), then the
whole suite as the demo runs it. Wall-clock seconds; write the figures down with the machine
and the date in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import TASKS, fit_baselines, resolve_corpus, run_suite, training_record
from monosemantic.formats import load_dictionary
from monosemantic.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="the demo's output folder")
    parser.add_argument("--name", default="topk_k32_x8")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stages", default=",".join(TASKS), help="stages timed one by one")
    parser.add_argument("--skip-whole", action="store_true", help="time the stages only, not the whole suite")
    args = parser.parse_args()

    lm = load_model("smollm2-135m", threads=args.threads)
    sae = load_dictionary(args.demo / "sweep" / args.name)
    seeds = {p.name: load_dictionary(p) for p in sorted((args.demo / "seeds").glob(f"{args.name}_s*"))}
    random_path = args.demo / "random-model" / "sweep" / args.name
    random = None
    if random_path.exists():
        control = load_dictionary(random_path)
        if control.config.model is None:
            raise MonosemanticError(f"{random_path} does not name the model it was trained on")
        random = {"random-model": (control, load_model(control.config.model))}
    trained_on = training_record(args.demo / "sweep" / args.name)
    site = sae.config.site_in
    if site is None:
        raise MonosemanticError(f"{args.demo / 'sweep' / args.name} does not name the site it reads")

    start = time.perf_counter()
    fitted = fit_baselines(lm, site, ["identity", "pca", "ica"], min(lm.width(site), sae.config.d_sae),
                           corpus=resolve_corpus(trained_on=trained_on), options={"ica": {"max_iter": 300}})
    print(f"baselines (neurons, PCA, ICA): {time.perf_counter() - start:.1f} s")
    common = dict(name=args.name, seeds=seeds, random_control=random, trained_on=trained_on, fitted=fitted)
    for stage in args.stages.split(","):
        start = time.perf_counter()
        run_suite(lm, sae, tasks=(stage,), **common)
        print(f"stage {stage}: {time.perf_counter() - start:.1f} s")
    if args.skip_whole:
        return
    start = time.perf_counter()
    suite = run_suite(lm, sae, **common)
    print(f"whole suite ({len(suite.groups)} groups, {sum(len(m) for m in suite.groups.values())} contenders): "
          f"{time.perf_counter() - start:.1f} s")
    print(suite.verdict())


if __name__ == "__main__":
    main()
