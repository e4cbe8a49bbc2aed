"""Held-out activation rows in the shape a dictionary evaluates: ``(input, target)`` batches.

Accepted everywhere an evaluation takes activations:

- a tensor ``x [N, D]`` (``[N, S, D]`` for a crosscoder): an autoencoder's input and target;
- a pair ``(x, target)``: a transcoder's input site and output site, rows aligned;
- a dict ``{site: rows}`` as ``ActivationStore.batches([site_in, site_out])`` yields;
- an iterable of any of these, one per batch (a store's batches, a generator): streamed, so
  the evaluation never holds more than one batch.

:func:`store_rows` reads a store's held-out split in that form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError

Pair = tuple[Tensor, Tensor]


def dictionary_sites(dictionary: Dictionary, site: str | None = None) -> tuple[list[str], str | None]:
    """(input sites, output site) of a dictionary: its config's, or ``site`` for an autoencoder."""
    config = dictionary.config
    if dictionary.n_sites > 1:
        if None in dictionary.sites:
            raise MonosemanticError(f"this {config.arch} dictionary records no sites (its 'sites' option); "
                                    "pass [rows, sites, width] tensors instead of a model's windows")
        return [str(s) for s in dictionary.sites], None
    site_in = site or config.site_in
    if site_in is None:
        raise MonosemanticError(f"the {config.arch} dictionary's config names no site; pass site='blocks.L.kind' "
                                "(the site its rows come from)")
    site_out = config.site_out if config.is_transcoder else None
    if config.is_transcoder and site_out is None:
        raise MonosemanticError("this transcoder's config names no output site (site_out); "
                                "set it in the config or pass (input, target) pairs")
    return [site_in], site_out


def activation_batches(data, dictionary: Dictionary, batch_size: int = 4096) -> Iterator[Pair]:
    """``(x, target)`` batches of at most ``batch_size`` rows from any accepted form of ``data``."""
    if isinstance(data, (Tensor, tuple, dict)):
        yield from _chunks(_pair(data, dictionary), batch_size)
        return
    if not isinstance(data, Iterable):
        raise MonosemanticError(f"evaluation data must be a tensor, an (input, target) pair, a dict of sites or "
                                f"an iterable of those; got {type(data).__name__}")
    for item in data:
        yield from _chunks(_pair(item, dictionary), batch_size)


def _pair(item, dictionary: Dictionary) -> Pair:
    if isinstance(item, dict):
        item = _from_sites(item, dictionary)
    if isinstance(item, Tensor):
        if dictionary.config.is_transcoder:
            raise MonosemanticError("a transcoder is evaluated on (input, target) pairs of rows; got a single "
                                    "tensor; pass (x_in, x_out) or a dict of both sites' rows")
        return item, item
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, Tensor) for t in item):
        x, target = item
        if x.shape[0] != target.shape[0]:
            raise MonosemanticError(f"input has {x.shape[0]} rows but target has {target.shape[0]}; "
                                    "pass rows of the same tokens")
        return x, target
    raise MonosemanticError(f"an evaluation batch must be a tensor, an (input, target) pair of tensors or a dict of "
                            f"sites; got {type(item).__name__}")


def _from_sites(rows: dict, dictionary: Dictionary) -> Tensor | Pair:
    # A one-site dict names the autoencoder's site itself, so a config without sites still works.
    if len(rows) == 1 and not dictionary.config.is_transcoder:
        return next(iter(rows.values()))
    sites_in, site_out = dictionary_sites(dictionary)
    missing = [s for s in sites_in + [site_out] if s is not None and s not in rows]
    if missing:
        raise MonosemanticError(f"evaluation batch lacks site(s) {', '.join(missing)}; it has "
                                f"{', '.join(map(str, rows))}; read the dictionary's sites from the store")
    x = rows[sites_in[0]] if len(sites_in) == 1 else torch.stack([rows[s] for s in sites_in], dim=1)
    return x if site_out is None else (x, rows[site_out])


def _chunks(pair: Pair, batch_size: int) -> Iterator[Pair]:
    x, target = pair
    for start in range(0, x.shape[0], batch_size):
        yield x[start:start + batch_size], target[start:start + batch_size]


def store_rows(store, dictionary: Dictionary, *, batch_size: int = 4096, split: str = "holdout",
               holdout: float = 0.05, site: str | None = None) -> Iterator[Pair]:
    """The dictionary's sites' rows from an ``ActivationStore``, ``split`` only, in store order.

    The held-out split (by window, see ``activations.split``) is the default: rows the
    dictionary was not trained on when it was trained on the same store's ``train`` split.
    """
    sites_in, site_out = dictionary_sites(dictionary, site)
    wanted = list(dict.fromkeys(sites_in + ([site_out] if site_out else [])))
    for rows in store.batches(wanted, batch_size, split=split, holdout=holdout, shuffle=False):
        yield _pair(_from_sites(rows, dictionary) if len(wanted) > 1 else rows[wanted[0]], dictionary)
