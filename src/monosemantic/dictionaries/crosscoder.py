"""Crosscoders (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model Diffing").

One dictionary over S sources read at the same tokens: several layers of one model, or the
same site in two models. Each latent has an encoder and a decoder slice per source:

    pre     = sum_s (x_s - b_dec_s) @ W_enc[s] + b_enc     # [N, F], one code per latent
    codes   = relu(pre), or the top k of pre per row
    recon_s = codes @ W_dec[:, s] + b_dec_s                # [N, S, D]

Inputs are centred by each source's decoder bias before encoding, as for SAEs
(``apply_b_dec_to_input``, default true), so the encoder sees deviations from each source's
typical activation rather than the sources' offsets.

The loss sums the reconstruction error over sources. With ReLU codes the penalty is
``l1_coeff * sum_f codes_f * sum_s ||W_dec[f, s]||``: a latent pays for each source it writes
to, so a feature that exists in one source only ends with a near-zero decoder slice in the
others. ``decoder_norms()`` ``[F, S]`` is the read-out for model diffing. The decoder is free
(the penalty already stops codes shrinking against growing decoders); with top-k codes there
is no penalty and each latent's whole decoder ``[S, D]`` is kept at unit norm instead.

Flattened, ``(S, D)`` is one input of width S*D and the crosscoder an SAE over concatenated
sources with a per-source penalty; that is how it trains (the relu and topk kernels run on views
of the parameters, with the same gradients as the plain computation below).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import MonosemanticError
from ..kernels import topk as fast_topk
from ..kernels.relu import DEFAULT_MAX_DENSITY, relu_autoencode
from .auxk import AuxKDictionary, check_auxk_options
from .base import (
    DictionaryOutput,
    _positive,
    _remove_radial_,
    check_paired_rows,
    checked_output,
    reconstruction_mse,
    step_input,
)
from .median import geometric_median
from .options import check_float, check_int
from .registry import register
from .relu import L1_COEFF_WEIGHTED
from .step import LossOutput, SparseCodes, StepInput, loss_terms

ACTIVATIONS = ("relu", "topk")


@register("crosscoder")
class Crosscoder(AuxKDictionary):
    """Parameters ``W_enc [S, D, F]``, ``b_enc [F]``, ``W_dec [F, S, D]``, ``b_dec [S, D]``."""

    SUMMARY = "one dictionary over several sites (layers or models), ReLU or top-k codes (Lindsey et al. 2024)"
    EXAMPLE = {"n_sources": 2}

    @classmethod
    def sparsity_option(cls, options=None) -> str | None:
        return "k" if (options or {}).get("activation") == "topk" else "l1_coeff"

    OPTIONS = {"n_sources": None, "sites": None, "activation": "relu", "l1_coeff": None, **AuxKDictionary.OPTIONS}
    SUPPORTS_INPUT_NORM = False  # its own pre_acts and decode over [N, S, D] inputs
    REQUIRED = ()
    max_sparse_density: float = DEFAULT_MAX_DENSITY  # as ReLUDictionary's: speed only

    @classmethod
    def _check_options(cls, options, config):
        if config.skip or config.d_out != config.d_in:
            raise MonosemanticError("a crosscoder reconstructs its inputs: leave d_out and skip unset")
        sites = options["sites"]
        if sites is not None and not (isinstance(sites, list) and all(isinstance(s, str) for s in sites)):
            raise MonosemanticError(f"crosscoder option sites={sites!r} is invalid; expected a list of site names")
        n = options["n_sources"] if options["n_sources"] is not None else (None if sites is None else len(sites))
        if n is None:
            raise MonosemanticError("a crosscoder needs n_sources=... or sites=[...] (one name per source)")
        # One source is an SAE; as a crosscoder its [N, 1, D] rows would pass for single-site ones.
        options["n_sources"] = check_int(cls.arch, "n_sources", n, 2)
        if sites is not None and len(sites) != n:
            raise MonosemanticError(f"crosscoder has n_sources={n} but {len(sites)} sites; give one site per source")
        if options["activation"] not in ACTIVATIONS:
            raise MonosemanticError(f"crosscoder option activation={options['activation']!r} is invalid; "
                                    f"expected one of {', '.join(ACTIVATIONS)}")
        if options["activation"] == "topk":
            if options["l1_coeff"] is not None:
                raise MonosemanticError("crosscoder option l1_coeff is for activation 'relu'; top-k needs none")
            return check_auxk_options(cls.arch, options, config)
        if options["k"] is not None:
            raise MonosemanticError("crosscoder option k is for activation 'topk'; pass activation='topk' too")
        l1 = L1_COEFF_WEIGHTED if options["l1_coeff"] is None else options["l1_coeff"]
        options["l1_coeff"] = check_float(cls.arch, "l1_coeff", l1)
        return options

    def _init_parameters(self) -> None:
        S, D, F = self.n_sources, self.d_in, self.d_sae
        W_dec_FSD = torch.randn(F, S, D)
        W_dec_FSD /= W_dec_FSD.flatten(1).norm(dim=1)[:, None, None]  # unit norm per latent, over all sources
        self.W_dec = nn.Parameter(W_dec_FSD)
        self.W_enc = nn.Parameter(W_dec_FSD.permute(1, 2, 0).contiguous())  # tied, as for SAEs
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.Parameter(torch.zeros(S, D))

    # ----- shape ---------------------------------------------------------------------------

    @property
    def n_sources(self) -> int:
        return self.options["n_sources"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n_sources, self.d_in)

    @property
    def sites(self) -> list[str | None]:
        return list(self.options["sites"] or [None] * self.n_sources)

    @property
    def unit_norm_decoder(self) -> bool:
        return self.options["activation"] == "topk"

    def _inputs(self, x_NSD: Tensor, what: str = "input") -> Tensor:
        S, D = self.n_sources, self.d_in
        if not isinstance(x_NSD, Tensor) or x_NSD.ndim != 3 or tuple(x_NSD.shape[1:]) != (S, D) \
                or not x_NSD.is_floating_point():
            got = tuple(x_NSD.shape) if isinstance(x_NSD, Tensor) else type(x_NSD).__name__
            raise MonosemanticError(f"crosscoder {what} must be a floating [rows, {S}, {D}] tensor (rows, sources, "
                                    f"width); got {got}; stack the sources' rows with torch.stack(..., dim=1)")
        return x_NSD.to(self.W_dec.dtype)

    def _flat(self) -> tuple[Tensor, Tensor, Tensor]:
        """Views ``W_enc [S*D, F]``, ``W_dec [F, S*D]``, ``b_dec [S*D]`` of the parameters."""
        F = self.d_sae
        return self.W_enc.view(-1, F), self.W_dec.view(F, -1), self.b_dec.view(-1)

    def decoder_norms(self) -> Tensor:
        """``[F, S]``: each latent's decoder norm in each source (in the units of the training data)."""
        return self.W_dec.detach().norm(dim=2)

    # ----- the computation (plain autograd; loss() trains through the fast paths) -------------

    def pre_acts(self, x_NSD: Tensor) -> Tensor:
        """Encoder pre-activations ``[N, F]`` of inputs ``[N, S, D]``."""
        x_NSD = self._inputs(x_NSD)
        if self.apply_b_dec_to_input:
            x_NSD = x_NSD - self.b_dec
        W_enc_IF, _, _ = self._flat()
        return torch.addmm(self.b_enc, x_NSD.reshape(x_NSD.shape[0], -1), W_enc_IF)  # sum over sources in one GEMM

    def _activate(self, pre_NF: Tensor) -> Tensor:
        if self.options["activation"] == "relu":
            return torch.relu(pre_NF)
        values_NK, indices_NK = pre_NF.topk(self.options["k"], dim=-1)
        return torch.zeros_like(pre_NF).scatter(-1, indices_NK, torch.relu(values_NK))

    def decode(self, codes_NF: Tensor, x_NSD: Tensor | None = None) -> Tensor:
        """Reconstructions ``[N, S, D]`` of codes ``[N, F]`` (``x`` is accepted and ignored)."""
        codes_NF = self._rows(codes_NF, self.d_sae, "codes")
        _, W_dec_FO, b_dec_O = self._flat()
        return torch.addmm(b_dec_O, codes_NF, W_dec_FO).view(-1, self.n_sources, self.d_in)

    def forward(self, x_NSD: Tensor) -> DictionaryOutput:
        pre_NF, codes_NF = self._encode_parts(x_NSD)
        return DictionaryOutput(self.decode(codes_NF), codes_NF, pre_NF)

    def l1_penalty(self, codes_NF: Tensor) -> Tensor:
        """``sum_f codes_f * sum_s ||W_dec[f, s]||``, averaged over rows (unweighted by l1_coeff)."""
        weighted_NF = codes_NF * self.W_dec.norm(dim=2).sum(1)
        # Summed in float32 at least (half-precision sums over thousands of latents lose digits).
        return weighted_NF.to(torch.promote_types(weighted_NF.dtype, torch.float32)).sum(-1).mean()

    def loss(self, x_NSD: Tensor, target_NSD: Tensor | None = None, step: StepInput | None = None) -> LossOutput:
        """Training loss on ``[N, S, D]`` rows; the reconstruction error is summed over sources.

        Codes are always dense (``step.dense_codes`` is a permission, not a request).

        ``recon`` is ``[N, S, D]``; ``codes`` ``[N, F]``. ``target`` defaults to the input.
        """
        x_NSD = self._inputs(x_NSD)
        target_NSD = x_NSD if target_NSD is None else self._inputs(target_NSD, "target")
        check_paired_rows(x_NSD, target_NSD)
        step = step_input(step, self.d_sae)
        n = x_NSD.shape[0]
        x_NO, target_NO = x_NSD.reshape(n, -1), target_NSD.reshape(n, -1)
        if self.options["activation"] == "relu":
            recon_NO, codes_NF, l1 = self._relu_parts(x_NSD, x_NO)
            aux = recon_NO.new_zeros(())
            sparsity = self.options["l1_coeff"] * step.sparsity_scale * l1
        else:
            recon_NO, codes_NF, aux = self._topk_parts(x_NSD, x_NO, target_NO, step)
            sparsity = recon_NO.new_zeros(())
        mse = reconstruction_mse(recon_NO, target_NO)
        out = LossOutput(mse + sparsity + aux, loss_terms(mse, sparsity, aux), recon_NO.view_as(x_NSD), codes_NF)
        return checked_output(self, out)

    def _relu_parts(self, x_NSD: Tensor, x_NO: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(flat reconstruction [N, S*D], codes, l1 penalty)."""
        if not self._fast_path_applies(x_NO):
            recon_NSD, codes_NF, _ = self(x_NSD)
            return recon_NSD.reshape(x_NO.shape), codes_NF, self.l1_penalty(codes_NF)
        W_enc_IF, W_dec_FO, b_dec_O = self._flat()
        weight_F = self.W_dec.norm(dim=2).sum(1)
        centre_O = b_dec_O if self.apply_b_dec_to_input else None
        recon_NO, codes_NF, l1 = relu_autoencode(x_NO, W_enc_IF, self.b_enc, centre_O, W_dec_FO, weight_F,
                                                 self.max_sparse_density)
        return recon_NO + b_dec_O, codes_NF, l1

    def _topk_parts(self, x_NSD: Tensor, x_NO: Tensor, target_NO: Tensor, step: StepInput
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """(flat reconstruction [N, S*D], codes, aux term)."""
        if not self._fast_path_applies(x_NO):
            recon_NSD, codes_NF, pre_NF = self(x_NSD)
            recon_NO = recon_NSD.reshape(x_NO.shape)
            return recon_NO, codes_NF, self._aux_term(pre_NF, target_NO - recon_NO, step, codes_NF)
        W_enc_IF, W_dec_FO, b_dec_O = self._flat()
        selected = fast_topk.autoencode(x_NO, W_enc_IF, self.b_enc, b_dec_O if self.apply_b_dec_to_input else None,
                                        W_dec_FO, b_dec_O, self.options["k"])
        aux = self._aux_term_sparse(selected.encoding, selected.recon_NO,
                                    SparseCodes(selected.values_NK, selected.indices_NK), W_dec_FO, target_NO, step)
        codes_NF = fast_topk.recycle_into_codes(selected.encoding, selected.indices_NK, selected.values_NK)
        return selected.recon_NO, codes_NF, aux

    # ----- training support ----------------------------------------------------------------

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Top-k: scale each latent's whole decoder ``[S, D]`` to unit norm. ReLU: a no-op."""
        if self.unit_norm_decoder:
            W_dec_FO = self.W_dec.view(self.d_sae, -1)
            W_dec_FO /= W_dec_FO.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Top-k: remove from W_dec's gradient its component along each latent's decoder."""
        grad = self.W_dec.grad
        if not self.unit_norm_decoder or grad is None:
            return
        if not grad.is_contiguous():
            self.W_dec.grad = grad = grad.contiguous()  # so that the flat view below writes through
        _remove_radial_(grad.view(self.d_sae, -1), self.W_dec.view(self.d_sae, -1))

    @torch.no_grad()
    def init_b_dec_(self, sample_NSD: Tensor, method: str = "geometric_median") -> None:
        """Set each source's b_dec to the geometric median or mean of that source's sample rows."""
        sample_NSD = self._inputs(sample_NSD, "b_dec sample")
        if method not in ("geometric_median", "mean"):
            raise MonosemanticError(f"init_b_dec_ method {method!r} is unknown; expected geometric_median or mean")
        for s in range(self.n_sources):
            rows_ND = sample_NSD[:, s]
            self.b_dec[s] = geometric_median(rows_ND) if method == "geometric_median" else rows_ND.float().mean(0)

    @torch.no_grad()
    def fold_scale_(self, scale_in: float | Sequence[float] | Tensor, scale_out=None) -> None:
        """Make a crosscoder trained on ``x_s * c_s`` act on raw rows; ``scale_in`` is c (one or S values).

        Sources need not share a scale, so codes cannot be rescaled to every source's units at
        once: unlike single-site dictionaries, the codes keep their training values, and each
        source's encoder slice takes ``c_s`` while its decoder slice and bias take ``1 / c_s``.
        Afterwards ``forward(x)`` gives the old codes of ``x * c`` and reconstructions divided
        by ``c`` per source, and ``decoder_norms()`` are in each source's raw units.
        """
        scales_S = self._scales(scale_in, "scale_in")
        if scale_out is not None and not torch.equal(self._scales(scale_out, "scale_out"), scales_S):
            raise MonosemanticError("a crosscoder reconstructs its inputs, so scale_out must equal scale_in "
                                    f"(or be left out); got {scale_out!r} and {scale_in!r}")
        scales_S = scales_S.to(self.W_enc.device, self.W_enc.dtype)
        self.W_enc.mul_(scales_S[:, None, None])
        self.W_dec.div_(scales_S[None, :, None])
        self.b_dec.div_(scales_S[:, None])

    def _scales(self, value, name: str) -> Tensor:
        values = [value] * self.n_sources if isinstance(value, (int, float)) else list(torch.as_tensor(value).flatten())
        if len(values) != self.n_sources:
            raise MonosemanticError(f"fold_scale_ {name} needs one scale or {self.n_sources} (one per source); "
                                    f"got {len(values)}")
        return torch.tensor([_positive(name, v) for v in values], dtype=torch.float64)

    def extra_repr(self) -> str:
        return (f"arch='crosscoder', n_sources={self.n_sources}, d_in={self.d_in}, d_sae={self.d_sae}, "
                f"activation={self.options['activation']!r}")
