"""Ground-truth recovery at a larger scale than the CI test, through the real Trainer.

Data: rows that are sparse non-negative combinations of ``--features`` random unit directions
in ``--d`` dimensions (superposition: more directions than dimensions), ``--active`` of them per
row with magnitudes U(0.5, 1.5), the toy setting of Sharkey et al. 2022 that the founding
paper's replication (founding document 000) starts from. One Trainer fits a top-k and a ReLU+L1
dictionary on the same batches; the figure is the mean over true directions of the best cosine
similarity with a decoder row (MMCS), plus the share of directions found at cosine >= 0.9.

    python benchmarks/synthetic.py                      # 512 directions in 256 dims, 5 active
    python benchmarks/synthetic.py --features 1024 --expansion 2

The CI-sized version (256 directions in 32 dims) is tests/test_training.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.dictionaries import make_dictionary
from monosemantic.training import TensorSource, TrainConfig, Trainer


def sparse_rows(n: int, d: int, m: int, active: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, d]`` rows and the ``[m, d]`` unit directions they are made of."""
    g = torch.Generator().manual_seed(seed)
    dirs_MD = torch.randn(m, d, generator=g)
    dirs_MD /= dirs_MD.norm(dim=1, keepdim=True)
    rows = []
    for start in range(0, n, 65536):  # in chunks: the [chunk, m] draw is the big temporary
        size = min(65536, n - start)
        picked_CA = torch.rand(size, m, generator=g).argsort(dim=1)[:, :active]
        codes_CM = torch.zeros(size, m).scatter_(1, picked_CA, torch.rand(size, active, generator=g) + 0.5)
        rows.append(codes_CM @ dirs_MD)
    return torch.cat(rows), dirs_MD


def recovery(dictionary, dirs_MD: torch.Tensor) -> tuple[float, float]:
    """(MMCS, share of true directions with a decoder row at cosine >= 0.9)."""
    W_FD = dictionary.W_dec.detach().float()
    best_M = (dirs_MD @ (W_FD / W_FD.norm(dim=1, keepdim=True)).T).max(dim=1).values
    return float(best_M.mean()), float((best_M >= 0.9).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--d", type=int, default=256, help="activation width")
    parser.add_argument("--features", type=int, default=512, help="true directions")
    parser.add_argument("--active", type=int, default=5, help="directions per row (top-k's k)")
    parser.add_argument("--expansion", type=float, default=2.0, help="dictionary size / true directions")
    parser.add_argument("--rows", type=int, default=1_000_000, help="distinct rows drawn")
    parser.add_argument("--tokens", type=int, default=4_000_000, help="rows trained on (epochs over --rows)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--l1", type=float, default=0.5, help="relu L1 coefficient (decoder-norm weighted)")
    parser.add_argument("--lr-topk", type=float, default=2e-3)
    parser.add_argument("--lr-relu", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100, help="data seed (dictionaries use seed 0)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    x_ND, dirs_MD = sparse_rows(args.rows, args.d, args.features, args.active, args.seed)
    made = time.perf_counter() - start
    f = int(round(args.expansion * args.features))
    torch.manual_seed(0)  # apart from the data seed: a fresh decoder must not start on the answer
    dictionaries = {"topk": make_dictionary("topk", args.d, f, k=args.active),
                    "relu": make_dictionary("relu", args.d, f, l1_coeff=args.l1, weight_l1_by_decoder_norm=True)}
    # Raw scale, as in the CI test: the L1 coefficient is set for these rows (E||x||^2 ~ active * 1.08).
    config = TrainConfig(total_tokens=args.tokens, batch_size=args.batch, log_every=100,
                         normalize_activations=False, checkpoint_every=None)
    start = time.perf_counter()
    result = Trainer(dictionaries, config, lrs={"topk": args.lr_topk, "relu": args.lr_relu}).fit(
        TensorSource(x_ND), progress=True)
    seconds = time.perf_counter() - start

    print(f"# benchmarks/synthetic.py, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__} "
          f"with {args.threads} threads")
    print(f"data: {args.features} unit directions in {args.d} dims, {args.active} active per row, "
          f"{args.rows:,} rows (drawn in {made:.1f} s); dictionaries of {f} latents; "
          f"{result.tokens:,} rows trained in {seconds:.0f} s ({result.steps} steps of {args.batch})")
    print("\n| dictionary | MMCS | directions at cos >= 0.9 | FVU | L0 | dead fraction |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, dictionary in result.dictionaries.items():
        score, found = recovery(dictionary, dirs_MD)
        m = result.metrics[name]
        print(f"| {name} | {score:.3f} | {found:.3f} | {m['fvu']:.4f} | {m['l0']:.1f} | {m['dead_fraction']:.3f} |")


if __name__ == "__main__":
    main()
