"""The ``monosemantic`` command line: a thin shell over the library."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from .errors import MonosemanticError
from .locks import folder_lock

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Dictionary learning on language-model activations.")

DEFAULT_SITE = "blocks.6.resid_post"


def _friendly(command):
    """Print a user's error as one line and exit 2, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MonosemanticError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        except OSError as e:  # the disk or the filesystem refused: finished files stay as they were
            typer.secho(f"error: {_os_error(e)}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _os_error(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"could not write ({e.strerror}{where}): the disk is full or a file-size limit was reached; what "
                "was finished is kept; free some space (or write elsewhere) and rerun the same command to continue")
    return f"{e.strerror or type(e).__name__}{where}; check the path and its permissions"


def _check_out(out: Path, flag: str = "--out") -> Path:
    """``out`` if a folder can be made or written there; a one-line error before any work otherwise."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise MonosemanticError(f"{flag} {out} is a file; expected a folder (new or existing); choose another {flag}")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MonosemanticError(f"{flag} {out} is inside {existing}, which is a file; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MonosemanticError(f"{flag} {out}: {existing} is not writable; choose another {flag}")
    return out


def _check_device(device: str) -> None:
    from .models.loading import resolve_device

    resolve_device(device)  # a one-line error now, not after the data has loaded


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or smollm2-135m.")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, auto "
                                             "(under torchrun cuda = cuda:LOCAL_RANK).")]
DtypeOpt = Annotated[str, typer.Option(help="Model dtype (float32 is fastest on CPU).")]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")]


def _load(model: str, device: str, dtype: str, threads: int | None):
    from .models import load_model

    _quiet_transformers()
    return load_model(model, device=device, dtype=dtype, threads=threads)


@app.command()
@_friendly
def sites(
    model: Annotated[str, typer.Argument(help="Hub id, local folder, .gguf file, or smollm2-135m.")] = "smollm2-135m",
    modules: Annotated[bool, typer.Option(help="Also list raw module paths.")] = False,
    widths: Annotated[bool, typer.Option(help="Show each site's width (runs a tiny forward pass).")] = True,
):
    """List the activation sites of MODEL."""
    lm = _load(model, "cpu", "float32", None)
    typer.echo(f"{lm.name}: {type(lm.model).__name__}, {lm.n_layers} layers, d_model {lm.d_model}")
    width_of = lm.widths(lm.site_names()) if widths else {}
    for layer in range(lm.n_layers):
        names = [n for n in lm.site_names() if n.startswith(f"blocks.{layer}.")]
        shown = [f"{n} [{width_of[n]}]" if widths else n for n in names]
        typer.echo("  " + "  ".join(shown))
    if modules:
        typer.echo("raw module paths (output; add ':input' for the input):")
        for name, _ in lm.model.named_modules():
            if name:
                typer.echo(f"  {name}")


@app.command()
@_friendly
def harvest(
    out: Annotated[Path, typer.Option("--out", "-o", help="Store folder (created, or completed if interrupted).")],
    model: ModelOpt = "smollm2-135m",
    site: Annotated[list[str], typer.Option("--site", "-s",
                                            help="Site to store; repeat for several.")] = [DEFAULT_SITE],  # noqa: B006
    corpus: Annotated[str, typer.Option(help="stdlib, kjv (English prose), a .txt/.jsonl/.parquet file or folder, "
                                             "a HF dataset id, or several joined by + (e.g. stdlib+kjv).")
                      ] = "stdlib",
    text_column: Annotated[str, typer.Option(help="Text column of jsonl/parquet/HF datasets.")] = "text",
    split: Annotated[str, typer.Option(help="Split of a HF dataset.")] = "train",
    tokens: Annotated[int, typer.Option(help="Rows (tokens) to store.")] = 1_000_000,
    context: Annotated[int, typer.Option(help="Tokens per context window.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Context windows per forward pass.")] = 32,
    store_dtype: Annotated[str, typer.Option(help="dtype of stored activations.")] = "float32",
    prepend_bos: Annotated[bool, typer.Option(help="Start every window with the BOS token.")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = None,
):
    """Harvest activations of one or more sites to a sharded on-disk store (resumable)."""
    from .activations import harvest as run_harvest
    from .data import text_source
    from .models import parse_dtype

    _check_out(out)
    lm = _load(model, device, dtype, threads)
    source = text_source(corpus, text_column=text_column, split=split)
    store = run_harvest(lm, site, out, corpus=source, n_tokens=tokens, context_length=context,
                        batch_size=batch_size, dtype=parse_dtype(store_dtype), prepend_bos=prepend_bos)
    _print_store(store)


@app.command()
@_friendly
def store(
    path: Annotated[Path, typer.Argument(help="An activation store folder.")],
    verify: Annotated[bool, typer.Option(help="Check the whole store against its manifest: the shard list, rows, "
                                               "widths, dtypes and every shard's checksum.")] = False,
):
    """Describe an activation store (and verify it against its manifest)."""
    from .activations import ActivationStore

    opened = ActivationStore(path)
    if verify:
        opened.verify()
        typer.echo("verified: the shard list, rows, widths, dtypes and checksums all match the manifest")
    _print_store(opened)


@app.command()
@_friendly
def archs():
    """List the dictionary architectures: what each is, its sparsity option and its options' defaults."""
    from .dictionaries import ARCHITECTURES

    for name, cls in sorted(ARCHITECTURES.items()):
        if not cls.TRAINABLE:
            continue
        sparsity = cls.sparsity_option(cls.EXAMPLE)
        typer.echo(f"{name}: {cls.SUMMARY}")
        options = [f"{k} (required)" if k in cls.REQUIRED else f"{k}={v!r}" for k, v in cls.OPTIONS.items()]
        typer.echo(f"    sweeps vary: {sparsity}; options (None: chosen from the rest): {', '.join(options)}")


def _print_store(store) -> None:
    settings = store.manifest.settings
    typer.echo(f"store {store.path}: {len(store):,} rows, context {store.context_length}, "
               f"{len(store.manifest.shards)} shards, dtype {settings.dtype}")
    for site in store.sites:
        typer.echo(f"  {site}: width {store.width(site)}")


def _parse_options(pairs: list[str]) -> dict:
    """``["k=32", "weight_l1_by_decoder_norm=true"]`` -> ``{"k": 32, "weight_l1_by_decoder_norm": True}``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MonosemanticError(f"option '{pair}' is not of the form NAME=VALUE (e.g. k=32)")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _train_config(config_file: Path | None, overrides: dict):
    """A TrainConfig from an optional JSON file, with the flags the user gave taking precedence."""
    from .training import TrainConfig

    values = {}
    if config_file is not None:
        try:
            values = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MonosemanticError(f"could not read config file {config_file}: {e}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "total_tokens" not in values:
        raise MonosemanticError("how long to train is not set: pass --tokens N or total_tokens in --config")
    try:
        return TrainConfig.from_dict(values)
    except TypeError as e:
        raise MonosemanticError(f"bad training config: {e}") from None


def _numbers(text: str) -> list:
    try:
        return [json.loads(part) for part in text.split(",") if part.strip()]
    except json.JSONDecodeError:
        raise MonosemanticError(f"'{text}' is not a comma-separated list of numbers (e.g. 4,8,16)") from None


StoreOpt = Annotated[Path, typer.Option("--store", help="Activation store made by `monosemantic harvest`.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder (rerun the same command to resume).")]
ArchOpt = Annotated[str, typer.Option(help="Architecture; `monosemantic archs` lists them with their options.")]
SiteInOpt = Annotated[str | None, typer.Option("--site", help="Input site (default: the store's only site).")]
SiteOutOpt = Annotated[str | None, typer.Option("--site-out", help="Output site: makes a transcoder.")]
SitesOpt = Annotated[list[str] | None, typer.Option("--sites", help="Crosscoder sources; repeat.")]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", help="Architecture option NAME=VALUE; repeat.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="JSON file of TrainConfig fields.")]
TokensOpt = Annotated[int | None, typer.Option("--tokens", help="Training tokens.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Rows per step (default 4096).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default 4e-4).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for init and data order.")]


@app.command()
@_friendly
def train(store: StoreOpt, out: OutOpt, arch: ArchOpt = "topk", site: SiteInOpt = None, site_out: SiteOutOpt = None,
          sites: SitesOpt = None, expansion: Annotated[float, typer.Option(help="Dictionary size / width.")] = 8,
          option: OptionOpt = None, skip: Annotated[bool, typer.Option(help="Transcoder skip connection.")] = False,
          config: ConfigOpt = None, tokens: TokensOpt = None, batch_size: BatchOpt = None, lr: LrOpt = None,
          seed: SeedOpt = None, device: DeviceOpt = "cpu"):
    """Train one dictionary (SAE, transcoder or crosscoder) on an activation store."""
    from .training import train_from_store

    _check_out(out)
    _check_device(device)
    cfg = _train_config(config, {"total_tokens": tokens, "batch_size": batch_size, "lr": lr, "seed": seed,
                                 "device": device})
    result = train_from_store(store, out, arch=arch, config=cfg, site_in=site, site_out=site_out, sites=sites,
                              expansion=expansion, options=_parse_options(option or []), skip=skip)
    _print_training(result, out)


@app.command()
@_friendly
def sweep(store: StoreOpt, out: OutOpt, arch: ArchOpt = "topk",
          expansions: Annotated[str, typer.Option(help="Dictionary sizes as multiples of the width.")
                                ] = "1,2,4,8,16,32",
          sparsities: Annotated[str, typer.Option(help="Values of the sparsity option (`monosemantic archs`).")
                                ] = "16,32,64",
          sparsity_option: Annotated[str | None, typer.Option(help="Which option the sparsities set.")] = None,
          site: SiteInOpt = None, site_out: SiteOutOpt = None, option: OptionOpt = None, config: ConfigOpt = None,
          tokens: TokensOpt = None, batch_size: BatchOpt = None, lr: LrOpt = None, seed: SeedOpt = None,
          seeds: Annotated[str | None, typer.Option(help="Init seeds, e.g. 0,1,2: every point once per seed "
                                                            "(names ..._s1), same batches.")] = None,
          device: DeviceOpt = "cpu"):
    """Train a grid of sparsity x size (x init seeds) from one pass over an activation store."""
    from .training import sweep_from_store

    _check_out(out)
    _check_device(device)
    cfg = _train_config(config, {"total_tokens": tokens, "batch_size": batch_size, "lr": lr, "seed": seed,
                                 "device": device})
    result = sweep_from_store(store, out, arch=arch, config=cfg, expansions=_numbers(expansions),
                              sparsities=_numbers(sparsities), sparsity_option=sparsity_option, site_in=site,
                              site_out=site_out, options=_parse_options(option or []),
                              seeds=_numbers(seeds) if seeds else None)
    _print_training(result, out)


def _print_training(result, out: Path) -> None:
    typer.echo(f"trained {len(result.dictionaries)} dictionar{'y' if len(result.dictionaries) == 1 else 'ies'} "
               f"for {result.steps:,} steps ({result.tokens:,} tokens); saved under {out}")
    for name, metrics in result.metrics.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        typer.echo(f"  {name}: {shown}")


def _dictionary_and_model(dictionary: Path, model: str | None, device: str, threads: int | None, *, loaded=None):
    """(the dictionary at ``dictionary``, the model given or the one it records), loaded, on one device."""
    loaded = _load_dictionary(dictionary) if loaded is None else loaded
    spec = model or loaded.config.model
    if not spec:
        raise MonosemanticError(f"{dictionary} records no model; pass --model")
    lm = _load(spec, device, "float32", threads)
    return loaded.to(lm.device), lm


def _load_dictionary(path: Path):
    # Any format: native, SAELens, dictionary_learning, sparsify, openai (detected from the files).
    from .formats import load_dictionary

    return load_dictionary(path)


CorpusOpt = Annotated[str | None, typer.Option(
    help="Text to score: stdlib, kjv, a .txt/.jsonl/.parquet file or folder, a dataset id, or several joined by + "
         "(default: the corpus the dictionary trained on, held-out windows only).")]
AllowTrainedOpt = Annotated[bool, typer.Option(help="Allow scoring windows the dictionary trained on.")]


def _eval_corpus(dictionary: Path, corpus: str | None, context: int | None, allow_trained: bool,
                 text_column: str = "text"):
    """The text a command scores, by the one held-out rule (``evaluation.corpus``)."""
    from .evaluation import resolve_corpus, training_record

    return resolve_corpus(corpus, trained_on=training_record(dictionary), context_length=context,
                          text_column=text_column, allow_trained=allow_trained)


def _member_names(paths: list[Path]) -> list[str]:
    """Folder names, or parent/name where two folders share a name (seeds trained into separate runs)."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) < len(names):
        raise MonosemanticError(f"two of {', '.join(map(str, paths))} have the same name; pass each dictionary once")
    return names


@app.command()
@_friendly
def evaluate(
    dictionary: Annotated[Path, typer.Argument(help="A saved dictionary folder.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default: DICTIONARY/eval).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="Model (default: the one it was trained on).")] = None,
    corpus: CorpusOpt = None,
    text_column: Annotated[str, typer.Option(help="Field holding the text in .jsonl/.parquet corpora.")] = "text",
    labels: Annotated[Path | None, typer.Option(help="JSONL of {\"text\", \"label\"} or {\"text\", \"spans\": "
                                                        "[[start, end, label]]}: probe these labels on these texts.")
                      ] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated stages: reconstruction,splice,tasks,probing,clustering,"
                                            "absorption.")
                     ] = "reconstruction,splice,tasks,probing,clustering,absorption",
    probe_tasks: Annotated[str | None, typer.Option(help="Comma-separated contextual tasks or families (python, "
                                                            "text, sequence); default: all.")] = None,
    seeds: Annotated[list[Path] | None, typer.Option("--seed-of", help="Another seed of the same dictionary "
                                                                          "(repeat): intervals over seeds.")] = None,
    random_control: Annotated[list[Path] | None, typer.Option(help="A dictionary trained the same way on a randomly "
                                                                      "initialised model (repeat).")] = None,
    baselines: Annotated[str, typer.Option(help="Comma-separated baselines: identity (neurons), pca, ica, random.")] =
        "identity,pca,ica",
    windows: Annotated[int, typer.Option(help="Windows for reconstruction, spliced loss and clustering.")] = 64,
    probe_windows: Annotated[int, typer.Option(help="Windows for the contextual probing tasks.")] = 256,
    context: Annotated[int | None, typer.Option(help="Tokens per window (default: the training run's, else 128).")] =
        None,
    allow_trained: AllowTrainedOpt = False,
    min_tokens: Annotated[int, typer.Option(help="Fewest scored tokens accepted.")] = 2000,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
):
    """Evaluate a dictionary against neurons, PCA, ICA and controls; write a Markdown/HTML/JSON report."""
    from .evaluation import run_suite, training_record, write_report

    _check_out(out or dictionary / "eval")
    loaded, lm = _dictionary_and_model(dictionary, model, device, threads)
    if context is not None:
        lm.check_context(context)
    split = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    names = _member_names([dictionary, *(seeds or [])])
    others = {name: _load_dictionary(path).to(lm.device) for name, path in zip(names[1:], seeds or [])}
    controls = {}
    for name, path in zip(_member_names(random_control or []), random_control or []):
        control, control_lm = _dictionary_and_model(path, None, device, threads)
        controls[f"random-model:{name}" if len(random_control or []) > 1 else "random-model"] = (control, control_lm)
    result = run_suite(lm, loaded, name=names[0], seeds=others, random_control=controls, corpus=corpus,
                       text_column=text_column,
                       trained_on=training_record(dictionary), allow_trained=allow_trained, labels=labels,
                       task_names=split(probe_tasks) if probe_tasks else None, tasks=split(tasks),
                       baselines=split(baselines), n_windows=windows, probe_windows=probe_windows,
                       context_length=context, min_tokens=min_tokens)
    report = write_report(result, out or dictionary / "eval")
    typer.echo(f"corpus: {result.corpus.label} ({result.corpus.split} windows: {result.corpus.note})")
    if result.task_probing is not None:
        typer.echo(f"tasks scored: {len(result.task_probing.tasks)}, skipped: {len(result.task_probing.skipped)}")
        typer.echo(result.verdict())
    typer.echo(f"report: {report} (also report.html, report.json)")


@app.command()
@_friendly
def compare(
    a: Annotated[Path, typer.Argument(help="A saved dictionary (the smaller one, for stitching).")],
    b: Annotated[Path, typer.Argument(help="Another saved dictionary.")],
    threshold: Annotated[float, typer.Option(help="Cosine below which a latent of B counts as novel.")] = 0.7,
):
    """Mean max cosine similarity between two dictionaries, and which latents of B are novel."""
    from .evaluation import mmcs, stitch

    first, second = _load_dictionary(a), _load_dictionary(b)
    result = mmcs(first, second)
    typer.echo(f"MMCS {a.name} -> {b.name}: {result.a_to_b:.4f}   {b.name} -> {a.name}: {result.b_to_a:.4f}   "
               f"symmetric: {result.symmetric:.4f}   ({result.n_a} vs {result.n_b} latents)")
    stitched = stitch(first, second, threshold=threshold)
    typer.echo(f"latents of {b.name}: {stitched.n_novel} novel (max cosine < {threshold}), "
               f"{stitched.n_resplit} re-split latents of {a.name}")


@app.command()
@_friendly
def dashboard(
    features: Annotated[Path, typer.Argument(help="A feature folder (made by `monosemantic features`).")],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Dashboard folder (rebuilt in place for the same dictionary).")],
    dictionary: Annotated[Path | None, typer.Option(help="Check the features were made from this dictionary.")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Pages only for the N densest latents (default: all).")] = None,
):
    """Build a static HTML dashboard (searchable index, a page per latent) that opens from file://."""
    from .viz import build_dashboard

    _check_out(out)
    loaded = _load_dictionary(dictionary) if dictionary is not None else None
    site = build_dashboard(features, out, dictionary=loaded, max_pages=max_pages)
    typer.echo(f"dashboard: {(site / 'index.html').resolve().as_uri()}")


@app.command()
@_friendly
def serve(
    folder: Annotated[Path, typer.Argument(help="A feature folder, a dashboard folder or a graph folder.")],
    dictionary: Annotated[Path | None, typer.Option(help="The dictionary the folder shows: runs prompts live.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (default: the dictionary's).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8000,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
):
    """Browse a dashboard in a local web app and run new prompts through the dictionary live."""
    from .viz.server import build_app, make_server, recorded_site, server_url

    lm = loaded = None
    if dictionary is not None:
        loaded, lm = _dictionary_and_model(dictionary, model, device, threads)
    elif model is not None:
        raise MonosemanticError("--model runs prompts through a dictionary; pass --dictionary DIR as well")
    server = make_server(build_app(folder, dictionary=loaded, lm=lm, site=recorded_site(folder)), host, port)
    typer.echo(f"serving {folder} at {server_url(server)} (Ctrl-C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: listening on {host}: anyone who can reach this machine can browse and run prompts",
                    fg="yellow", err=True)
    if lm is None:
        typer.echo("prompts are off: pass --dictionary DIR to run them")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
@_friendly
def features(
    dictionary: Annotated[Path, typer.Argument(help="A saved dictionary folder.")],
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Feature folder (default: DICTIONARY/features).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="Model (default: the one it was trained on).")] = None,
    corpus: CorpusOpt = None,
    store: Annotated[Path | None, typer.Option(help="Take the held-out windows of this activation store "
                                                    "instead.")] = None,
    windows: Annotated[int, typer.Option(help="Held-out context windows to analyse.")] = 256,
    context: Annotated[int | None, typer.Option(help="Tokens per window (default: the training run's, else 128).")] =
        None,
    allow_trained: AllowTrainedOpt = False,
    site: Annotated[str | None, typer.Option(help="Site the dictionary reads (default: its config's).")] = None,
    top: Annotated[int, typer.Option(help="Top examples kept per latent.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
):
    """Analyse every latent (examples, histograms, logit effects, input tokens) into a feature folder."""
    from .evaluation import store_windows
    from .features import analyze_features

    target = _check_out(out or dictionary / "features")
    loaded, lm = _dictionary_and_model(dictionary, model, device, threads)
    with folder_lock(target):  # before the analysis, so that a second writer stops at once
        if store is not None:
            from .activations import ActivationStore

            windows_WS = store_windows(ActivationStore(store), n_windows=windows)
        else:
            if context is not None:
                lm.check_context(context)
            windows_WS = _eval_corpus(dictionary, corpus, context, allow_trained).windows(lm.tokenizer, windows)
        data = analyze_features(lm, loaded, windows_WS, site=site, n_top=top, batch_size=batch_size)
        data.save(target)
    typer.echo(f"features of {data.n_latents} latents over {data.n_tokens:,} tokens: {target}")


@app.command()
@_friendly
def prompt(
    dictionary: Annotated[Path, typer.Argument(help="A saved dictionary folder.")],
    text: Annotated[str, typer.Argument(help="The prompt.")],
    top: Annotated[int, typer.Option(help="Features (and neurons) shown.")] = 10,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the view as an HTML page here.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="Model (default: the one it was trained on).")] = None,
    site: Annotated[str | None, typer.Option(help="Site the dictionary reads (default: its config's).")] = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
):
    """Show a prompt's top features, token by token, beside the top raw neurons of the same site."""
    from .features import prompt_view, render_terminal
    from .viz import prompt_html

    loaded, lm = _dictionary_and_model(dictionary, model, device, threads)
    view = prompt_view(lm, loaded, text, top_n=top, site=site)
    render_terminal(view)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(prompt_html(view), encoding="utf-8")
        typer.echo(f"html: {html}")


@app.command()
@_friendly
def steer(
    dictionary: Annotated[Path, typer.Argument(help="A saved dictionary folder.")],
    text: Annotated[str, typer.Argument(help="The prompt to continue.")],
    latent: Annotated[int, typer.Option(help="The latent whose decoder direction is added.")],
    multiple: Annotated[float, typer.Option(help="Multiple of the decoder direction added at every position.")] = 8.0,
    tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 40,
    relative: Annotated[bool, typer.Option(help="Multiples are fractions of the site's typical activation norm.")] =
        False,
    curve: Annotated[str | None, typer.Option(help="Also measure promoted-token probability and fluency at these "
                                                   "multiples, e.g. 0,2,4,8,16.")] = None,
    curve_windows: Annotated[int, typer.Option(help="Held-out windows the curve is measured on.")] = 8,
    corpus: CorpusOpt = None,
    allow_trained: AllowTrainedOpt = False,
    plot: Annotated[Path | None, typer.Option(help="Write the curve as a PNG here.")] = None,
    sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="Model (default: the one it was trained on).")] = None,
    site: Annotated[str | None, typer.Option(help="Site to steer at (default: where the dictionary writes).")] = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
):
    """Continue a prompt with and without a latent's direction added; optionally measure a steering curve."""
    from .interventions import check_latent, steer_prompt

    loaded = _load_dictionary(dictionary)
    check_latent(loaded, latent)  # before the model loads: a wrong index should fail fast
    loaded, lm = _dictionary_and_model(dictionary, model, device, threads, loaded=loaded)
    windows_WS = _eval_corpus(dictionary, corpus, None, allow_trained).windows(lm.tokenizer, curve_windows) \
        if curve or relative else None
    result = steer_prompt(lm, loaded, latent, text, multiple, max_new_tokens=tokens, greedy=not sample, seed=seed,
                          site=site, relative=relative, curve=_numbers(curve) if curve else None,
                          windows_WS=windows_WS, plot=plot)
    unit = f" x typical norm {result.norm:.3g}" if result.norm else ""
    typer.echo(f"prompt: {text!r}\nclean:   {result.clean!r}\nsteered (latent {latent}, multiple {multiple:g}{unit}): "
               f"{result.steered!r}")
    if result.curve is not None:
        typer.echo(f"promoted tokens: {', '.join(repr(t) for t in result.curve.promoted_text)}")
        typer.echo(result.curve.table())
    if result.plot is not None:
        typer.echo(f"plot: {result.plot}")


@app.command()
@_friendly
def explain(
    features: Annotated[Path, typer.Argument(help="A feature folder (from `monosemantic features`).")],
    latents: Annotated[str, typer.Option(help="Which latents: 0-99, 3,17,42, top50 (most often firing) or random50.")] =
        "random50",
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                                                     "(default: offline explainer and simulator).")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name the endpoint serves.")] = None,
    llm_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the API key.")] = None,
    llm_timeout: Annotated[float, typer.Option(help="Seconds to wait for each LLM reply.")] = 60.0,
    compare: Annotated[list[str] | None, typer.Option(help="NAME=FOLDER: another feature folder (e.g. neurons, PCA) "
                                                          "to score the same way and compare; repeat. Names starting "
                                                          "untrained or random-model are controls: the judge is "
                                                          "checked against them.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for latent sampling and task shuffling.")] = 0,
    report: Annotated[Path | None, typer.Option(help="Write the full results as JSON here.")] = None,
):
    """Explain latents and score the explanations (detection, fuzzing); writes explanations.json."""
    from .autointerp import backends, explain_folders

    folders = {"dictionary": features}
    for pair in compare or []:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise MonosemanticError(f"--compare {pair!r} is not NAME=FOLDER (e.g. neurons=runs/neurons/features)")
        folders[name] = Path(folder)
    explainer, scorer = backends(llm_url, llm_model, key_env=llm_key_env, timeout=llm_timeout)
    run = explain_folders(folders, latents, explainer, scorer, seed=seed, trained="dictionary", report=report)
    for name, result in run.results.items():
        typer.echo(f"{name} ({run.folders[name]}):\n{result.table()}")
        if fallbacks := result.fallbacks():
            typer.secho(f"warning: {len(fallbacks)} explanations fell back to offline: {fallbacks[0].note}",
                        fg="yellow", err=True)
        typer.echo(f"explanations: {run.folders[name] / 'explanations.json'}")
    if run.comparison is not None:
        typer.echo(run.comparison.table())
    if run.judge is not None:
        typer.echo(run.judge.message)
    if run.report is not None:
        typer.echo(f"report: {run.report}")


@app.command()
@_friendly
def convert(
    src: Annotated[str, typer.Argument(help="A dictionary folder or .pt file in any supported format, or a Hugging "
                                            "Face repo id.")],
    dst: Annotated[Path, typer.Argument(help="Folder to write (must be new or empty unless --overwrite).")],
    to: Annotated[str, typer.Option("--to", help="saelens, dictionary_learning, sparsify or native.")] = "native",
    subfolder: Annotated[str | None, typer.Option(help="Sub-folder of SRC holding the dictionary "
                                                          "(e.g. a sparsify hookpoint).")] = None,
    source_format: Annotated[str | None, typer.Option("--format", help="SRC's format (default: detected).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty DST.")] = False,
):
    """Convert a dictionary between formats (SAELens, dictionary_learning, sparsify, openai, native)."""
    from .formats import load_dictionary, save_dictionary_as
    from .formats.load import WRITABLE

    if to not in WRITABLE:
        raise MonosemanticError(f"--to {to!r} is not a format that can be written; expected one of "
                                f"{', '.join(WRITABLE)}")
    _check_out(dst, "DST")
    dictionary = load_dictionary(src, subfolder, format=source_format)
    written = save_dictionary_as(dictionary, dst, to=to, overwrite=overwrite)
    config = dictionary.config
    # An autoencoder's site_out may be unset (None): it writes where it reads.
    sites = f", site {config.site_in}" + (f" -> {config.site_out}" if config.site_out not in (None, config.site_in)
                                          else "") if config.site_in else ""
    typer.echo(f"{config.arch} dictionary (d_in {config.d_in}, d_sae {config.d_sae}{sites}) written as {to} to "
               f"{written} ({', '.join(sorted(p.name for p in written.iterdir()))})")


@app.command()
@_friendly
def replace(
    out: OutOpt,
    model: ModelOpt = "smollm2-135m",
    arch: Annotated[str, typer.Option(help="transcoders (one per layer) or clt (cross-layer transcoder).")
                    ] = "transcoders",
    expansion: Annotated[float, typer.Option(help="Latents per layer / width.")] = 4,
    k: Annotated[int, typer.Option(help="Active latents per layer and token.")] = 16,
    skip: Annotated[bool, typer.Option(help="A linear skip path per layer.")] = False,
    layers: Annotated[str | None, typer.Option(help="Layers to cover, e.g. 0,1,2 (default: all).")] = None,
    corpus: Annotated[str, typer.Option(help="Training text (as for harvest).")] = "stdlib",
    context: Annotated[int, typer.Option(help="Tokens per context window.")] = 128,
    config: ConfigOpt = None, tokens: TokensOpt = None, batch_size: BatchOpt = None, lr: LrOpt = None,
    seed: SeedOpt = None,
    evaluate_windows: Annotated[int, typer.Option(help="Held-out windows for the replacement's loss (0: skip).")
                                ] = 32,
    device: DeviceOpt = "cpu", threads: ThreadsOpt = None,
):
    """Train transcoders at every layer from one live pass (a replacement model) and report its loss recovered."""
    from .circuits import Replacement, evaluate_replacement
    from .training import train_every_layer

    _check_out(out)
    _check_device(device)
    cfg = _train_config(config, {"total_tokens": tokens, "batch_size": batch_size, "lr": lr, "seed": seed,
                                 "device": device})
    lm = _load(model, device, "float32", threads)
    chosen = None if layers is None else [int(x) for x in _numbers(layers)]
    result = train_every_layer(lm, out, arch=arch, config=cfg, layers=chosen, corpus=corpus, context_length=context,
                               expansion=expansion, options={"k": k}, skip=skip)
    _print_training(result, out)
    if evaluate_windows:
        (name, transcoders), = result.dictionaries.items()
        replacement = Replacement(lm, transcoders.to(lm.device), require_all=False)
        scored = evaluate_replacement(replacement, corpus=corpus, n_windows=evaluate_windows, context_length=context)
        (out / name / "replacement.json").write_text(json.dumps(scored.to_dict(), indent=1))
        typer.echo(f"replacement model ({len(scored.layers)} layers spliced at once, {scored.n_tokens:,} held-out "
                   f"tokens): loss recovered {scored.loss_recovered:.3f}, KL {scored.kl_replaced:.3f} nats, CE "
                   f"{scored.ce_clean:.3f} -> {scored.ce_replaced:.3f} (all MLPs zeroed: {scored.ce_zero:.3f}); "
                   f"written to {out / name / 'replacement.json'}")


def _transcoders_folder(path: Path) -> Path:
    """A transcoders dictionary folder: ``path`` itself, or the one dictionary of a ``replace`` run folder."""
    if (path / "config.json").is_file() or (path / "config.yaml").is_file():
        return path
    found = sorted(p for p in path.iterdir() if (p / "config.json").is_file()) if path.is_dir() else []
    if len(found) != 1:
        raise MonosemanticError(f"{path} is not a transcoders folder (config.json) nor a `monosemantic replace` run "
                                f"with one; found {len(found)} dictionaries; pass the dictionary's folder")
    return found[0]


@app.command()
@_friendly
def trace(
    transcoders: Annotated[Path, typer.Argument(help="Transcoders at every layer: a `replace` run or its folder.")],
    prompt: Annotated[str, typer.Argument(help="The prompt, e.g. 'def add(a, b):\\n    return a'.")],
    target: Annotated[str, typer.Option(help="The next token to explain (one token, e.g. ' +').")],
    minus: Annotated[str | None, typer.Option(help="Explain target minus this token's logit.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Graph folder: graph.json, index.html, features/.")
                   ] = Path("graph"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (default: the one recorded).")] = None,
    max_features: Annotated[int, typer.Option(help="Features whose inputs are computed, most influential first.")
                            ] = 512,
    node_threshold: Annotated[float, typer.Option(help="Share of influence the kept features cover.")] = 0.8,
    edge_threshold: Annotated[float, typer.Option(help="Share of influence the kept edges cover.")] = 0.98,
    examples: Annotated[int, typer.Option(help="Held-out windows searched for the kept features' top examples "
                                               "(0: none).")] = 64,
    corpus: Annotated[str, typer.Option(help="Text the examples come from.")] = "stdlib",
    device: DeviceOpt = "cpu", threads: ThreadsOpt = None,
):
    """Attribution graph of TARGET after PROMPT through the replacement model, written to the folder OUT.

    In PROMPT, \\n stands for a newline.
    """
    from .circuits import Replacement, feature_examples
    from .circuits import trace as run_trace
    from .evaluation import corpus_windows
    from .viz import write_graph_site
    from .viz.graph_page import check_graph_folder

    check_graph_folder(_check_out(out))
    _check_device(device)
    folder = _transcoders_folder(transcoders.expanduser())
    loaded = _load_dictionary(folder)
    dictionary, lm = _dictionary_and_model(folder, model, device, threads, loaded=loaded)
    replacement = Replacement(lm, dictionary)
    graph = run_trace(replacement, prompt.replace("\\n", "\n"), target, minus=minus,
                      max_feature_nodes=max_features, node_threshold=node_threshold, edge_threshold=edge_threshold)
    features = [n for n in graph.nodes if n["kind"] == "feature"]
    found = None
    if examples and features:
        windows = corpus_windows(lm.tokenizer, corpus, n_windows=examples, context_length=128)
        found = feature_examples(replacement, [(n["layer"], n["latent"]) for n in features], windows)
    folder = write_graph_site(graph, out, found)
    sc = graph.scores
    typer.echo(f"graph of {graph.meta['target']['text']!r} after {len(graph.meta['tokens'])} tokens: "
               f"{len(features)} features, {len(graph.edges)} edges kept of {sc['active_features']:,} active "
               f"features ({sc['expanded_features']} expanded); completeness {sc['completeness']:.3f}, replacement "
               f"{sc['replacement']:.3f}; {graph.meta['seconds']:.1f} s")
    for node in sorted(features, key=lambda n: -n["influence"])[:10]:
        typer.echo(f"  {node['id']:>22}  influence {node['influence']:.3f}  activation {node['activation']:.3g}  "
                   f"on {node['text']!r}")
    typer.echo(f"wrote {folder / 'graph.json'}; `monosemantic serve {folder}` shows it")
    typer.echo(f"page: {(folder / 'index.html').resolve().as_uri()}")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes.")] = Path("runs/demo"),
    tokens: Annotated[int, typer.Option(help="Tokens to harvest.")] = 300_000,
    train_tokens: Annotated[int, typer.Option(help="Tokens each dictionary of the sweep trains on.")] = 1_000_000,
    quick: Annotated[bool, typer.Option(help="A much smaller run (about 5 minutes on 2 CPU cores) to check the "
                                             "set-up.")] = False,
    threads: ThreadsOpt = None,
):
    """The whole pipeline offline on the embedded defaults (SmolLM2-135M, the stdlib corpus): harvest, a top-k
    sweep with seeds and a random-model control, evaluation against neurons/PCA/ICA and the controls, feature
    analysis, autointerp with a judge check, and the dashboard."""
    from .demo import DemoSettings, headline_table, run_demo, verdict

    settings = DemoSettings(tokens=tokens, train_tokens=train_tokens)
    if quick:
        settings = DemoSettings(tokens=40_000, train_tokens=80_000, sparsities=(32,), expansions=(8,), eval_windows=24,
                                probe_windows=64, feature_windows=32, autointerp_latents="random20")
    _check_out(out)
    lm = _load("smollm2-135m", "cpu", "float32", threads)
    result = run_demo(out, settings, lm=lm, echo=typer.echo)
    typer.echo("")
    typer.echo(headline_table(result.rows))
    typer.echo("")
    typer.echo(verdict(result.suite, result.judge))
    typer.echo(f"summary:   {result.summary}")
    typer.echo(f"report:    {result.report}")
    typer.echo(f"dashboard: {result.dashboard.resolve().as_uri()}")


def main() -> None:
    # A user-facing warning is one line on the command line, not a path, a line number and source.
    warnings.formatwarning = lambda message, category, *_args, **_kw: f"warning: {message}\n"
    app()


if __name__ == "__main__":
    sys.exit(main())
