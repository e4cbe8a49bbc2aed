"""One call from data to trained dictionaries: what ``monosemantic train`` and ``sweep`` run.

Each function builds the source and the dictionaries (widths and sites from the data, init
seeded by ``config.seed``) and trains them with one :class:`~.trainer.Trainer`. Rerunning
the same call with the same ``out_dir`` resumes an interrupted run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..activations import ActivationStore
from ..data import CorpusSpec
from ..dictionaries import make_dictionary
from ..errors import MonosemanticError
from .config import TrainConfig
from .live import LiveSource
from .sources import StoreSource
from .sweep import DictionarySpec, build_dictionaries, check_expansion, dictionary_name, sweep
from .trainer import Trainer, TrainResult


def _store_setup(source: StoreSource, options: Mapping | None) -> tuple[dict, dict]:
    """(options completed for the source's sites, what dictionaries record about the sites)."""
    model = source.store.manifest.settings.model
    recorded = {"model": model.get("name") if isinstance(model, dict) else None}
    options = dict(options or {})
    if source.layout.n_sites > 1:
        # A multi-site dictionary records its sites in its options; site_in/site_out are for one site.
        return {**options, "n_sources": len(source.input_sites), "sites": list(source.input_sites)}, recorded
    recorded.update(site_in=source.input_sites[0], site_out=source.target_site)
    return options, recorded


def train_from_store(store: str | Path | ActivationStore, out_dir: str | Path, *, arch: str, config: TrainConfig,
                     site_in: str | None = None, site_out: str | None = None, sites: Sequence[str] | None = None,
                     expansion: float = 8, options: Mapping | None = None, skip: bool = False, split: str = "train",
                     progress: bool = True) -> TrainResult:
    """Train one dictionary on a store: an SAE on ``site_in``, a transcoder to ``site_out``, or a
    crosscoder (``arch="crosscoder"``) over ``sites``.

    Saved as ``out_dir/{name}/`` with a name like ``topk_k32_x8`` (see ``dictionary_name``).
    """
    source = StoreSource(store, site_in, site_out, sites=sites, split=split)
    options, recorded = _store_setup(source, options)
    spec = DictionarySpec(arch, expansion, options)
    layout = source.layout
    dictionaries = build_dictionaries({dictionary_name(spec): spec}, layout.input_shape[-1],
                                      d_out=layout.target_width, skip=skip, seed=config.seed, **recorded)
    return Trainer(dictionaries, config, out_dir).fit(source, progress=progress)


def sweep_from_store(store: str | Path | ActivationStore, out_dir: str | Path, *, arch: str, config: TrainConfig,
                     expansions: Sequence[float], sparsities: Sequence, site_in: str | None = None,
                     site_out: str | None = None, sites: Sequence[str] | None = None, options: Mapping | None = None,
                     sparsity_option: str | None = None, skip: bool = False, split: str = "train",
                     progress: bool = True, seeds: Sequence[int] | None = None) -> TrainResult:
    """Train the grid ``sparsities x expansions`` of ``arch`` on a store, in one pass over it.

    ``seeds`` repeats each point once per init seed (names ``..._s{seed}``), see ``sweep``.
    """
    source = StoreSource(store, site_in, site_out, sites=sites, split=split)
    options, recorded = _store_setup(source, options)
    return sweep(arch, source, config, out_dir, expansions=expansions, sparsities=sparsities, options=options,
                 sparsity_option=sparsity_option, skip=skip, progress=progress, seeds=seeds, **recorded)


def train_live(lm, out_dir: str | Path, *, arch: str, config: TrainConfig, site_in: str, site_out: str | None = None,
               corpus: CorpusSpec = "stdlib", context_length: int = 128, expansion: float = 8,
               options: Mapping | None = None, skip: bool = False, progress: bool = True) -> TrainResult:
    """Train one dictionary on activations computed on the fly by ``lm`` (a loaded LanguageModel)."""
    source = LiveSource(lm, site_in, site_out, corpus=corpus, context_length=context_length)
    spec = DictionarySpec(arch, expansion, dict(options or {}))
    layout = source.layout
    recorded = {"site_in": source.sites[0], "site_out": source.sites[1] if len(source.sites) > 1 else None,
                "model": lm.name}
    dictionaries = build_dictionaries({dictionary_name(spec): spec}, layout.input_shape[-1],
                                      d_out=layout.target_width, skip=skip, seed=config.seed, **recorded)
    return Trainer(dictionaries, config, out_dir).fit(source, progress=progress)


def train_every_layer(lm, out_dir: str | Path, *, arch: str = "transcoders", config: TrainConfig,
                      layers: Sequence[int] | None = None, corpus: CorpusSpec = "stdlib", context_length: int = 128,
                      expansion: float = 8, options: Mapping | None = None, skip: bool = False,
                      model_batch_size: int = 16, progress: bool = True) -> TrainResult:
    """Transcoders (``transcoders`` or ``clt``) from every layer's MLP input to its output, in one live pass.

    ``expansion`` counts latents per layer and input dimension (a layer gets ``expansion * d``
    latents). Saved as ``out_dir/{arch}_{sparsity}_x{expansion}/``; rerunning resumes.
    """
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    if not layers or any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < lm.n_layers for x in layers):
        raise MonosemanticError(f"layers {layers} are invalid; expected layer numbers in 0-{lm.n_layers - 1}")
    sites_in = [f"blocks.{layer}.mlp_in" for layer in layers]
    sites_out = [f"blocks.{layer}.mlp_out" for layer in layers]
    source = LiveSource(lm, sites=sites_in, sites_out=sites_out, corpus=corpus, context_length=context_length,
                        model_batch_size=model_batch_size)
    spec = DictionarySpec(arch, expansion, {**(options or {}), "sites_in": sites_in, "sites_out": sites_out})
    d_in, d_out = source.layout.input_shape[-1], source.layout.target_width
    per_layer = max(1, round(check_expansion(expansion) * d_in))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        dictionary = make_dictionary(arch, d_in, per_layer * len(layers), d_out=d_out, skip=skip, model=lm.name,
                                     **spec.options)
    name = dictionary_name(DictionarySpec(arch, expansion, dict(options or {})))
    return Trainer({name: dictionary}, config, out_dir).fit(source, progress=progress)
