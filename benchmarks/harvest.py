"""Harvest throughput on SmolLM2-135M layer 6: full forward vs forward-to-layer vs harvest to disk.

All three run in one process on the same token windows (the stdlib corpus, context 128,
batch 32). Rates are positions processed per second (windows x context), medians over
repeats. Run by hand:

    python benchmarks/harvest.py [--windows 512] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from itertools import islice

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.activations import harvest
from monosemantic.data import text_source, token_windows
from monosemantic.models import load_model

SITE = "blocks.6.resid_post"
CONTEXT, BATCH = 128, 32


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=512, help="windows for forward-to-layer and harvest")
    parser.add_argument("--full-windows", type=int, default=128, help="windows for the (slow) full forward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    lm = load_model("smollm2-135m", threads=args.threads)
    windows = torch.stack(list(islice(token_windows(text_source("stdlib"), lm.tokenizer, CONTEXT), args.windows)))
    batches = windows.split(BATCH)
    # Rows the harvest stores from those windows (position 0 and special tokens are skipped).
    special = torch.tensor(sorted(lm.tokenizer.all_special_ids))
    n_rows = int((~torch.isin(windows[:, 1:], special)).sum())

    def full_forward():
        with torch.no_grad():
            for batch in batches[: args.full_windows // BATCH]:
                lm.model(input_ids=batch, use_cache=False)

    def to_layer():
        for batch in batches:
            lm.capture(batch, [SITE])

    def to_disk():
        folder = tempfile.mkdtemp(prefix="bench-harvest-")
        try:
            harvest(lm, [SITE], folder, corpus="stdlib", n_tokens=n_rows, context_length=CONTEXT,
                    batch_size=BATCH, progress=False)
        finally:
            shutil.rmtree(folder)

    to_layer()  # warm-up: first calls pay for allocator and kernel selection
    rates = {"full forward": [], "forward to layer 6": [], "harvest to disk": []}
    for _ in range(args.repeats):
        rates["full forward"].append(args.full_windows * CONTEXT / timed(full_forward))
        rates["forward to layer 6"].append(args.windows * CONTEXT / timed(to_layer))
        rates["harvest to disk"].append(args.windows * CONTEXT / timed(to_disk))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.windows} windows x {CONTEXT} tokens, batch {BATCH}, {args.repeats} repeats, medians")
    base = statistics.median(rates["forward to layer 6"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:20s} {median:9,.0f} tok/s   x{median / base:.3f} of forward-to-layer   "
              f"(runs: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
