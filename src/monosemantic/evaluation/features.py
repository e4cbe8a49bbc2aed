"""What probing, clustering and absorption share: codes as scikit-learn features, splits, and latent selection.

Codes are float32, held as a scipy CSR matrix when sparse (an SAE's, where a dense
``[20k, 16k]`` matrix would be over a gigabyte) and as a dense array otherwise (baselines).
Features are standardised by scale only (``StandardScaler(with_mean=False)``): that keeps them
sparse, and a logistic regression with an unpenalised intercept is unchanged by centring.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..dictionaries import Dictionary, require_single_site
from ..errors import MonosemanticError
from ..models import eval_mode

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

# Codes with fewer nonzeros than this fraction are kept sparse.
SPARSE_BELOW = 0.25


def sklearn():
    """The scikit-learn modules used here, or a one-line error saying how to install them."""
    try:
        from sklearn import cluster, linear_model, metrics, preprocessing
    except ImportError:
        raise MonosemanticError("probing, clustering and absorption need scikit-learn, which is not installed; "
                                "run pip install 'monosemantic[eval]'") from None
    return linear_model, preprocessing, metrics, cluster


def check_rows(acts_ND, labels_N=None, windows_N=None) -> None:
    """One-line errors for activations that are not ``[N, D]`` or labels/windows not one per row."""
    if not isinstance(acts_ND, Tensor) or acts_ND.ndim != 2 or not acts_ND.is_floating_point():
        got = tuple(acts_ND.shape) if isinstance(acts_ND, Tensor) else type(acts_ND).__name__
        raise MonosemanticError(f"activations must be a floating [tokens, width] tensor; got {got}")
    for name, values in (("labels", labels_N), ("windows", windows_N)):
        if values is not None and (not isinstance(values, Tensor) or values.shape != (acts_ND.shape[0],)):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise MonosemanticError(f"got {name} of shape {got} for {acts_ND.shape[0]} tokens; expected one "
                                    f"{name[:-1]} per activation row, as a 1-D tensor")


@torch.inference_mode()
def dictionary_codes(dictionary: Dictionary, acts_ND: Tensor, *, batch_size: int = 2048) -> csr_matrix | np.ndarray:
    """Codes ``[N, F]`` float32 of ``acts_ND``: a CSR matrix when sparse, else a dense array."""
    require_single_site(dictionary, "code statistics")
    if acts_ND.shape[1] != dictionary.d_in:
        raise MonosemanticError(f"the {dictionary.config.arch} dictionary reads [tokens, {dictionary.d_in}] rows "
                                f"but the activations are {tuple(acts_ND.shape)}; pass activations of its site")
    sklearn()  # scipy comes with scikit-learn: one install hint for both
    from scipy import sparse

    device, dtype = dictionary.W_enc.device, dictionary.W_enc.dtype
    parts, nonzero = [], 0
    with eval_mode(dictionary):
        for start in range(0, acts_ND.shape[0], batch_size):
            codes_BF = dictionary.encode(acts_ND[start:start + batch_size].to(device, dtype)).float().cpu()
            batch_nonzero = int((codes_BF != 0).sum())
            nonzero += batch_nonzero
            # Each batch sparsified on its own, so a wide SAE is never held dense beyond one batch.
            is_sparse = batch_nonzero < SPARSE_BELOW * codes_BF.numel()
            parts.append(sparse.csr_matrix(codes_BF.numpy()) if is_sparse else codes_BF.numpy())
    dense_fraction = nonzero / max(1, acts_ND.shape[0] * dictionary.d_sae)
    if dense_fraction < SPARSE_BELOW:
        # Wrapped (sharing the arrays) because scipy's vstack is typed as returning any sparse kind.
        return sparse.csr_matrix(sparse.vstack([sparse.csr_matrix(p) for p in parts], format="csr"))
    return np.concatenate([p.toarray() if issparse(p) else p for p in parts])


def window_split(windows_N: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Bool ``[N]``: True for rows whose window is in the test split (whole windows, so contexts never leak)."""
    if not 0 < test_fraction < 1:
        raise MonosemanticError(f"test_fraction={test_fraction!r} is invalid; expected a fraction in (0, 1), e.g. 0.25")
    unique = np.unique(windows_N)
    if unique.size < 2:
        raise MonosemanticError(f"the tokens come from {unique.size} window; a held-out split by window needs at "
                                "least 2; pass tokens from more windows")
    order = np.random.default_rng(seed).permutation(unique)
    n_test = min(unique.size - 1, max(1, round(test_fraction * unique.size)))
    return np.isin(windows_N, order[:n_test])


def subsample(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, drawn without replacement."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def class_scores(X, y_N: np.ndarray, classes: np.ndarray, *, normalised: bool = True,
                 signed: bool = False) -> np.ndarray:
    """``[C, F]``: |mean in class - mean out of class| of each feature, one-vs-rest per class.

    ``normalised`` divides by the feature's standard deviation over all rows, so features of
    different scales (SAE latents, neurons, PCA projections) compete on equal terms.
    ``signed`` keeps the sign: positive for features higher in the class than out of it.
    """
    onehot_NC = (y_N[:, None] == classes[None, :]).astype(np.float64)
    n_C = onehot_NC.sum(0)
    sums_CF = np.asarray((X.T @ onehot_NC).T, dtype=np.float64)  # sparse.T @ dense is dense
    total_F = np.asarray(X.sum(0), dtype=np.float64).ravel()
    n = X.shape[0]
    mean_in_CF = sums_CF / np.maximum(n_C, 1)[:, None]
    mean_out_CF = (total_F[None, :] - sums_CF) / np.maximum(n - n_C, 1)[:, None]
    scores_CF = mean_in_CF - mean_out_CF if signed else np.abs(mean_in_CF - mean_out_CF)
    if normalised:
        squares_F = np.asarray(X.multiply(X).sum(0) if issparse(X) else (X.astype(np.float64) ** 2).sum(0))
        var_F = np.maximum(squares_F.ravel() / n - (total_F / n) ** 2, 0.0)
        std_F = np.sqrt(var_F)
        scores_CF = np.where(std_F > 0, scores_CF / np.where(std_F > 0, std_F, 1.0), 0.0)
    return scores_CF


def top_features(scores_F: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties: lower index first)."""
    order = np.lexsort((np.arange(scores_F.size), -scores_F))
    return order[:k]


def columns(X, index_K: np.ndarray) -> np.ndarray:
    """Dense float32 ``[N, K]`` of the chosen features."""
    picked = X[:, index_K]
    return np.asarray(picked.todense() if issparse(picked) else picked, dtype=np.float32)


def issparse(X) -> bool:
    """Whether ``X`` is a scipy sparse matrix (without importing scipy, an optional dependency)."""
    return hasattr(X, "tocsr")


def fit_logistic(X_train, y_train: np.ndarray, *, C: float, max_iter: int, class_weight: str | None = None):
    """A scale-standardised logistic regression (multinomial for several classes): a fitted pipeline.

    ``class_weight="balanced"`` weighs classes by inverse frequency, for rare positives.
    """
    linear_model, preprocessing, _, _ = sklearn()
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(preprocessing.StandardScaler(with_mean=False),
                          linear_model.LogisticRegression(C=C, max_iter=max_iter,
                                                                          class_weight=class_weight))
    with warnings.catch_warnings():
        # max_iter is bounded on purpose (runtime); an unconverged probe is still a probe.
        warnings.simplefilter("ignore")
        model.fit(X_train, y_train)
    return model
