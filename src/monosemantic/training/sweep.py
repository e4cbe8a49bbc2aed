"""Sweeps: a grid of sparsity x dictionary size, all trained by one Trainer from one pass.

Reading (or computing) activations usually costs more than a training step, so the whole grid
shares each batch: harvest once, train many. Names say the point of the grid, e.g.
``topk_k32_x8`` (k=32, 8x the input width) or ``relu_l1_0.001_x4``.

A seed axis (``seeds=(0, 1, 2)``) repeats each point with other initialisations, named
``topk_k32_x8_s0``, ``topk_k32_x8_s1``, ...; ``seed_groups`` gathers them back for reports
(see ``monosemantic.evaluation.seeds``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..dictionaries import ARCHITECTURES, Dictionary, architecture, make_dictionary
from ..errors import MonosemanticError
from .config import TrainConfig
from .sources import BatchSource
from .trainer import Trainer, TrainResult

# Short forms of sparsity options in dictionary names; the option itself is the architecture's
# (Dictionary.sparsity_option).
_SHORT = {"k": "k", "l1_coeff": "l1_", "l0_coeff": "l0_"}
# A seeded name: the point's name, then ``_s{seed}``.
_SEEDED = re.compile(r"^(?P<base>.+)_s(?P<seed>\d+)$")


@dataclass(frozen=True)
class DictionarySpec:
    """A dictionary to build: architecture, size and options (widths come from the data)."""

    arch: str
    expansion: float  # d_sae = round(expansion * d_in)
    options: dict = field(default_factory=dict, hash=False)  # architecture hyper-parameters
    seed: int | None = None  # init seed; None: the seed ``build_dictionaries`` is given (config.seed)


def sparsity_option_of(arch: str, options: Mapping | None = None) -> str | None:
    """The option that sets ``arch``'s sparsity (a crosscoder's depends on its activation)."""
    return architecture(arch).sparsity_option(options)


def dictionary_name(spec: DictionarySpec, sparsity_option: str | None = None) -> str:
    """``{arch}_{sparsity}_x{expansion}``, e.g. ``topk_k32_x8``; without a sparsity value ``topk_x8``.

    A spec with its own seed gets ``_s{seed}``, e.g. ``topk_k32_x8_s1``.
    """
    option = sparsity_option or sparsity_option_of(spec.arch, spec.options)
    parts = [spec.arch]
    if option is not None and spec.options.get(option) is not None:
        parts.append(f"{_SHORT.get(option, option + '_')}{_number(spec.options[option])}")
    parts.append(f"x{_number(spec.expansion)}")
    if spec.seed is not None:
        parts.append(f"s{spec.seed}")
    return "_".join(parts)


def _number(value) -> str:
    # Not a number (k=abc from the command line): named as given, refused by the architecture's check.
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_expansion(expansion) -> float:
    """``expansion`` (latents per input dimension) if it is a finite number > 0; MonosemanticError otherwise."""
    if isinstance(expansion, bool) or not isinstance(expansion, (int, float)) or not math.isfinite(expansion) \
            or expansion <= 0:
        raise MonosemanticError(f"expansion {expansion!r} is invalid; expected a positive number like 8 "
                                "(latents per input dimension)")
    return expansion


def check_seeds(seeds: Sequence[int] | None) -> tuple[int, ...] | None:
    """``seeds`` as a tuple of distinct non-negative ints (None stays None: no seed axis)."""
    if seeds is None:
        return None
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise MonosemanticError(f"seeds={seeds!r} is invalid; expected a non-empty list of ints like [0, 1, 2], "
                                "or None for no seed axis")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise MonosemanticError(f"seed {seed!r} is invalid; expected a non-negative int like 0, 1, 2")
    if len(set(seeds)) != len(seeds):
        repeated = sorted({int(s) for s in seeds if list(seeds).count(s) > 1})
        raise MonosemanticError(f"seeds {repeated} are repeated; list each seed once, e.g. seeds=[0, 1, 2]")
    return tuple(int(s) for s in seeds)


def seed_groups(names) -> dict[str, list[str]]:
    """Seeded names grouped by their point: ``{"topk_k32_x8": ["topk_k32_x8_s0", "topk_k32_x8_s1"]}``.

    Members are ordered by seed; names without a ``_s{seed}`` suffix belong to no group.
    """
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        match = _SEEDED.match(name)
        if match:
            groups.setdefault(match["base"], []).append((int(match["seed"]), name))
    return {base: [name for _, name in sorted(members)] for base, members in groups.items()}


def sweep_specs(arch: str, *, expansions: Sequence[float], sparsities: Sequence, options: Mapping | None = None,
                sparsity_option: str | None = None, seeds: Sequence[int] | None = None) -> dict[str, DictionarySpec]:
    """The grid ``sparsities x expansions`` (x ``seeds`` when given) as named specs (sparsity-major order).

    With ``seeds`` each point is repeated once per seed, seeds innermost, named ``..._s{seed}``;
    without, names carry no seed and dictionaries take the seed ``build_dictionaries`` is given.
    """
    option = sparsity_option or sparsity_option_of(arch, options)
    if option is None:
        known = {a: cls.sparsity_option(options) for a, cls in ARCHITECTURES.items() if cls.TRAINABLE}
        raise MonosemanticError(f"no known sparsity option for arch {arch!r}; pass sparsity_option= "
                                f"(known: {', '.join(f'{a}: {o}' for a, o in known.items() if o)})")
    if not expansions or not sparsities:
        raise MonosemanticError("a sweep needs at least one expansion and one sparsity value, e.g. "
                                "expansions=[4, 8], sparsities=[32, 64]")
    seed_axis = check_seeds(seeds)
    specs = {}
    for value in sparsities:
        for expansion in expansions:
            check_expansion(expansion)
            for seed in seed_axis or (None,):
                spec = DictionarySpec(arch, expansion, {**(options or {}), option: value}, seed)
                specs[dictionary_name(spec, option)] = spec
    if len(specs) != len(sparsities) * len(expansions) * len(seed_axis or (None,)):
        raise MonosemanticError("the sweep grid has repeated values; list each expansion and sparsity once")
    return specs


def build_dictionaries(specs: Mapping[str, DictionarySpec], d_in: int, *, d_out: int | None = None,
                       skip: bool = False, seed: int = 0, device=None, **sites) -> dict[str, Dictionary]:
    """Freshly initialised dictionaries; each one's init depends only on (seed, its spec).

    A spec's own ``seed`` (set by a seed axis) replaces ``seed``. ``sites`` are passed to
    ``make_dictionary`` (site_in, site_out, model). The global RNG is left as it was.
    """
    built = {}
    for name, spec in specs.items():
        d_sae = max(1, round(check_expansion(spec.expansion) * d_in))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed if spec.seed is None else spec.seed)
            built[name] = make_dictionary(spec.arch, d_in, d_sae, d_out=d_out, skip=skip, device=device,
                                          **sites, **spec.options)
    return built


def sweep(arch: str, source: BatchSource, config: TrainConfig, out_dir: str | Path | None = None, *,
          expansions: Sequence[float], sparsities: Sequence, options: Mapping | None = None,
          sparsity_option: str | None = None, lrs: Mapping[str, float] | None = None, skip: bool = False,
          progress: bool = True, seeds: Sequence[int] | None = None, **sites) -> TrainResult:
    """Train the grid ``sparsities x expansions`` of ``arch`` on ``source`` in one pass.

    Widths come from the source; ``sites`` (site_in, site_out, model) are recorded in each
    dictionary's config. Every dictionary starts from the init seeded by ``config.seed``, so
    it ends as it would have trained alone on the same batches.

    ``seeds`` adds a seed axis: each point is trained once per seed, named ``..._s{seed}`` and
    initialised from that seed instead of ``config.seed``. All seeds share one stream of batches
    (data order still comes from ``config.seed``), which isolates the initialisation's effect:
    seeds differ in where they start, not in what they see. Resampling, when on, is seeded by
    the name too, so it differs between seeds as well.
    """
    specs = sweep_specs(arch, expansions=expansions, sparsities=sparsities, options=options,
                        sparsity_option=sparsity_option, seeds=seeds)
    layout = source.layout
    dictionaries = build_dictionaries(specs, layout.input_shape[-1], d_out=layout.target_width, skip=skip,
                                      seed=config.seed, **sites)
    return Trainer(dictionaries, config, out_dir, lrs=lrs).fit(source, progress=progress)
