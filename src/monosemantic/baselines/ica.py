"""Independent components (scikit-learn's FastICA): directions along which the data is least Gaussian.

FastICA finds an unmixing matrix whose outputs are as independent as possible; its inverse
(the mixing matrix) maps sources back to activations. Here the unmixing is the encoder, the
mixing the decoder and the sample mean ``b_dec``, with each decoder row scaled to unit norm
(and its code scaled up to match) so decoder rows are comparable with other dictionaries'
(MMCS) and codes are in the activations' units. A dense, non-sparse baseline: if a sparse
dictionary's latents are no more interpretable than ICA's, sparsity bought nothing.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..dictionaries import register
from ..errors import MonosemanticError
from .linear import PROVENANCE_OPTIONS, LinearBaseline, build, check_sample, component_count

INSTALL_HINT = "pip install 'monosemantic[eval]' (or pip install scikit-learn)"


@register("ica")
class ICABaseline(LinearBaseline):
    SUMMARY = "baseline: FastICA unmixing as encoder, unit mixing directions as decoder"
    OPTIONS = {**PROVENANCE_OPTIONS, "max_iter": 1000, "tol": 1e-4, "converged": None}

    AT_MOST_D_IN = True


def fit_ica(x_ND: Tensor, *, n_components: int | None = None, seed: int = 0, site: str | None = None,
            model: str | None = None, max_iter: int = 1000, tol: float = 1e-4) -> ICABaseline:
    """FastICA (unit-variance whitening, logcosh contrast) with ``n_components`` (default ``D``) sources.

    ``seed`` fixes FastICA's random start. Whether it converged within ``max_iter`` is kept
    in the config (option ``converged``) rather than only warned about.
    """
    try:
        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:
        raise MonosemanticError(f"the ica baseline needs scikit-learn, not installed; {INSTALL_HINT}") from None
    x_ND = check_sample("ica", x_ND)
    N, D = x_ND.shape
    k = component_count("ica", n_components, x_ND)
    ica = FastICA(n_components=k, whiten="unit-variance", max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        ica.fit(x_ND.numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    unmixing_kD = torch.from_numpy(ica.components_)
    mixing_Dk = torch.from_numpy(ica.mixing_)
    norms_k = mixing_Dk.norm(dim=0).clamp_min(1e-12)
    dictionary = build(ICABaseline, D, k, site=site, model=model, fit_rows=N, seed=seed, max_iter=max_iter, tol=tol,
                       converged=converged)
    dictionary.set_weights_((unmixing_kD * norms_k[:, None]).T, (mixing_Dk / norms_k).T,
                            torch.from_numpy(ica.mean_))
    return dictionary
