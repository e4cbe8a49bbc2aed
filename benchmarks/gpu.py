"""GPU readiness: the whole pipeline once on a CUDA device, with throughput and peak memory.

Harvests SmolLM2-135M's ``blocks.6.resid_post`` on the standard-library corpus (the embedded
defaults), checks the stored rows against a direct forward on the device (the harvest moves
windows through pinned host memory and copies activations back on a side stream; a race there
shows up as wrong rows), trains top-k, BatchTopK and ReLU dictionaries from the store, one at a
time, evaluates the top-k one (FVU on held-out rows, spliced loss), and, with two or more GPUs,
trains the top-k recipe again under torchrun over NCCL. Prints tokens/s of each stage, its peak
GPU memory and a description of the machine; any error ends the run with its traceback and a
non-zero exit status. Run by hand:

    python benchmarks/gpu.py                              # CUDA; well under 8 minutes on one H200
    python benchmarks/gpu.py --device cpu --quick         # the same code paths, small, on a CPU
    python benchmarks/gpu.py --json gpu.json              # also write the figures as JSON

Write the figures down with the machine and the date in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.activations import ActivationStore, harvest
from monosemantic.evaluation import evaluate_reconstruction, evaluate_splice, store_rows
from monosemantic.models import load_model
from monosemantic.training import TrainConfig, train_from_store

MODEL, SITE, CORPUS, CONTEXT = "smollm2-135m", "blocks.6.resid_post", "stdlib", 128
ARCHS = {"topk": {"k": 32}, "batchtopk": {"k": 32}, "relu": {}}
CHECKED_WINDOWS = 8  # windows whose stored rows are recomputed directly


@dataclass(frozen=True)
class Sizes:
    harvest_tokens: int
    harvest_batch: int  # windows per forward
    train_tokens: int
    train_batch: int
    expansion: int
    splice_windows: int
    splice_batch: int
    min_eval_rows: int


FULL = Sizes(harvest_tokens=2_000_000, harvest_batch=128, train_tokens=2_000_000, train_batch=4096, expansion=16,
             splice_windows=64, splice_batch=32, min_eval_rows=2000)
QUICK = Sizes(harvest_tokens=40_000, harvest_batch=16, train_tokens=32_768, train_batch=1024, expansion=4,
              splice_windows=8, splice_batch=4, min_eval_rows=500)


# ----- measuring ---------------------------------------------------------------------------------

class Stage:
    """Wall time and peak GPU memory of one stage (``with Stage(device) as s: ...``)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.peak_bytes = device, math.nan, None

    def __enter__(self) -> Stage:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued GPU work belongs to this stage
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        self.seconds = time.perf_counter() - self.start

    def figures(self, tokens: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 2)}
        if tokens is not None:
            out.update(tokens=tokens, tokens_per_s=round(tokens / self.seconds))
        out["peak_gpu_gib"] = None if self.peak_bytes is None else round(self.peak_bytes / 2**30, 3)
        return out


def show(name: str, figures: dict) -> None:
    parts = [f"{figures['seconds']:.1f} s"]
    if "tokens_per_s" in figures:
        parts.append(f"{figures['tokens']:,} tokens, {figures['tokens_per_s']:,} tok/s")
    if figures["peak_gpu_gib"] is not None:
        parts.append(f"peak GPU memory {figures['peak_gpu_gib']:.2f} GiB")
    extra = {k: v for k, v in figures.items() if k not in ("seconds", "tokens", "tokens_per_s", "peak_gpu_gib")}
    parts += [f"{k} {v}" for k, v in extra.items()]
    print(f"{name:<28} " + "; ".join(parts), flush=True)


def machine(device: torch.device) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cpus": os.cpu_count(), "device": str(device), "commit": _commit()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check(condition: bool, message: str) -> None:
    # A benchmark that prints figures from a broken run is worse than none: stop with the reason.
    if not condition:
        raise RuntimeError(message)


# ----- stages ------------------------------------------------------------------------------------

def harvest_stage(lm, folder: Path, sizes: Sizes, device: torch.device) -> tuple[ActivationStore, dict]:
    with Stage(device) as stage:
        store = harvest(lm, [SITE], folder, corpus=CORPUS, n_tokens=sizes.harvest_tokens, context_length=CONTEXT,
                        batch_size=sizes.harvest_batch, progress=False)
    return store, stage.figures(sizes.harvest_tokens)


def check_stored_rows(lm, store: ActivationStore) -> dict:
    """The first windows' stored rows against the same windows run directly on the device."""
    windows_WS = store.read_shard(0)["window_tokens"][:CHECKED_WINDOWS].long()
    _, position_N, window_N = store.tokens()
    n = int((window_N < CHECKED_WINDOWS).sum())
    check(bool((window_N[:n] < CHECKED_WINDOWS).all()), "store rows are not in window order")
    with torch.inference_mode():
        direct_WSD = lm.capture(windows_WS, [SITE])[SITE].float().cpu()
    expected_ND = direct_WSD[window_N[:n], position_N[:n].long()]
    stored_ND = store.rows(SITE, 0, n).float()
    error = float((stored_ND - expected_ND).norm() / expected_ND.norm())
    # Batch composition changes kernel choices, so bitwise equality is not expected; a copy race
    # gives errors of order 1.
    check(error < 1e-3, f"stored rows differ from a direct forward: relative error {error:.2e}")
    return {"rows_checked": n, "relative_error": f"{error:.1e}"}


def train_stage(store: ActivationStore, folder: Path, arch: str, sizes: Sizes, device: torch.device):
    config = TrainConfig(total_tokens=sizes.train_tokens, batch_size=sizes.train_batch, device=str(device),
                         checkpoint_every=None, log_every=max(1, sizes.train_tokens // sizes.train_batch // 4))
    with Stage(device) as stage:
        result = train_from_store(store, folder, arch=arch, config=config, site_in=SITE, expansion=sizes.expansion,
                                  options=ARCHS[arch], progress=False)
    (name, dictionary), = result.dictionaries.items()
    last = result.metrics[name]
    check(math.isfinite(last["loss"]), f"{arch}: training loss {last['loss']}")
    figures = stage.figures(result.tokens)
    figures.update(fvu=round(last["fvu"], 4), l0=round(last["l0"], 1), dead=round(last["dead_fraction"], 3))
    return dictionary, figures


def evaluate_stage(lm, dictionary, store: ActivationStore, sizes: Sizes, device: torch.device) -> dict:
    with Stage(device) as stage:
        recon = evaluate_reconstruction(dictionary, store_rows(store, dictionary), min_tokens=sizes.min_eval_rows)
        splice = evaluate_splice(lm, dictionary, corpus=CORPUS, n_windows=sizes.splice_windows,
                                 context_length=CONTEXT, batch_size=sizes.splice_batch)
    check(math.isfinite(recon.fvu) and math.isfinite(splice.loss_recovered),
          f"evaluation gave fvu {recon.fvu}, loss recovered {splice.loss_recovered}")
    figures = stage.figures()
    figures.update(heldout_rows=recon.n_tokens, fvu=round(recon.fvu, 4), l0=round(recon.l0, 1),
                   ce_clean=round(splice.ce_clean, 4), ce_spliced=round(splice.ce_spliced, 4),
                   loss_recovered=round(splice.loss_recovered, 4))
    return figures


# ----- several processes (NCCL on GPUs) ------------------------------------------------------------

def ranks_wanted(args, device: torch.device) -> tuple[int, str]:
    """(processes for the torchrun stage, or 0; the reason when 0)."""
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if args.ranks is not None and args.ranks > gpus:
            raise SystemExit(f"--ranks {args.ranks} needs as many GPUs; this machine has {gpus}")
        ranks = args.ranks if args.ranks is not None else min(gpus, 8)
        return (ranks, "") if ranks >= 2 else (0, f"skipped: {gpus} GPU (NCCL needs two or more)")
    if args.ranks:
        return args.ranks, ""  # gloo on CPU: checks this script's torchrun path without GPUs
    return 0, "skipped: no GPU (pass --ranks 2 to run the same path over gloo on CPU)"


def torchrun_stage(store: ActivationStore, folder: Path, ranks: int, args, sizes: Sizes, device: torch.device) -> dict:
    result = folder / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               str(Path(__file__).resolve()), "--worker", "--store", str(store.path), "--out", str(folder),
               "--device", device.type, "--result", str(result)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, env=env)
    check(done.returncode == 0, f"torchrun with {ranks} processes exited with status {done.returncode}")
    figures = json.loads(result.read_text())
    figures["backend"] = "nccl" if device.type == "cuda" else "gloo"
    figures["processes"] = ranks
    return figures


def worker(args) -> None:
    """One torchrun process: the top-k recipe data-parallel (the Trainer joins the process group)."""
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    store = ActivationStore(args.store)
    _, figures = train_stage(store, Path(args.out) / "train", "topk", sizes, device)
    if int(os.environ["RANK"]) == 0:
        Path(args.result).write_text(json.dumps(figures))


# ----- main --------------------------------------------------------------------------------------

def run(args) -> dict:
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    if device.type == "cuda":
        check(torch.cuda.is_available(), "--device cuda but torch sees no CUDA device (is this a CPU build of torch?)")
        # An explicit index: torch.cuda.set_device refuses a bare "cuda".
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
    report = {"machine": machine(device), "sizes": sizes.__dict__, "stages": {}}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()), flush=True)
    stages = report["stages"]

    def record(name: str, figures: dict) -> None:
        stages[name] = figures
        show(name, figures)

    if args.out:
        # A finished store or run in the folder would be resumed at once, and its rates be nonsense.
        check(not Path(args.out).exists() or not any(Path(args.out).iterdir()), f"--out {args.out} is not empty")
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="monosemantic-gpu-"))
    try:
        with Stage(device) as stage:
            lm = load_model(MODEL, device=device)
        record("load model", stage.figures())
        store, figures = harvest_stage(lm, folder / "store", sizes, device)
        record("harvest", {**figures, **check_stored_rows(lm, store)})
        trained = {}
        for arch in ARCHS:
            trained[arch], figures = train_stage(store, folder / arch, arch, sizes, device)
            record(f"train {arch}", figures)
        record("evaluate topk", evaluate_stage(lm, trained["topk"], store, sizes, device))
        ranks, reason = ranks_wanted(args, device)
        if ranks:
            record(f"train topk, {ranks} processes", torchrun_stage(store, folder / "torchrun", ranks, args, sizes,
                                                                    device))
        else:
            stages["torchrun"] = reason
            print(f"{'torchrun (nccl)':<28} {reason}", flush=True)
    finally:
        if not args.out:
            shutil.rmtree(folder, ignore_errors=True)
    if device.type == "cuda":
        report["peak_gpu_gib"] = max(s["peak_gpu_gib"] for s in stages.values() if isinstance(s, dict))
        print(f"peak GPU memory over all stages: {report['peak_gpu_gib']:.2f} GiB")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check of the code paths, not figures")
    parser.add_argument("--ranks", type=int, default=None,
                        help="processes for the torchrun stage (default: every GPU, skipped below two)")
    parser.add_argument("--out", default=None, help="keep the store and dictionaries here (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if torch.device(args.device).type == "cpu" and not args.quick:
        parser.error("--device cpu runs only with --quick (the full sizes are for a GPU)")
    start = time.perf_counter()
    report = run(args)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    print(f"total {report['total_seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
