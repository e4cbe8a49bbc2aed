"""``fit_baseline``: one entry point for every baseline, by name."""

from __future__ import annotations

from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .constant import fit_mean, fit_zero
from .ica import fit_ica
from .identity import fit_identity
from .pca import fit_pca
from .random_directions import fit_random

# Baselines that take a number of components, and the ones whose size is fixed by the data.
_SIZED = {"pca": fit_pca, "ica": fit_ica, "random": fit_random}
_FIXED = {"identity": fit_identity, "zero": fit_zero, "mean": fit_mean}
BASELINES = tuple(sorted({**_SIZED, **_FIXED}))


def fit_baseline(kind: str, x_ND: Tensor, *, n_components: int | None = None, seed: int = 0,
                 site: str | None = None, model: str | None = None, **options) -> Dictionary:
    """A baseline dictionary of ``kind`` fitted on the sample ``x_ND [N, D]``.

    ``n_components`` is the number of latents for pca, ica (default and maximum ``D``) and
    random (default ``D``, any size); identity, zero and mean have a fixed size and refuse it.
    ``site`` and ``model`` are recorded in the config (``site_in``, ``model``) so evaluations
    know where to splice. ``options`` go to the kind's fit: ``encoder`` for random,
    ``max_iter`` and ``tol`` for ica.
    """
    if kind in _SIZED:
        return _SIZED[kind](x_ND, n_components=n_components, seed=seed, site=site, model=model, **options)
    if kind not in _FIXED:
        raise MonosemanticError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")
    if n_components is not None:
        raise MonosemanticError(f"the {kind} baseline has a fixed size, so n_components must be left unset; "
                                f"got {n_components!r}")
    if options:
        raise MonosemanticError(f"the {kind} baseline takes no options; got {', '.join(sorted(options))}")
    return _FIXED[kind](x_ND, site=site, model=model)
