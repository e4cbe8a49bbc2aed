"""Sweeps: a grid of sparsity x dictionary size, all trained by one Trainer from one pass.

Reading (or computing) activations usually costs more than a training step, so the whole grid
shares each batch: harvest once, train many. Names say the point of the grid, e.g.
``topk_k32_x8`` (k=32, 8x the input width) or ``relu_l1_0.001_x4``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..dictionaries import Dictionary, make_dictionary
from ..errors import MonosemanticError
from .config import TrainConfig
from .sources import BatchSource
from .trainer import TrainResult, Trainer

# The option each architecture's sparsity is set by, and its short name in dictionary names.
SPARSITY_OPTIONS = {"relu": "l1_coeff", "gated": "l1_coeff", "jumprelu": "l0_coeff",
                    "topk": "k", "batchtopk": "k", "matryoshka": "k"}
_SHORT = {"k": "k", "l1_coeff": "l1_", "l0_coeff": "l0_"}


@dataclass(frozen=True)
class DictionarySpec:
    """A dictionary to build: architecture, size and options (widths come from the data)."""

    arch: str
    expansion: float  # d_sae = round(expansion * d_in)
    options: dict = field(default_factory=dict, hash=False)  # architecture hyper-parameters


def sparsity_option_of(arch: str, options: Mapping | None = None) -> str | None:
    """The option that sets ``arch``'s sparsity (a crosscoder's depends on its activation)."""
    if arch == "crosscoder":
        return "k" if (options or {}).get("activation") == "topk" else "l1_coeff"
    return SPARSITY_OPTIONS.get(arch)


def dictionary_name(spec: DictionarySpec, sparsity_option: str | None = None) -> str:
    """``{arch}_{sparsity}_x{expansion}``, e.g. ``topk_k32_x8``; without a sparsity value ``topk_x8``."""
    option = sparsity_option or sparsity_option_of(spec.arch, spec.options)
    parts = [spec.arch]
    if option is not None and spec.options.get(option) is not None:
        parts.append(f"{_SHORT.get(option, option + '_')}{_number(spec.options[option])}")
    parts.append(f"x{_number(spec.expansion)}")
    return "_".join(parts)


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{float(value):g}"


def sweep_specs(arch: str, *, expansions: Sequence[float], sparsities: Sequence, options: Mapping | None = None,
                sparsity_option: str | None = None) -> dict[str, DictionarySpec]:
    """The grid ``sparsities x expansions`` as named specs (sparsity-major order)."""
    option = sparsity_option or sparsity_option_of(arch, options)
    if option is None:
        raise MonosemanticError(f"no known sparsity option for arch {arch!r}; pass sparsity_option= "
                                f"(known: {', '.join(f'{a}: {o}' for a, o in SPARSITY_OPTIONS.items())})")
    if not expansions or not sparsities:
        raise MonosemanticError("a sweep needs at least one expansion and one sparsity value, e.g. "
                                "expansions=[4, 8], sparsities=[32, 64]")
    specs = {}
    for value in sparsities:
        for expansion in expansions:
            if isinstance(expansion, bool) or not isinstance(expansion, (int, float)) or expansion <= 0:
                raise MonosemanticError(f"expansion {expansion!r} is invalid; expected a positive number like 8")
            spec = DictionarySpec(arch, expansion, {**(options or {}), option: value})
            specs[dictionary_name(spec, option)] = spec
    if len(specs) != len(sparsities) * len(expansions):
        raise MonosemanticError("the sweep grid has repeated values; list each expansion and sparsity once")
    return specs


def build_dictionaries(specs: Mapping[str, DictionarySpec], d_in: int, *, d_out: int | None = None,
                       skip: bool = False, seed: int = 0, device=None, **sites) -> dict[str, Dictionary]:
    """Freshly initialised dictionaries; each one's init depends only on (seed, its spec).

    ``sites`` are passed to ``make_dictionary`` (site_in, site_out, model). The global RNG is
    left as it was.
    """
    built = {}
    for name, spec in specs.items():
        d_sae = max(1, round(spec.expansion * d_in))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            built[name] = make_dictionary(spec.arch, d_in, d_sae, d_out=d_out, skip=skip, device=device,
                                          **sites, **spec.options)
    return built


def sweep(arch: str, source: BatchSource, config: TrainConfig, out_dir: str | Path | None = None, *,
          expansions: Sequence[float], sparsities: Sequence, options: Mapping | None = None,
          sparsity_option: str | None = None, lrs: Mapping[str, float] | None = None, skip: bool = False,
          progress: bool = True, **sites) -> TrainResult:
    """Train the grid ``sparsities x expansions`` of ``arch`` on ``source`` in one pass.

    Widths come from the source; ``sites`` (site_in, site_out, model) are recorded in each
    dictionary's config. Every dictionary starts from the init seeded by ``config.seed``, so
    it ends as it would have trained alone on the same batches.
    """
    specs = sweep_specs(arch, expansions=expansions, sparsities=sparsities, options=options,
                        sparsity_option=sparsity_option)
    layout = source.layout
    dictionaries = build_dictionaries(specs, layout.input_shape[-1], d_out=layout.target_width, skip=skip,
                                      seed=config.seed, **sites)
    return Trainer(dictionaries, config, out_dir, lrs=lrs).fit(source, progress=progress)
