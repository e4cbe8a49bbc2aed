"""Ground-truth recovery on hierarchical, correlated, Zipf-frequency synthetic data (SynthSAEBench-style).

Data: ``monosemantic.evaluation.synthetic`` — ``--features`` random unit directions in ``--d``
dimensions, firing with Zipf frequencies (``--zipf``) for ``--active`` features a row on average,
correlated through ``--rank`` shared Gaussian factors (``--strength``), and arranged in trees
(``--parents`` roots, ``--children`` per node, ``--depth`` levels) where a child fires only with
its parent. One Trainer fits every single-site autoencoder architecture on the same endless
stream of fresh rows; each is then scored on held-out rows against the truth: Hungarian-matched
MCC, mean detection F1, uniqueness, shrinkage, FVU and L0.

    python benchmarks/synthetic_hierarchy.py               # 1024 features in 256 dims, 10M rows
    python benchmarks/synthetic_hierarchy.py --quick       # 256 features in 64 dims, ~1 minute
    python benchmarks/synthetic_hierarchy.py --rows 50000000 --expansion 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.dictionaries import ARCHITECTURES, make_dictionary
from monosemantic.evaluation.synthetic import SyntheticConfig, SyntheticSource, make_synthetic, score_dictionary
from monosemantic.training import TrainConfig, Trainer

QUICK = dict(features=256, d=64, parents=16, children=3, depth=1, active=4.0, rank=8, rows=1_000_000, batch=1024,
             lr=3e-3, eval_rows=32768)


def architectures() -> list[str]:
    """Registered trainable autoencoders over one site (an example of each states its input shape)."""
    return [name for name, cls in ARCHITECTURES.items()
            if cls.TRAINABLE and len(make_dictionary(name, 8, 16, **cls.EXAMPLE).input_shape) == 1]


def sparsity_options(name: str, args: argparse.Namespace, k: int) -> dict:
    """Each architecture's sparsity setting; the penalties' library defaults suit LLM sites (L0 in the tens
    to hundreds), so these are set for the few active features a row here (measured with --quick)."""
    if ARCHITECTURES[name].sparsity_option() == "k":
        return {"k": k}
    return {"relu": {"l1_coeff": args.relu_l1, "weight_l1_by_decoder_norm": True},
            "gated": {"l1_coeff": args.gated_l1},
            "jumprelu": {"l0_coeff": args.jumprelu_l0, "initial_threshold": 0.5}}.get(name, {})


def build(names: list[str], args: argparse.Namespace, f: int, k: int) -> dict:
    torch.manual_seed(0)  # apart from the data seed: a fresh decoder must not start on the answer
    return {name: make_dictionary(name, args.d, f, **sparsity_options(name, args, k)) for name in names}


def time_steps(dictionary, seconds: dict, name: str) -> None:
    """Add each training step's time for this dictionary to ``seconds[name]``.

    The Trainer steps every dictionary in turn (loss, backward, gradient projection, Adam,
    decoder renormalisation), so the time from ``loss`` to the end of ``normalize_decoder_`` is
    this dictionary's share; the shared batch drawing is not in it.
    """
    loss, normalize = dictionary.loss, dictionary.normalize_decoder_
    started = [0.0]

    def timed_loss(*args, **kwargs):
        started[0] = time.perf_counter()
        return loss(*args, **kwargs)

    def timed_normalize():
        normalize()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started[0]

    dictionary.loss, dictionary.normalize_decoder_ = timed_loss, timed_normalize


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small problem for a check (other flags still apply): "
                        + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--features", type=int, default=1024, help="true features G")
    parser.add_argument("--d", type=int, default=256, help="activation width D")
    parser.add_argument("--parents", type=int, default=32, help="tree roots")
    parser.add_argument("--children", type=int, default=3, help="children per tree node")
    parser.add_argument("--depth", type=int, default=2, help="levels below each root")
    parser.add_argument("--zipf", type=float, default=0.8, help="Zipf exponent of firing frequencies")
    parser.add_argument("--active", type=float, default=8.0, help="mean active features per row (top-k's k)")
    parser.add_argument("--rank", type=int, default=16, help="rank of the firing correlation")
    parser.add_argument("--strength", type=float, default=0.5, help="correlation strength in [0, 1)")
    parser.add_argument("--expansion", type=float, default=1.0, help="dictionary size / true features")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows trained on (fresh rows every step)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate for every dictionary")
    parser.add_argument("--relu-l1", type=float, default=5.0, help="relu L1 coefficient (decoder-norm weighted)")
    parser.add_argument("--gated-l1", type=float, default=5.0, help="gated L1 coefficient")
    parser.add_argument("--jumprelu-l0", type=float, default=3.0, help="jumprelu L0 coefficient")
    parser.add_argument("--progress", action="store_true", help="show the Trainer's progress bar")
    parser.add_argument("--eval-rows", type=int, default=65536, help="held-out rows scored")
    parser.add_argument("--only", nargs="+", help="architectures to train (default: all single-site ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100, help="data seed (dictionaries use seed 0)")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)  # flags given explicitly still win
    return parser.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    config = SyntheticConfig(n_features=args.features, d_model=args.d, n_parents=args.parents,
                             children_per_parent=args.children, depth=args.depth, zipf_exponent=args.zipf,
                             mean_active=args.active, correlation_rank=args.rank,
                             correlation_strength=args.strength, seed=args.seed)
    model = make_synthetic(config)
    f, k = int(round(args.expansion * args.features)), max(1, int(round(args.active)))
    dictionaries = build(args.only or architectures(), args, f, k)
    seconds: dict[str, float] = {}
    for name, dictionary in dictionaries.items():
        time_steps(dictionary, seconds, name)
    train = TrainConfig(total_tokens=args.rows, batch_size=args.batch, lr=args.lr, log_every=100,
                        checkpoint_every=None)
    start = time.perf_counter()
    result = Trainer(dictionaries, train).fit(SyntheticSource(model, seed=args.seed),
                                                 progress=args.progress)
    total = time.perf_counter() - start
    report(args, config, model, result, seconds, total, f, k)


def report(args, config, model, result, seconds, total, f, k) -> None:
    print(f"\n# benchmarks/synthetic_hierarchy.py{' --quick' if args.quick else ''}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__} "
          f"with {args.threads} threads")
    print(f"data: {config.n_features} features in {config.d_model} dims, {config.n_tree_features} in "
          f"{config.n_parents} trees (x{config.children_per_parent}, depth {config.depth}), Zipf "
          f"{config.zipf_exponent}, mean L0 {config.mean_active}, correlation rank {config.correlation_rank} "
          f"strength {config.correlation_strength}; dictionaries of {f} latents (k={k}), {result.tokens:,} rows "
          f"trained in {total:.0f} s ({result.steps} steps of {args.batch}, lr {args.lr}); scored on "
          f"{args.eval_rows:,} held-out rows")
    print("\n| dictionary | MCC | mean F1 | uniqueness | shrinkage | FVU | L0 | own train steps, s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, dictionary in result.dictionaries.items():
        s = score_dictionary(dictionary, model, n_rows=args.eval_rows, seed=args.seed + 1)
        print(f"| {name} | {s.mcc:.3f} | {s.mean_f1:.3f} | {s.uniqueness:.3f} | {s.shrinkage:.3f} | "
              f"{s.fvu:.4f} | {s.l0:.1f} | {seconds.get(name, 0.0):.1f} |")


if __name__ == "__main__":
    main()
