"""Circuits on SmolLM2-135M (issue 15): training throughput of transcoders at every layer, and graph time.

Part 1, training: tokens/s of the live forward alone (every layer's MLP input and output read
in one pass), of one layer's transcoder trained from it, and of transcoders at all 30 layers
trained from it, on the same windows with the same per-layer width and k. Medians over chunks
after a warm-up chunk. Part 2, tracing: the wall time and peak memory of one attribution graph
of a 32-token prompt with transcoders at all 30 layers (trained ones with ``--transcoders``,
else a random replacement of the same size: the work is the same).

    python benchmarks/circuits.py --threads 2 [--transcoders RUN/transcoders_k16_x4] [--json out.json]

Write the figures down with the machine and the date in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.circuits import Replacement, trace
from monosemantic.dictionaries import make_dictionary
from monosemantic.formats import load_dictionary
from monosemantic.models import load_model
from monosemantic.training import TrainConfig, Trainer
from monosemantic.training.live import LiveSource

# 32 SmolLM2 tokens; the model's top next token is " *"
PROMPT = "def add(a, b):\n    # we add up the two numbers\n    return a + b\n\ndef mul(a, b):\n    return a"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_rate(source: LiveSource, batch: int, chunks: int) -> float:
    """Tokens/s of reading the source's rows (the model's forward and the row gathering)."""
    times = []
    stream = source.batches(batch, seed=0)
    for chunk in range(chunks + 1):
        start = time.perf_counter()
        for _ in range(source.buffer_batches):
            next(stream)
        if chunk:  # the first chunk warms up
            times.append(time.perf_counter() - start)
    return source.buffer_batches * batch / statistics.median(times)


def training_rate(lm, layers: list[int], per_layer: int, k: int, batch: int, steps: int) -> float:
    """Tokens/s of training transcoders at ``layers`` from the live forward (the whole step)."""
    sites_in = [f"blocks.{layer}.mlp_in" for layer in layers]
    sites_out = [f"blocks.{layer}.mlp_out" for layer in layers]
    source = LiveSource(lm, sites=sites_in, sites_out=sites_out, buffer_batches=2)
    torch.manual_seed(0)
    t = make_dictionary("transcoders", lm.d_model, per_layer * len(layers), k=k, sites_in=sites_in,
                        sites_out=sites_out)
    config = TrainConfig(total_tokens=batch * steps, batch_size=batch, log_every=10 ** 9, checkpoint_every=None)
    start = time.perf_counter()
    Trainer({"t": t}, config).fit(source, progress=False)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description="Circuits on SmolLM2-135M: training throughput and graph time.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--expansion", type=int, default=4, help="latents per layer / width")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--transcoders", type=Path, default=None, help="trained transcoders for the graph timing")
    parser.add_argument("--max-features", type=int, default=512)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    lm = load_model("smollm2-135m", threads=args.threads)
    every = list(range(lm.n_layers))
    per_layer = args.expansion * lm.d_model
    figures: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "threads": args.threads, "torch": torch.__version__, "per_layer": per_layer, "k": args.k,
                     "batch": args.batch}
    if not args.skip_training:
        one_sites = LiveSource(lm, sites=["blocks.6.mlp_in"], sites_out=["blocks.6.mlp_out"], buffer_batches=2)
        all_sites = LiveSource(lm, sites=[f"blocks.{x}.mlp_in" for x in every],
                               sites_out=[f"blocks.{x}.mlp_out" for x in every], buffer_batches=2)
        figures["forward_one_layer_tok_s"] = forward_rate(one_sites, args.batch, 3)
        figures["forward_all_layers_tok_s"] = forward_rate(all_sites, args.batch, 3)
        figures["train_one_layer_tok_s"] = training_rate(lm, [6], per_layer, args.k, args.batch, args.steps)
        figures["train_all_layers_tok_s"] = training_rate(lm, every, per_layer, args.k, args.batch, args.steps)
        for key in ("forward_one_layer_tok_s", "forward_all_layers_tok_s", "train_one_layer_tok_s",
                    "train_all_layers_tok_s"):
            print(f"{key:>26}: {figures[key]:8.0f}")
    if args.transcoders is not None:
        transcoders = load_dictionary(args.transcoders)
    else:
        torch.manual_seed(0)
        transcoders = make_dictionary("transcoders", lm.d_model, per_layer * lm.n_layers, k=args.k,
                                      sites_in=[f"blocks.{x}.mlp_in" for x in every],
                                      sites_out=[f"blocks.{x}.mlp_out" for x in every], model=lm.name)
    replacement = Replacement(lm, transcoders)
    before = peak_mib()
    start = time.perf_counter()
    graph = trace(replacement, PROMPT, " *", max_feature_nodes=args.max_features, progress=False)
    figures.update(graph_seconds=time.perf_counter() - start, graph_positions=len(graph.meta["tokens"]),
                   graph_active_features=graph.scores["active_features"],
                   graph_expanded=graph.scores["expanded_features"], peak_rss_mib_before_graph=before,
                   peak_rss_mib=peak_mib(), completeness=graph.scores["completeness"],
                   replacement=graph.scores["replacement"], trained=args.transcoders is not None)
    print(f"graph of {figures['graph_positions']} tokens, {figures['graph_active_features']} active features, "
          f"{figures['graph_expanded']} expanded: {figures['graph_seconds']:.1f} s, peak RSS "
          f"{figures['peak_rss_mib']:.0f} MiB (before the graph {before:.0f} MiB)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
