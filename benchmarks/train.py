"""Training-step throughput against the machine's GEMM rate, on SmolLM2 layer-6 activations.

One run measures, on the same data and threads:

1. the fp32 GEMM rate for ``[N, D] x [D, F]`` (output preallocated; median of repeats), and
   again next to every timed step: each step is held against the GEMM timed beside it;
2. tokens/s of full training steps (loss, backward, decoder-gradient projection, Adam step,
   decoder normalisation), median of repeats, as a fraction of the GEMM bound, for
   - relu, dense (early training: about half the codes active): bound = 5 GEMMs per step;
   - relu, sparse (late training simulated by lowering b_enc until L0 is about 45);
     its gradients are checked against the dense path on the same batch;
   - jumprelu, sparse (the same simulated late training, default thresholds), checked likewise;
   - topk k=32: bound = 1 GEMM per step (everything else touches only the k selected latents);
   each both in a plain step loop (the dictionary's own cost) and inside ``training.Trainer``
   (timed between the batches it asks for, so its per-step bookkeeping is included);
3. with ``--quality``: FVU, L0 and dead fraction after ``--quality-tokens`` for relu and topk;
4. with ``--sweep``: a 3x3 topk sweep in one Trainer vs the same 9 dictionaries trained one by one.

Run by hand on a quiet machine (the CPU share column shows whether it was), e.g.:

    python benchmarks/train.py --threads 2 --compare-plain --quality --sweep

Activations are harvested once (~40 s) into ``--cache`` and reused; ``--synthetic`` uses
Gaussian rows instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from monosemantic.dictionaries import StepInput, make_dictionary

SITE = "blocks.6.resid_post"
D_IN = 576


# ----- data --------------------------------------------------------------------------------------

def load_rows(args) -> tuple[torch.Tensor, str, Path | None]:
    """Activation rows normalised as the trainer does (mean norm sqrt(D)), what they are, their store."""
    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        return torch.randn(args.rows, D_IN, generator=g), "Gaussian rows (synthetic)", None
    from monosemantic.activations import ActivationStore, harvest
    from monosemantic.errors import MonosemanticError
    from monosemantic.models import load_model

    folder = Path(args.cache).expanduser() / f"smollm2-135m-{SITE}-stdlib-{args.rows}"
    try:
        store = ActivationStore(folder)  # harvested by an earlier run
        if len(store) != args.rows:
            raise ValueError("incomplete")
    except (MonosemanticError, OSError, ValueError):
        lm = load_model("smollm2-135m", threads=args.threads)
        store = harvest(lm, [SITE], folder, corpus="stdlib", n_tokens=args.rows, progress=False)
    x = store.rows(SITE).float()
    x *= D_IN ** 0.5 / x.norm(dim=1).mean()
    return x, f"SmolLM2-135M {SITE}, stdlib corpus, {x.shape[0]:,} rows", folder


class Batches:
    """Random batches of the rows, drawn ahead of time so drawing costs nothing while timing."""

    def __init__(self, x: torch.Tensor, n: int, count: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.batches = [x[torch.randint(0, x.shape[0], (n,), generator=g)] for _ in range(count)]
        self.i = 0

    def next(self) -> torch.Tensor:
        self.i += 1
        return self.batches[self.i % len(self.batches)]


# ----- timing ------------------------------------------------------------------------------------

class CpuShare:
    """This process's CPU time over wall time while in the block: about the thread count on a
    quiet machine, less when other processes took cores (then the timings are suspect)."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.wall
        self.share = (time.process_time() - self.cpu) / self.seconds


class Gemm:
    """One fp32 ``[N, D] x [D, F]`` product into a preallocated output, the unit of the bounds."""

    def __init__(self, n: int, d: int, f: int):
        g = torch.Generator().manual_seed(0)
        self.a, self.b, self.out = torch.randn(n, d, generator=g), torch.randn(d, f, generator=g), torch.empty(n, f)
        self.flop = 2 * n * d * f

    def seconds(self) -> float:
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        return time.perf_counter() - start


def report_gemm(gemm: Gemm, repeats: int) -> float:
    with CpuShare() as cpu:
        seconds = statistics.median(gemm.seconds() for _ in range(repeats + 1))
    print(f"GEMM [N, D] x [D, F]: {seconds * 1e3:.1f} ms = {gemm.flop / seconds / 1e9:.0f} GFLOP/s "
          f"(median of {repeats + 1}; CPU share {cpu.share:.2f})")
    return seconds


def summary(step_times: list[float], gemm_times: list[float], args, **extra) -> dict:
    """Rates from paired timings: each step is held against the GEMM timed next to it, because
    this VM's GEMM rate drifts by up to 40% within minutes (a shared host) even at full CPU share."""
    return {"tok/s": args.batch / statistics.median(step_times), "runs": [args.batch / t for t in step_times],
            "gemm": statistics.median(gemm_times), "ratios": [g / t for g, t in zip(gemm_times, step_times)],
            **extra}


def step_fn(dictionary, optimizer, batches: Batches, sparsity_scale: float = 1.0):
    """One full training step, exactly the Trainer's sequence."""
    def step():
        out = dictionary.loss(batches.next(), None, StepInput(sparsity_scale=sparsity_scale, dense_codes=False))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        dictionary.project_decoder_grad_()
        optimizer.step()
        dictionary.normalize_decoder_()
        # Kept for an L0 read-out after timing (the next step frees it).
        step.l0 = float(out.active_count()) / out.recon.shape[0]
    return step


def build(arch: str, f: int, seed: int = 0, **options):
    torch.manual_seed(seed)
    return make_dictionary(arch, D_IN, f, **options)


def adam(dictionary, args):
    """The Trainer's optimizer: fused Adam over contiguous aliases of transposed parameters."""
    from monosemantic.kernels.adam import Adam
    return Adam(dictionary.parameters(), lr=1e-4, fused=True)


# ----- the cases ---------------------------------------------------------------------------------

RELU_OPTIONS = {"weight_l1_by_decoder_norm": True, "l1_coeff": 5.0}


def lower_b_enc_(dictionary, x: torch.Tensor, l0: float) -> None:
    """Shift b_enc so that about ``l0`` codes per row are active on ``x`` (simulated late training)."""
    with torch.no_grad():
        pre = dictionary.pre_acts(x[:512]).flatten()
        cut = pre.kthvalue(pre.numel() - int(l0 * 512)).values
        dictionary.b_enc -= cut


def sparse_grad_check(dictionary, x: torch.Tensor) -> float:
    """Largest relative difference between sparse-path and dense-path parameter gradients."""
    grads = []
    for density in (1.0, 0.0):
        dictionary.max_sparse_density = density
        dictionary.zero_grad(set_to_none=True)
        dictionary.loss(x).loss.backward()
        grads.append({n: p.grad.clone() for n, p in dictionary.named_parameters()})
    dictionary.max_sparse_density = type(dictionary).max_sparse_density
    dictionary.zero_grad(set_to_none=True)
    return max(float((grads[0][n] - grads[1][n]).abs().max() / grads[1][n].abs().max()) for n in grads[1])


def raw_cases(x: torch.Tensor, gemm: Gemm, args) -> dict[str, dict]:
    """tokens/s of each case in a plain step loop."""
    n, f = args.batch, args.expansion * D_IN
    results = {}
    cases = {
        "relu dense": (build("relu", f, **RELU_OPTIONS), None),
        "relu sparse": (build("relu", f, **RELU_OPTIONS), args.late_l0),
        "jumprelu sparse": (build("jumprelu", f), args.late_l0),
        "topk k=32": (build("topk", f, k=32), None),
        "batchtopk k=32": (build("batchtopk", f, k=32), None),
        "matryoshka k=32": (build("matryoshka", f, k=32), None),
    }
    if args.cases:
        cases = {name: case for name, case in cases.items() if name in args.cases.split(",")}
    if args.compare_plain:
        for name, (dictionary, late_l0) in list(cases.items()):
            plain = build(dictionary.arch, f, **dictionary.config.options)
            plain.fast_path = False
            cases[f"{name}, plain autograd"] = (plain, late_l0)
    for name, (dictionary, late_l0) in cases.items():
        batches = Batches(x, n)
        extra = {}
        if late_l0 is not None:
            lower_b_enc_(dictionary, batches.batches[0], late_l0)
            if dictionary.fast_path:
                extra["grad max rel diff (sparse vs dense)"] = sparse_grad_check(dictionary, batches.batches[0])
        results[name] = {**timed_steps(dictionary, batches, gemm, args), **extra}
    return results


def timed_steps(dictionary, batches: Batches, gemm: Gemm, args) -> dict:
    step = step_fn(dictionary, adam(dictionary, args), batches)
    for _ in range(2):
        step()  # warm-up
    step_times, gemm_times = [], []
    with CpuShare() as cpu:
        for _ in range(args.repeats):
            gemm_times.append(gemm.seconds())
            start = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - start)
    l0 = step.l0
    if args.profile:
        profile(step, dictionary.arch)
    return summary(step_times, gemm_times, args, l0=l0, cpu=cpu.share)


def profile(step, name: str) -> None:
    from torch.profiler import profile as torch_profile
    with torch_profile() as prof:
        step()
    print(f"\n--- profile: {name}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


# ----- inside the Trainer --------------------------------------------------------------------------

class TimedSource:
    """A TensorSource that times the Trainer's steps: the gaps between its batch requests. Before
    handing out each batch it times one GEMM, outside the gap, to pair with that step."""

    def __init__(self, x: torch.Tensor, gemm: Gemm):
        from monosemantic.training import TensorSource
        self.inner, self.gemm = TensorSource(x), gemm
        self.layout = self.inner.layout
        self.step_times: list[float] = []
        self.gemm_times: list[float] = []

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0):
        inner = iter(self.inner.batches(batch_size, seed=seed, start_step=start_step))
        handed_out = None
        while True:
            # Resumed by the Trainer's request: the step ends here, before the source draws a batch.
            if handed_out is not None:
                self.step_times.append(time.perf_counter() - handed_out)
            batch = next(inner, None)
            if batch is None:
                return
            self.gemm_times.append(self.gemm.seconds())
            handed_out = time.perf_counter()
            yield batch


def trainer_case(dictionary, x: torch.Tensor, gemm: Gemm, args) -> dict:
    """tokens/s of ``dictionary`` in ``Trainer.fit``, from its last ``repeats`` steps."""
    from monosemantic.training import TrainConfig, Trainer
    steps = args.repeats + 3
    config = TrainConfig(total_tokens=steps * args.batch, batch_size=args.batch, lr=1e-4, log_every=10_000,
                         checkpoint_every=None)
    source = TimedSource(x, gemm)
    with CpuShare() as cpu:
        Trainer({"d": dictionary}, config).fit(source, progress=False)
    # Step i ran between batches i and i + 1, right after the GEMM timed before batch i. The
    # last request is never answered (the loop ends), so only full steps are paired.
    pairs = list(zip(source.step_times, source.gemm_times))[-args.repeats:]
    return summary([t for t, _ in pairs], [g for _, g in pairs], args, cpu=cpu.share)


def trainer_cases(x: torch.Tensor, gemm: Gemm, args) -> dict[str, dict]:
    f = args.expansion * D_IN
    late = build("relu", f, **RELU_OPTIONS)
    late.init_b_dec_(x[:8192])  # as the Trainer will (on its own first rows), so that L0 stays near late_l0
    lower_b_enc_(late, x[:4096], args.late_l0)
    cases = {"relu dense": build("relu", f, **RELU_OPTIONS), "relu sparse": late, "topk k=32": build("topk", f, k=32)}
    return {name: trainer_case(dictionary, x, gemm, args) for name, dictionary in cases.items()}


def quality(x: torch.Tensor, args) -> dict[str, dict]:
    """FVU, L0 and dead fraction (Trainer metrics of the last step) after ``--quality-tokens`` rows."""
    from monosemantic.training import TensorSource, TrainConfig, Trainer
    f = args.expansion * D_IN
    config = TrainConfig(total_tokens=args.quality_tokens, batch_size=args.batch, log_every=10_000,
                         checkpoint_every=None)
    results = {}
    for name, dictionary in {"relu": build("relu", f, **RELU_OPTIONS), "topk k=32": build("topk", f, k=32)}.items():
        start = time.perf_counter()
        with CpuShare() as cpu:
            metrics = Trainer({"d": dictionary}, config).fit(TensorSource(x), progress=False).metrics["d"]
        results[name] = {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")}
        results[name].update(seconds=time.perf_counter() - start, cpu_share=cpu.share)
    return results


def sweep_vs_separate(x: torch.Tensor, store: Path | None, args) -> dict[str, CpuShare]:
    """Wall time of a 3x3 topk sweep (k x expansion) in one Trainer vs the 9 trained one at a time.

    Batches come from the activation store (shuffled shard reads), as in real use, so that the
    separate runs pay for reading the data nine times; in-memory rows with ``--synthetic``.
    """
    from monosemantic.training import StoreSource, TensorSource, TrainConfig, Trainer, build_dictionaries, sweep_specs
    config = TrainConfig(total_tokens=args.sweep_steps * args.batch, batch_size=args.batch, log_every=10_000,
                         checkpoint_every=None)
    specs = sweep_specs("topk", expansions=[2, 4, 8], sparsities=[16, 32, 64])
    source = TensorSource(x) if store is None else StoreSource(store, SITE)
    with CpuShare() as together:
        Trainer(build_dictionaries(specs, D_IN), config).fit(source, progress=False)
    with CpuShare() as apart:
        for name, dictionary in build_dictionaries(specs, D_IN).items():
            Trainer({name: dictionary}, config).fit(source, progress=False)
    return {"sweep (one Trainer)": together, "9 separate runs": apart}


# ----- report --------------------------------------------------------------------------------------

BOUND_GEMMS = {"relu dense": 5, "relu sparse": 5, "jumprelu sparse": 5, "topk k=32": 1, "batchtopk k=32": 1,
               "matryoshka k=32": 1}


def print_table(title: str, results: dict[str, dict], n: int) -> None:
    """Fraction of bound: median over steps of (bound GEMMs x the paired GEMM's time) / step time."""
    print(f"\n{title}\n")
    print("| case | tok/s (median) | runs | L0 | CPU share | GEMM ms (paired, median) | bound tok/s "
          "| fraction of bound |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        gemms = BOUND_GEMMS[name.split(",")[0]]
        fraction = gemms * statistics.median(r["ratios"])
        runs = " / ".join(f"{v:,.0f}" for v in r["runs"])
        l0 = f"{r['l0']:.1f}" if "l0" in r else ""
        print(f"| {name} | {r['tok/s']:,.0f} | {runs} | {l0} | {r['cpu']:.2f} | {r['gemm'] * 1e3:.1f} | "
              f"{n / (gemms * r['gemm']):,.0f} ({gemms} GEMM{'s' if gemms > 1 else ''}) | {fraction:.2f} |")
    for name, r in results.items():
        for key, value in r.items():
            if key not in ("tok/s", "runs", "l0", "cpu", "gemm", "ratios"):
                print(f"- {name}: {key} = {value:.2e}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads; "
            f"load average {load} (1/5/15 min) at start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rows", type=int, default=200_000, help="activation rows to harvest and train on")
    parser.add_argument("--late-l0", type=float, default=45.0, help="L0 of the simulated late-training relu")
    parser.add_argument("--cache", default="~/.cache/monosemantic/benchmarks")
    parser.add_argument("--synthetic", action="store_true", help="Gaussian rows instead of SmolLM2 activations")
    parser.add_argument("--no-trainer", action="store_true", help="skip the Trainer measurements")
    parser.add_argument("--compare-plain", action="store_true", help="also time each case with fast_path=False")
    parser.add_argument("--quality", action="store_true", help="FVU / L0 / dead after --quality-tokens")
    parser.add_argument("--quality-tokens", type=int, default=1_000_000)
    parser.add_argument("--sweep", action="store_true", help="3x3 sweep vs 9 separate runs")
    parser.add_argument("--sweep-steps", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of one step per case")
    parser.add_argument("--cases", default=None, help="comma-separated plain-loop cases to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"# benchmarks/train.py, {time.strftime('%Y-%m-%d %H:%M')}\n\n{machine()}")
    x, data, store = load_rows(args)
    n, f = args.batch, args.expansion * D_IN
    print(f"data: {data}\nshapes: N={n}, D={D_IN}, F={f}, float32")
    gemm = Gemm(n, D_IN, f)
    report_gemm(gemm, args.repeats)
    print_table("plain step loop (dictionary.loss + backward + project + Adam + normalize)",
                raw_cases(x, gemm, args), n)
    if not args.no_trainer:
        print_table("inside training.Trainer (per-step gaps between batch requests)", trainer_cases(x, gemm, args), n)
    if args.quality:
        print(f"\nafter {args.quality_tokens:,} tokens (Trainer defaults, lr 4e-4):")
        for name, r in quality(x, args).items():
            print(f"- {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    if args.sweep:
        print(f"\n3x3 topk sweep (k 16/32/64 x expansion 2/4/8), {args.sweep_steps} steps of {n}:")
        for name, cpu in sweep_vs_separate(x, store, args).items():
            print(f"- {name}: {cpu.seconds:.1f} s (CPU share {cpu.share:.2f})")
    print("\nagain at the end:")
    report_gemm(gemm, args.repeats)
    print(f"load average at end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
