"""Training quality of recipe variants at equal budget: held-out FVU, L0 and dead share (issue 13).

Trains each named variant on the same cached SmolLM2-135M ``blocks.6.resid_post`` rows (normalised
as the Trainer does, mean norm sqrt(D); the last 10% of rows held out) with the Trainer, and reports
what it reaches on the held-out rows. Used to check every architecture's defaults at short and
long runs, and to find what separates a recipe from its peers' numbers.

    python benchmarks/recipes.py --rows 200000 --tokens 1000000 --variants relu,relu_w2.4,topk
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

D_IN = 576
SITE = "blocks.6.resid_post"

# name -> (arch, options, TrainConfig overrides). Batch 4096 throughout. More JumpReLU variants
# are named jumprelu_t{initial_threshold}_lr{threshold_lr_scale}[_l{l0_coeff}] (see variant()).
VARIANTS: dict[str, tuple[str, dict, dict[str, Any]]] = {
    "relu": ("relu", {}, {}),
    "relu_init1": ("relu", {"decoder_init_norm": 1.0}, {}),
    "relu_w2.4": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 2.4}, {}),
    "relu_w2.4_init1": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 2.4, "decoder_init_norm": 1.0}, {}),
    "relu_w2.4_nodecay": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 2.4}, {"lr_decay_start": 1.0}),
    "relu_w2.4_clip1": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 2.4}, {"grad_clip": 1.0}),
    "relu_w1": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 1.0}, {}),
    "relu_p1": ("relu", {"l1_coeff": 1.0}, {}),
    "relu_p2.4": ("relu", {"l1_coeff": 2.4}, {}),
    "relu_p5": ("relu", {"l1_coeff": 5.0}, {}),
    "relu_w5": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 5.0}, {}),
    "relu_w5_init1": ("relu", {"weight_l1_by_decoder_norm": True, "l1_coeff": 5.0, "decoder_init_norm": 1.0}, {}),
    "topk": ("topk", {"k": 32}, {}),
    "topk_noauxk": ("topk", {"k": 32, "aux_coeff": 0.0}, {}),
    "topk_warm10": ("topk", {"k": 32}, {"lr_warmup_steps": "10%"}),
    "topk_clip1": ("topk", {"k": 32}, {"grad_clip": 1.0}),
    "topk_nodecay": ("topk", {"k": 32}, {"lr_decay_start": 1.0}),
    "topk_lr8e-4": ("topk", {"k": 32}, {"lr": 8e-4}),
    "topk_clip0.1": ("topk", {"k": 32}, {"grad_clip": 0.1}),
    "topk_noclip": ("topk", {"k": 32}, {"grad_clip": None}),
    "topk_dl": ("topk", {"k": 32}, {"grad_clip": 1.0, "lr_decay_start": 1.0, "lr_warmup_steps": "10%"}),
    "batchtopk": ("batchtopk", {"k": 32}, {}),
    "matryoshka": ("matryoshka", {"k": 32}, {}),
    "jumprelu": ("jumprelu", {}, {}),
    "jumprelu_l0.3": ("jumprelu", {"l0_coeff": 0.3}, {}),
    "jumprelu_l0.1": ("jumprelu", {"l0_coeff": 0.1}, {}),
    "jumprelu_l3": ("jumprelu", {"l0_coeff": 3.0}, {}),
    "topk_k34": ("topk", {"k": 34}, {}),
    "topk_k99": ("topk", {"k": 99}, {}),
    "topk_k64": ("topk", {"k": 64}, {}),
    "gated": ("gated", {}, {}),
    "p_anneal": ("p_anneal", {}, {}),
    "p_anneal_1": ("p_anneal", {"l1_coeff": 1.0}, {}),
    "p_anneal_0.3": ("p_anneal", {"l1_coeff": 0.3}, {}),
}


def load_rows(cache: Path, rows: int, store: Path | None, threads: int | None) -> torch.Tensor:
    """``rows`` normalised rows: from ``store`` when given, else train.py's cached harvest (made on first use)."""
    if store is None:
        from train import load_rows as cached_rows  # the same cache benchmarks/train.py fills

        return cached_rows(argparse.Namespace(synthetic=False, cache=cache, rows=rows, threads=threads or 2))[0]
    from monosemantic.activations import ActivationStore

    x = ActivationStore(store).rows(SITE, 0, rows).float()
    return x.mul_(D_IN ** 0.5 / x.norm(dim=1).mean())  # in place: millions of rows take gigabytes


def variant(name: str) -> tuple[str, dict, dict[str, Any]]:
    """A named variant: from VARIANTS, or a JumpReLU grid point such as jumprelu_t0.1_lr30_l0.3."""
    if name in VARIANTS:
        return VARIANTS[name]
    grid = re.fullmatch(r"jumprelu_t([\d.e-]+)_lr([\d.e-]+)(?:_l([\d.e-]+))?", name)
    if grid is None:
        raise SystemExit(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)} or jumprelu_t*_lr*[_l*]")
    threshold, scale, coeff = grid.groups()
    options = {"initial_threshold": float(threshold), "threshold_lr_scale": float(scale)}
    return "jumprelu", options | ({"l0_coeff": float(coeff)} if coeff else {}), {}


def run_variant(name: str, x_train: torch.Tensor, x_test: torch.Tensor, tokens: int, seed: int,
                expansion: int = 8) -> dict:
    from monosemantic.dictionaries import make_dictionary
    from monosemantic.training import TensorSource, TrainConfig, Trainer

    arch, options, overrides = variant(name)
    steps = tokens // 4096
    # "10%" means that share of the run's steps.
    resolved: dict[str, Any] = {k: (max(1, int(steps * float(v[:-1]) / 100)) if isinstance(v, str) else v)
                                for k, v in overrides.items()}
    torch.manual_seed(seed)
    dictionary = make_dictionary(arch, D_IN, expansion * D_IN, **options)
    config = TrainConfig(total_tokens=tokens, normalize_activations=False, log_every=10_000, checkpoint_every=None,
                         seed=seed, **resolved)
    start = time.perf_counter()
    Trainer({name: dictionary}, config).fit(TensorSource(x_train), progress=False)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        dictionary.eval()
        sse = total = 0.0
        l0 = 0
        fired_F = torch.zeros(dictionary.d_sae, dtype=torch.bool)
        for x in x_test.split(4096):
            recon, codes = dictionary(x)[:2]
            sse += float((recon - x).pow(2).sum())
            total += float((x - x_test.mean(0)).pow(2).sum())
            l0 += int((codes > 0).sum())
            fired_F |= (codes > 0).any(0)
    return {"fvu": sse / total, "l0": l0 / len(x_test), "dead_share": 1 - float(fired_F.float().mean()),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description="Held-out FVU, L0 and dead share of recipe variants at equal budget.")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--store", type=Path, default=None, help="an activation store of SITE to read instead")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/monosemantic/benchmarks").expanduser())
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--variants", default="relu,relu_w2.4,relu_w2.4_init1,topk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--expansion", type=int, default=8, help="latents per input dimension")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = load_rows(args.cache, args.rows, args.store, args.threads)
    split = int(0.9 * len(x))
    results = {}
    for name in args.variants.split(","):
        results[name] = run_variant(name, x[:split], x[split:], args.tokens, args.seed, args.expansion)
        r = results[name]
        print(f"{name:22s} FVU {r['fvu']:.3f}  L0 {r['l0']:7.1f}  dead {r['dead_share']:.3f}  {r['seconds']:.0f} s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
