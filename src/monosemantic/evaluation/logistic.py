"""Many small logistic regressions fitted at once (torch, full-batch L-BFGS).

Probing scores tens of binary tasks for every contender and every k; fitted one by one with
scikit-learn, the per-fit overhead dominated (about 70 ms for a 5-feature probe and 1-5 s for
a 576-wide one on a 2-core machine). Here every task of a batch is one independent
regression with scikit-learn's objective for ``class_weight="balanced"``:

    sum_n w_n * BCE(x_n . W_t + b_t, y_n) + ||W_t||^2 / (2 C),    w_n = n / (2 * n_class(y_n))

on features standardised with the training rows' mean and standard deviation. The objectives
are separable, so their sum is minimised jointly and each task gets its own optimum.
"""

from __future__ import annotations

import torch
from torch import Tensor


def balanced_weights(y_TN: Tensor, mask_TN: Tensor) -> Tensor:
    """Per-row weights ``[T, N]``: inverse class frequency within each task's masked rows, 0 elsewhere."""
    mask = mask_TN.to(torch.float64)
    positives_T = (y_TN * mask).sum(1, keepdim=True)
    total_T = mask.sum(1, keepdim=True)
    per_class = torch.where(y_TN > 0, positives_T, total_T - positives_T).clamp(min=1)
    return (total_T / (2 * per_class) * mask).to(torch.float32)


def fit_gathered(X_TNK: Tensor, y_TN: Tensor, train_TN: Tensor, *, C: float = 1.0,
                 max_iter: int = 100) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One regression per task on its own features ``X_TNK``; returns ``(W_TK, b_T, mean_TK, std_TK)``.

    Decision values are ``((X - mean) / std) @ W + b``.
    """
    mean_TK, std_TK = _moments(X_TNK, train_TN)
    Z_TNK = _standardised(X_TNK, mean_TK, std_TK)  # once, not at every evaluation of the loss
    weights_TN = balanced_weights(y_TN, train_TN)
    W_TK = torch.zeros(X_TNK.shape[0], X_TNK.shape[2], requires_grad=True)
    b_T = torch.zeros(X_TNK.shape[0], requires_grad=True)

    def loss() -> Tensor:
        return _objective(_gathered_logits(Z_TNK, W_TK, b_T), y_TN, weights_TN, W_TK, C)

    _minimise([W_TK, b_T], loss, max_iter)
    return W_TK.detach(), b_T.detach(), mean_TK, std_TK


def fit_shared(X_ND: Tensor, y_NT: Tensor, train_NT: Tensor, *, C: float = 1.0,
               max_iter: int = 100) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One regression per task over the same rows ``X_ND`` (tasks differ in labels and rows used).

    Returns ``(W_DT, b_T, mean_TD, std_TD)``; task t's decision is ``((X - mean_t) / std_t) @ W[:, t] + b_t``.
    """
    mask_TN = train_NT.T.to(X_ND.dtype)
    count_T1 = mask_TN.sum(1, keepdim=True).clamp(min=1)
    mean_TD = mask_TN @ X_ND / count_T1
    var_TD = (mask_TN @ X_ND.square() / count_T1 - mean_TD.square()).clamp(min=0)
    std_TD = torch.where(var_TD > 0, var_TD.sqrt(), torch.ones_like(var_TD))
    weights_TN = balanced_weights(y_NT.T, train_NT.T)
    W_DT = torch.zeros(X_ND.shape[1], y_NT.shape[1], requires_grad=True)
    b_T = torch.zeros(y_NT.shape[1], requires_grad=True)
    def loss() -> Tensor:
        return _objective(shared_decision(X_ND, W_DT, b_T, mean_TD, std_TD).T, y_NT.T, weights_TN, W_DT.T, C)

    _minimise([W_DT, b_T], loss, max_iter)
    return W_DT.detach(), b_T.detach(), mean_TD, std_TD


def gathered_decision(X_TNK: Tensor, W_TK: Tensor, b_T: Tensor, mean_TK: Tensor, std_TK: Tensor) -> Tensor:
    """``[T, N]`` decision values of :func:`fit_gathered`'s regressions (positive above 0)."""
    return _gathered_logits(_standardised(X_TNK, mean_TK, std_TK), W_TK, b_T)


def _standardised(X_TNK: Tensor, mean_TK: Tensor, std_TK: Tensor) -> Tensor:
    return (X_TNK - mean_TK[:, None]) / std_TK[:, None]


def _gathered_logits(Z_TNK: Tensor, W_TK: Tensor, b_T: Tensor) -> Tensor:
    return torch.einsum("tnk,tk->tn", Z_TNK, W_TK) + b_T[:, None]


def shared_decision(X_ND: Tensor, W_DT: Tensor, b_T: Tensor, mean_TD: Tensor, std_TD: Tensor) -> Tensor:
    """``[N, T]`` decision values of :func:`fit_shared`'s regressions (positive above 0)."""
    # (x - m_t) / s_t . w_t = x . (w_t / s_t) - m_t . (w_t / s_t): one GEMM for every task.
    scaled_DT = W_DT / std_TD.T
    return X_ND @ scaled_DT - (mean_TD * scaled_DT.T).sum(1) + b_T


def _moments(X_TNK: Tensor, train_TN: Tensor) -> tuple[Tensor, Tensor]:
    mask_TN1 = train_TN.to(X_TNK.dtype)[..., None]
    count_T1 = mask_TN1.sum(1).clamp(min=1)
    mean_TK = (X_TNK * mask_TN1).sum(1) / count_T1
    var_TK = (((X_TNK - mean_TK[:, None]) ** 2) * mask_TN1).sum(1) / count_T1
    std_TK = var_TK.sqrt()
    return mean_TK, torch.where(std_TK > 0, std_TK, torch.ones_like(std_TK))


def _objective(logits_TN: Tensor, y_TN: Tensor, weights_TN: Tensor, W_TK: Tensor, C: float) -> Tensor:
    bce_TN = torch.nn.functional.binary_cross_entropy_with_logits(logits_TN, y_TN.to(logits_TN.dtype),
                                                                  reduction="none")
    # Divided by each task's row count so the line search sees tasks of any size on one scale.
    n_T = (weights_TN > 0).sum(1).clamp(min=1)
    per_task_T = ((weights_TN * bce_TN).sum(1) + (W_TK ** 2).sum(1) / (2 * C)) / n_T
    return per_task_T.sum()


def _minimise(params: list[Tensor], loss, max_iter: int) -> None:
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
