"""What every baseline shares: an affine encoder and decoder with nothing learned by gradient.

A baseline is a :class:`~monosemantic.dictionaries.Dictionary` (same parameters, same save
format, same evaluations) whose codes are its encoder pre-activations as they are: no ReLU, no
top-k. Its weights come from a closed-form fit (:func:`~monosemantic.baselines.fit_baseline`),
so it has no sparsity penalty and keeps its decoder as fitted (``unit_norm_decoder`` False).

Baselines are registered under their own arch names (``identity``, ``pca``, ``ica``,
``random``, ``zero``, ``mean``), so ``load_dictionary_native`` rebuilds them from
``config.json`` like any architecture once this package is imported.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor

from ..dictionaries import Dictionary, LossOutput, StepInput, loss_terms, make_dictionary, reconstruction_mse
from ..errors import MonosemanticError

# Where a fitted baseline came from; recorded in the config, changes no computation.
PROVENANCE_OPTIONS = {"fit_rows": None, "seed": None}


class LinearBaseline(Dictionary):
    """Codes ``(x - b_dec) @ W_enc + b_enc``, reconstruction ``codes @ W_dec + b_dec``."""

    OPTIONS = dict(PROVENANCE_OPTIONS)
    TRAINABLE = False  # fitted in closed form by fit_baseline
    # Bases fitted from the data's own directions (PCA, ICA) have at most d_in components.
    AT_MOST_D_IN = False

    @classmethod
    def _check_options(cls, options: dict, config) -> dict:
        if cls.AT_MOST_D_IN and config.d_sae > config.d_in:
            raise MonosemanticError(f"{cls.arch.upper()} has at most d_in={config.d_in} components; got "
                                    f"d_sae={config.d_sae}; pass n_components <= {config.d_in}")
        for name in PROVENANCE_OPTIONS.keys() & options.keys():
            value = options[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise MonosemanticError(f"{cls.arch} option {name}={value!r} is invalid; "
                                        "expected a non-negative integer or None")
        if config.is_transcoder:
            raise MonosemanticError(f"the {cls.arch} baseline reconstructs its input; leave d_out, skip and "
                                    "site_out unset")
        return options

    @property
    def unit_norm_decoder(self) -> bool:
        # A fitted decoder is kept as fitted: renormalising would change what the fit means.
        return False

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return pre_NF

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        # Only the reconstruction error: a baseline has no sparsity term to trade it against.
        recon_ND, codes_NF, _ = self(x_ND)
        mse = reconstruction_mse(recon_ND, target_ND)
        return LossOutput(mse, loss_terms(mse), recon_ND, codes_NF)

    @torch.no_grad()
    def set_weights_(self, W_enc_DF: Tensor, W_dec_FD: Tensor, b_dec_D: Tensor | None = None) -> None:
        """Copy fitted weights in (any float dtype); ``b_enc`` is zeroed, ``b_dec`` zero when None."""
        self.W_enc.copy_(W_enc_DF.to(self.W_enc.dtype))
        self.W_dec.copy_(W_dec_FD.to(self.W_dec.dtype))
        self.b_enc.zero_()
        if b_dec_D is None:
            self.b_dec.zero_()
        else:
            self.b_dec.copy_(b_dec_D.to(self.b_dec.dtype))


_B = TypeVar("_B", bound="LinearBaseline")


def build(cls: type[_B], d_in: int, d_sae: int, *, site: str | None = None, model: str | None = None,
          **options) -> _B:
    """A baseline of class ``cls`` at its construction weights, to be filled by a fit.

    The global RNG is left as it was: construction draws a random init that every fit
    overwrites, and fitting a baseline should not shift the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        dictionary = make_dictionary(cls.arch, d_in, d_sae, site_in=site, model=model, **options)
    assert isinstance(dictionary, cls)  # make_dictionary builds the class registered as cls.arch
    return dictionary


def check_sample(kind: str, x_ND, least_rows: int = 2) -> Tensor:
    """``x_ND`` as a float64 ``[N, D]`` tensor with finite values and at least ``least_rows`` rows."""
    if not isinstance(x_ND, Tensor) or x_ND.ndim != 2 or not x_ND.is_floating_point():
        got = tuple(x_ND.shape) if isinstance(x_ND, Tensor) else type(x_ND).__name__
        raise MonosemanticError(f"the {kind} baseline is fitted on a floating [rows, width] tensor; got {got}; "
                                "pass activations reshaped to (-1, width)")
    if x_ND.shape[0] < least_rows:
        raise MonosemanticError(f"the {kind} baseline needs at least {least_rows} rows to fit; "
                                f"got {x_ND.shape[0]}; pass a larger sample")
    if not torch.isfinite(x_ND).all():
        raise MonosemanticError(f"the {kind} baseline's sample holds NaN or infinite values; "
                                "drop those rows first")
    return x_ND.detach().to("cpu", torch.float64)


def component_count(kind: str, n_components, x_ND: Tensor) -> int:
    """``n_components`` (default: the width) checked against the width and the number of rows."""
    N, D = x_ND.shape
    k = D if n_components is None else n_components
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(N, D):
        raise MonosemanticError(f"{kind.upper()} n_components={n_components!r} is invalid; expected an integer in "
                                f"[1, {min(N, D)}] (at most the width and the number of rows)")
    return k
