"""Transcoders at many layers at once: a replacement for a model's MLPs (issue 15).

Both architectures read the MLP inputs of S layers and predict their MLP outputs, rows
``[N, S, D]`` in and ``[N, S, D_out]`` out. Each layer has its own encoder and F latents, so
``d_sae = S * F`` counts every latent, layer-major (latent ``s * F + f`` is layer s's f-th):

    pre_s   = x_s @ W_enc[s] + b_enc[s]          # [N, F] per layer
    codes_s = the top k of pre_s, ReLU'd         # k per layer

- ``transcoders`` (per-layer transcoders): layer s's latents write to layer s only,
  ``out_s = codes_s @ W_dec[s] + b_dec[s]``. ``W_dec [S, F, D_out]``.
- ``clt`` (cross-layer transcoder, Ameisen et al. 2025): layer s's latents write to layer s
  and every later one, ``out_t = sum_{s <= t} codes_s @ W_dec[s][:, t - s] + b_dec[t]``. The
  decoder of source layer s is ``W_dec.s [F, S - s, D_out]``, the layout circuit-tracer uses.

An optional skip path adds ``x_t @ W_skip[t].T`` per layer. Codes are top-k per layer (the
``activation`` option; ``relu`` and ``jumprelu``, with a per-latent ``threshold``, exist for
transcoders read from circuit-tracer and Gemma Scope files and do not train here), so there is no
sparsity penalty; each latent's whole decoder (over the layers it writes to) is
kept at unit norm, and an AuxK term per layer (``aux_k`` dead latents of each layer, default
4k, ``aux_coeff`` 1/32) revives dead latents. Decoding goes through ``embedding_bag`` over the
selected rows only, so a CLT's decoder costs k rows per layer, not S times a dense GEMM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from ..errors import MonosemanticError
from .auxk import dead_in_batch
from .base import (
    Dictionary,
    DictionaryOutput,
    _positive,
    _remove_radial_,
    checked_output,
    reconstruction_mse,
    step_input,
)
from .median import geometric_median
from .options import check_float, check_int
from .registry import register
from .step import LossOutput, SparseCodes, StepInput, loss_terms

ACTIVATIONS = ("topk", "relu", "jumprelu")


class LayeredTranscoder(Dictionary):
    """Shared by per-layer and cross-layer transcoders: per-layer top-k encoders over ``[N, S, D]`` rows."""

    OPTIONS = {"n_layers": None, "sites_in": None, "sites_out": None, "activation": "topk", "k": None,
               "aux_k": None, "aux_coeff": 1 / 32}
    EXAMPLE = {"n_layers": 2, "k": 4}
    FLOAT32_TENSORS = ("threshold",)
    SUPPORTS_INPUT_NORM = False  # its own encode and decode over [N, S, D] rows
    LATENT_BIASES = ()  # resampling is for single-site dictionaries

    @classmethod
    def resolve_options(cls, config):
        if config.options.get("apply_b_dec_to_input") is None:  # the base's default centres autoencoders
            config = replace(config, options={**config.options, "apply_b_dec_to_input": False})
        return super().resolve_options(config)

    @classmethod
    def _check_options(cls, options, config):
        if options["apply_b_dec_to_input"]:
            raise MonosemanticError(f"{cls.arch} reads MLP inputs and writes MLP outputs, so it cannot centre its "
                                    "inputs by b_dec; leave apply_b_dec_to_input unset")
        sites = {}
        for name in ("sites_in", "sites_out"):
            value = options[name]
            if value is not None and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise MonosemanticError(f"{cls.arch} option {name}={value!r} is invalid; expected a list of site "
                                        "names, one per layer")
            sites[name] = value
        given = [len(v) for v in sites.values() if v is not None]
        n = options["n_layers"] if options["n_layers"] is not None else (given[0] if given else None)
        if n is None:
            raise MonosemanticError(f"{cls.arch} needs n_layers=... or sites_in=[...] (one MLP input per layer)")
        options["n_layers"] = check_int(cls.arch, "n_layers", n, 1)
        if any(g != n for g in given):
            raise MonosemanticError(f"{cls.arch} has n_layers={n} but {given} site names; give one site per layer "
                                    "in sites_in and sites_out")
        if config.d_sae % n:
            raise MonosemanticError(f"{cls.arch} d_sae={config.d_sae} counts the latents of all {n} layers, so it "
                                    f"must be a multiple of n_layers; try d_sae={n * max(1, config.d_sae // n)}")
        if options["activation"] not in ACTIVATIONS:
            raise MonosemanticError(f"{cls.arch} option activation={options['activation']!r} is invalid; expected "
                                    f"one of {', '.join(ACTIVATIONS)}")
        if options["activation"] == "topk":
            if options["k"] is None:
                raise MonosemanticError(f"dictionary arch {cls.arch!r} needs option(s) k; pass e.g. k=...")
            options["k"] = check_int(cls.arch, "k", options["k"], 1, config.d_sae // n)
            aux_k = min(4 * options["k"], config.d_sae // n) if options["aux_k"] is None else options["aux_k"]
            options["aux_k"] = check_int(cls.arch, "aux_k", aux_k, 1, config.d_sae // n)
            options["aux_coeff"] = check_float(cls.arch, "aux_coeff", options["aux_coeff"])
        elif options["k"] is not None:
            raise MonosemanticError(f"{cls.arch} option k is for activation 'topk'; got activation="
                                    f"{options['activation']!r}")
        return options

    @classmethod
    def sparsity_option(cls, options=None) -> str | None:
        return "k" if (options or {}).get("activation", "topk") == "topk" else None

    # ----- shape ---------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return self.options["n_layers"]

    @property
    def per_layer(self) -> int:
        """F: latents per layer."""
        return self.d_sae // self.n_layers

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n_layers, self.d_in)

    @property
    def sites(self) -> list[str | None]:
        return list(self.options["sites_in"] or [None] * self.n_layers)

    @property
    def sites_out(self) -> list[str | None]:
        return list(self.options["sites_out"] or [None] * self.n_layers)

    @property
    def is_transcoder(self) -> bool:
        return True

    def _init_encoder(self) -> None:
        S, D, F, D_out = self.n_layers, self.d_in, self.per_layer, self.d_out
        W_enc_SDF = torch.randn(S, D, F)
        self.W_enc = nn.Parameter(W_enc_SDF / W_enc_SDF.norm(dim=1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(S * F))
        self.b_dec = nn.Parameter(torch.zeros(S, D_out))
        if self.config.skip:
            self.W_skip = nn.Parameter(torch.zeros(S, D_out, D))  # zero: a new transcoder starts as a dictionary
        if self.options["activation"] == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(S * F))  # read from files; codes are pre * (pre > threshold)

    def _rows3(self, t: Tensor, width: int, what: str) -> Tensor:
        S = self.n_layers
        if not isinstance(t, Tensor) or t.ndim != 3 or tuple(t.shape[1:]) != (S, width) or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise MonosemanticError(f"{self.arch} {what} must be a floating [rows, {S}, {width}] tensor (rows, "
                                    f"layers, width); got {got}; stack the layers' rows with torch.stack(..., dim=1)")
        return t.to(self.W_enc.dtype)

    # ----- the computation -------------------------------------------------------------------

    def pre_acts(self, x_NSD: Tensor) -> Tensor:
        """Encoder pre-activations ``[N, S * F]`` (layer-major)."""
        x_NSD = self._rows3(x_NSD, self.d_in, "input")
        pre_SNF = torch.baddbmm(self.b_enc.view(self.n_layers, 1, -1), x_NSD.transpose(0, 1), self.W_enc)
        return pre_SNF.transpose(0, 1).reshape(x_NSD.shape[0], -1)

    def _select(self, pre_NSF: Tensor) -> SparseCodes:
        """The top k of each layer, as flat latent indices ``[N, S * k]`` (activation 'topk')."""
        values_NSK, indices_NSK = pre_NSF.topk(self.options["k"], dim=-1)
        offsets_S1 = torch.arange(pre_NSF.shape[1], device=pre_NSF.device)[:, None] * pre_NSF.shape[2]
        return SparseCodes(torch.relu(values_NSK).flatten(1), (indices_NSK + offsets_S1).flatten(1))

    def _activate(self, pre_NF: Tensor) -> Tensor:
        return self._activate_layers(pre_NF.view(pre_NF.shape[0], self.n_layers, -1), slice(None)).flatten(1)

    def _activate_layers(self, pre_NSF: Tensor, layers: slice) -> Tensor:
        """Codes of pre-activations ``[N, S', F]`` of the layers ``layers`` selects."""
        activation = self.options["activation"]
        if activation == "relu":
            return torch.relu(pre_NSF)
        if activation == "jumprelu":
            threshold_SF = self.threshold.view(self.n_layers, -1)[layers]
            return pre_NSF * (pre_NSF > threshold_SF)
        codes = self._select(pre_NSF)
        return torch.zeros_like(pre_NSF).flatten(1).scatter(-1, codes.indices, codes.values).view_as(pre_NSF)

    def encode_layer(self, x_ND: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """(pre-activations, codes), both ``[N, F]``, of one layer's MLP inputs ``[N, D]``."""
        pre_NF = torch.addmm(self.b_enc.view(self.n_layers, -1)[layer], x_ND.to(self.W_enc.dtype), self.W_enc[layer])
        return pre_NF, self._activate_layers(pre_NF[:, None], slice(layer, layer + 1))[:, 0]

    def decoder_rows(self, layer: int) -> dict[int, Tensor]:
        """``{target layer: [F, D_out]}``: where layer ``layer``'s latents write."""
        raise NotImplementedError

    def skip_out(self, x_ND: Tensor, layer: int) -> Tensor | None:
        """The skip path's output at ``layer`` (None without one)."""
        return x_ND.to(self.W_enc.dtype) @ self.W_skip[layer].T if self.config.skip else None

    def decode(self, codes_NF: Tensor, x_NSD: Tensor | None = None) -> Tensor:
        """Outputs ``[N, S, D_out]`` of dense codes ``[N, S * F]`` (pass x when there is a skip path)."""
        if not isinstance(codes_NF, Tensor) or codes_NF.ndim != 2 or codes_NF.shape[1] != self.d_sae:
            got = tuple(codes_NF.shape) if isinstance(codes_NF, Tensor) else type(codes_NF).__name__
            raise MonosemanticError(f"{self.arch} codes must be a [rows, {self.d_sae}] tensor; got {got}")
        return self._finish(self._decode_dense(codes_NF), x_NSD)

    def decode_sparse(self, codes: SparseCodes, x_NSD: Tensor | None = None) -> Tensor:
        """``decode`` of the selected entries (flat latent indices), touching only their decoder rows."""
        return self._finish(self._decode_selected(codes), x_NSD)

    def _finish(self, out_NSD: Tensor, x_NSD: Tensor | None) -> Tensor:
        out_NSD = out_NSD + self.b_dec
        if not self.config.skip:
            return out_NSD
        if x_NSD is None:
            raise MonosemanticError(f"this {self.arch} has a skip path, so decode needs the input too; call "
                                    "decode(codes, x)")
        x_NSD = self._rows3(x_NSD, self.d_in, "input")
        return out_NSD + torch.bmm(x_NSD.transpose(0, 1), self.W_skip.transpose(1, 2)).transpose(0, 1)

    def forward(self, x_NSD: Tensor) -> DictionaryOutput:
        pre_NF = self.pre_acts(x_NSD)
        codes_NF = self._activate(pre_NF)
        return DictionaryOutput(self.decode(codes_NF, x_NSD), codes_NF, pre_NF)

    def loss(self, x_NSD: Tensor, target_NSD: Tensor | None = None, step: StepInput | None = None) -> LossOutput:
        """Training loss on rows ``[N, S, D]`` and targets ``[N, S, D_out]``; the error is summed over layers."""
        x_NSD = self._rows3(x_NSD, self.d_in, "input")
        if target_NSD is None:
            raise MonosemanticError(f"a {self.arch}'s loss needs the MLP outputs too; call loss(x, target)")
        if self.options["activation"] != "topk":
            raise MonosemanticError(f"only top-k {self.arch} train here; activation {self.options['activation']!r} "
                                    "is for transcoders read from circuit-tracer or Gemma Scope files")
        target_NSD = self._rows3(target_NSD, self.d_out, "target")
        if target_NSD.shape[0] != x_NSD.shape[0]:
            raise MonosemanticError(f"{self.arch} got {x_NSD.shape[0]} input rows but {target_NSD.shape[0]} target "
                                    "rows; pass the same tokens' rows")
        step = step_input(step, self.d_sae)
        pre_NF = self.pre_acts(x_NSD)
        codes = self._select(pre_NF.view(x_NSD.shape[0], self.n_layers, -1))
        out_NSD = self.decode_sparse(codes, x_NSD)
        n = x_NSD.shape[0]
        mse = reconstruction_mse(out_NSD.reshape(n, -1), target_NSD.reshape(n, -1))
        aux = self._aux_term(pre_NF, (target_NSD - out_NSD).detach(), step, codes)
        codes_NF = torch.zeros_like(pre_NF).scatter(-1, codes.indices, codes.values) if step.dense_codes else None
        return checked_output(self, LossOutput(mse + aux, loss_terms(mse, aux=aux), out_NSD, codes_NF, codes))

    def _aux_term(self, pre_NF: Tensor, residual_NSD: Tensor, step: StepInput, codes: SparseCodes) -> Tensor:
        """AuxK (Gao et al. 2024) per layer: each layer's ``aux_k`` largest dead pre-activations decode the residual.

        Dead is the trainer's mask less the latents that fire in this batch, as for the top-k
        family; without a mask, outside training or with ``aux_coeff`` 0 the term is 0.
        """
        zero = pre_NF.new_zeros((), dtype=torch.float32)
        dead_F = None if not self.training or self.options["aux_coeff"] == 0 else dead_in_batch(
            step, codes, self.d_sae, pre_NF.device)
        if dead_F is None:
            return zero
        dead_SF = dead_F.view(self.n_layers, -1)
        k = min(self.options["aux_k"], int(dead_SF.sum(1).max()))
        # Live latents are pushed to -inf, so a layer with fewer than k dead ones selects zeros for the rest.
        masked_NSF = pre_NF.view(pre_NF.shape[0], self.n_layers, -1).masked_fill(~dead_SF, float("-inf"))
        values_NSK, indices_NSK = masked_NSF.topk(k, dim=-1, sorted=False)
        offsets_S1 = torch.arange(self.n_layers, device=pre_NF.device)[:, None] * self.per_layer
        aux_codes = SparseCodes(torch.relu(values_NSK).flatten(1), (indices_NSK + offsets_S1).flatten(1))
        recon_NSD = self._decode_selected(aux_codes)
        n = residual_NSD.shape[0]
        return self.options["aux_coeff"] * reconstruction_mse(recon_NSD.reshape(n, -1), residual_NSD.reshape(n, -1))

    # ----- training support --------------------------------------------------------------------

    def _decode_dense(self, codes_NF: Tensor) -> Tensor:
        """``[N, S, D_out]`` decoder outputs of dense codes, without biases or skip path."""
        raise NotImplementedError

    def _decode_selected(self, codes: SparseCodes) -> Tensor:
        """``_decode_dense`` of the selected entries."""
        raise NotImplementedError

    def _decoders(self) -> list[Tensor]:
        """Each source layer's decoder as ``[F, width]`` rows (a latent's whole output is one row)."""
        raise NotImplementedError

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        for W_FO in self._decoders():
            W_FO /= W_FO.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        for W_FO, grad in zip(self._decoders(), self._decoder_grads()):
            if grad is not None:
                _remove_radial_(grad, W_FO)

    def _decoder_grads(self) -> list[Tensor | None]:
        raise NotImplementedError

    @torch.no_grad()
    def init_b_dec_(self, sample_NSD: Tensor, method: str = "geometric_median") -> None:
        """Each layer's b_dec from a sample of that layer's outputs (geometric median or mean)."""
        sample_NSD = self._rows3(sample_NSD, self.d_out, "b_dec sample")
        if method not in ("geometric_median", "mean"):
            raise MonosemanticError(f"init_b_dec_ method {method!r} is unknown; expected geometric_median or mean")
        for s in range(self.n_layers):
            rows_ND = sample_NSD[:, s]
            self.b_dec[s] = geometric_median(rows_ND) if method == "geometric_median" else rows_ND.float().mean(0)

    @torch.no_grad()
    def fold_scale_(self, scale_in: float | Sequence[float] | Tensor, scale_out=None) -> None:
        """Make a dictionary trained on ``x_s * c_s`` predicting ``y_t * o_t`` act on raw rows.

        Codes keep their training values (a CLT latent writes to layers of different scales, so
        no one factor puts its code in every layer's units): encoders take ``c_s``, each layer's
        decoders and bias ``1 / o_t``, the skip path ``c_t / o_t``.
        """
        c_S = self._scales(scale_in, "scale_in")
        o_S = c_S if scale_out is None else self._scales(scale_out, "scale_out")
        c_S, o_S = (s.to(self.W_enc.device, self.W_enc.dtype) for s in (c_S, o_S))
        self.W_enc.mul_(c_S[:, None, None])
        self._divide_decoders_(o_S)
        self.b_dec.div_(o_S[:, None])
        if self.config.skip:
            self.W_skip.mul_((c_S / o_S)[:, None, None])

    def _divide_decoders_(self, o_S: Tensor) -> None:
        raise NotImplementedError

    def _scales(self, value, name: str) -> Tensor:
        S = self.n_layers
        values = [value] * S if isinstance(value, (int, float)) else list(torch.as_tensor(value).flatten())
        if len(values) != S:
            raise MonosemanticError(f"fold_scale_ {name} needs one scale or {S} (one per layer); got {len(values)}")
        return torch.tensor([_positive(name, v) for v in values], dtype=torch.float64)

    def extra_repr(self) -> str:
        skip = ", skip" if self.config.skip else ""
        return (f"arch={self.arch!r}, n_layers={self.n_layers}, d_in={self.d_in}, per_layer={self.per_layer}, "
                f"d_out={self.d_out}, k={self.options['k']}{skip}")


@register("transcoders")
class PerLayerTranscoders(LayeredTranscoder):
    """Parameters ``W_enc [S, D, F]``, ``b_enc [S*F]``, ``W_dec [S, F, D_out]``, ``b_dec [S, D_out]``."""

    SUMMARY = "one top-k transcoder per layer (MLP input -> MLP output), trained together: a replacement model"

    def _init_parameters(self) -> None:
        self._init_encoder()
        W_dec_SFD = torch.randn(self.n_layers, self.per_layer, self.d_out)
        self.W_dec = nn.Parameter(W_dec_SFD / W_dec_SFD.norm(dim=2, keepdim=True))

    def _decode_dense(self, codes_NF: Tensor) -> Tensor:
        codes_SNF = codes_NF.view(codes_NF.shape[0], self.n_layers, -1).transpose(0, 1)
        return torch.bmm(codes_SNF, self.W_dec).transpose(0, 1)

    def _decode_selected(self, codes: SparseCodes) -> Tensor:
        n, S = codes.values.shape[0], self.n_layers
        # One bag per (row, layer): a layer's k entries sum into that layer's output only.
        out = F_.embedding_bag(codes.indices.reshape(n * S, -1), self.W_dec.view(-1, self.d_out),
                               per_sample_weights=codes.values.reshape(n * S, -1).to(self.W_dec.dtype), mode="sum")
        return out.view(n, S, self.d_out)

    def decoder_rows(self, layer: int) -> dict[int, Tensor]:
        """``{target layer: [F, D_out]}``: where layer ``layer``'s latents write."""
        return {layer: self.W_dec[layer]}

    def _decoders(self) -> list[Tensor]:
        return list(self.W_dec)

    def _decoder_grads(self) -> list[Tensor | None]:
        grad = self.W_dec.grad
        return [None] * self.n_layers if grad is None else list(grad)

    def _divide_decoders_(self, o_S: Tensor) -> None:
        self.W_dec.div_(o_S[:, None, None])


@register("clt")
class CrossLayerTranscoder(LayeredTranscoder):
    """Parameters ``W_enc [S, D, F]``, ``b_enc [S*F]``, ``W_dec.s [F, S - s, D_out]``, ``b_dec [S, D_out]``."""

    SUMMARY = "cross-layer transcoder: latents read at one layer write to that MLP output and every later one"

    def _init_parameters(self) -> None:
        self._init_encoder()
        S, F, D_out = self.n_layers, self.per_layer, self.d_out
        decoders = []
        for s in range(S):
            W_FTD = torch.randn(F, S - s, D_out)
            decoders.append(nn.Parameter(W_FTD / W_FTD.flatten(1).norm(dim=1)[:, None, None]))
        self.W_dec = nn.ParameterList(decoders)

    def _decode_dense(self, codes_NF: Tensor) -> Tensor:
        n, S = codes_NF.shape[0], self.n_layers
        codes_NSF = codes_NF.view(n, S, -1)
        out = codes_NF.new_zeros(n, S, self.d_out)
        for s, W_FTD in enumerate(self.W_dec):
            out[:, s:] += (codes_NSF[:, s] @ W_FTD.flatten(1)).view(n, S - s, self.d_out)
        return out

    def _decode_selected(self, codes: SparseCodes) -> Tensor:
        n, S, F = codes.values.shape[0], self.n_layers, self.per_layer
        values_NSK = codes.values.view(n, S, -1)
        local_NSK = codes.indices.view(n, S, -1) % F
        parts = []
        for s, W_FTD in enumerate(self.W_dec):
            # Source layer s writes [S - s] layers; layers before s get nothing from it.
            part = F_.embedding_bag(local_NSK[:, s], W_FTD.flatten(1), per_sample_weights=values_NSK[:, s]
                                    .to(W_FTD.dtype), mode="sum").view(n, S - s, self.d_out)
            parts.append(F_.pad(part, (0, 0, s, 0)))
        return torch.stack(parts).sum(0)

    def decoder_rows(self, layer: int) -> dict[int, Tensor]:
        """``{target layer: [F, D_out]}``: where layer ``layer``'s latents write."""
        W_FTD = self.W_dec[layer]
        return {layer + t: W_FTD[:, t] for t in range(W_FTD.shape[1])}

    def _decoders(self) -> list[Tensor]:
        return [W.view(W.shape[0], -1) for W in self.W_dec]

    def _decoder_grads(self) -> list[Tensor | None]:
        grads = []
        for W in self.W_dec:
            if W.grad is not None and not W.grad.is_contiguous():
                W.grad = W.grad.contiguous()  # so that the flat view below writes through
            grads.append(None if W.grad is None else W.grad.view(W.shape[0], -1))
        return grads

    def _divide_decoders_(self, o_S: Tensor) -> None:
        for s, W_FTD in enumerate(self.W_dec):
            W_FTD.div_(o_S[s:][None, :, None])
