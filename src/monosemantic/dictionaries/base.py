"""The interface every dictionary shares, and the parts that do not depend on the architecture.

Parameters use the row-vector layout of SAELens: ``W_enc [D, F]``, ``b_enc [F]``,
``W_dec [F, D_out]``, ``b_dec [D_out]`` and, for transcoders with a skip connection,
``W_skip [D_out, D]`` applied as ``x @ W_skip.T``. An architecture supplies its activation
(``_activate``) and its loss (``_loss``); everything else lives here.

Reconstruction error has one convention everywhere (:func:`reconstruction_mse`): squared error
summed over the output width, averaged over rows.

A training step, for every architecture (the trainer passes its run state in, see step.py)::

    out = dictionary.loss(x_ND, target_ND, StepInput(sparsity_scale=warmup, dead_F=dead))   # target None for SAEs
    optimizer.zero_grad(); out.loss.backward()
    dictionary.project_decoder_grad_(); optimizer.step(); dictionary.normalize_decoder_()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from .. import kernels
from ..errors import MonosemanticError
from ..kernels import scratch
from .config import DictionaryConfig
from .input_norm import check_input_norm, denormalize_rows, normalize_rows
from .median import geometric_median
from .options import check_bool, check_float, check_names
from .step import LossOutput, SparseCodes, StepInput

__all__ = ["Dictionary", "DictionaryConfig", "DictionaryOutput", "LossOutput", "SparseCodes", "StepInput",
           "reconstruction_mse", "require_single_site", "sites_spanned"]


class DictionaryOutput(NamedTuple):
    """What ``Dictionary.forward`` returns."""

    recon: Tensor  # [N, D_out] reconstruction (the output-site prediction for transcoders)
    codes: Tensor  # [N, F] latent activations, dense
    pre_acts: Tensor  # [N, F] encoder pre-activations (the gate's for gated dictionaries)


def reconstruction_mse(recon_ND: Tensor, target_ND: Tensor) -> Tensor:
    """Squared error summed over the width, averaged over rows (computed in float32 at least)."""
    return _SquaredError.apply(recon_ND.float(), target_ND.float())


class _SquaredError(torch.autograd.Function):
    """``||recon - target||^2 / rows`` in two passes forward and one backward.

    Autograd of ``(recon - target).pow(2).sum()`` takes five passes over ``[N, D]``, and
    ``mse_loss``'s backward zero-fills a fresh gradient before writing it; here the residual and
    its gradient also come from the scratch pool. At N=4096, D=576 this measured ~4.5 ms a step
    as ``mse_loss`` and ~1.8 ms here.
    """

    @staticmethod
    def forward(ctx, recon: Tensor, target: Tensor) -> Tensor:
        diff = torch.sub(recon, target, out=scratch.new_empty(recon))
        ctx.save_for_backward(diff)
        flat = diff.reshape(-1)
        return torch.dot(flat, flat) / recon.shape[0]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (diff,) = ctx.saved_tensors
        grad_recon = torch.mul(diff, 2 * grad / diff.shape[0], out=scratch.new_empty(diff))
        return grad_recon, (-grad_recon if ctx.needs_input_grad[1] else None)


def check_paired_rows(x: Tensor, target: Tensor) -> None:
    """MonosemanticError unless input and target rows pair up."""
    if target.shape[0] != x.shape[0]:
        raise MonosemanticError(f"input has {x.shape[0]} rows but target has {target.shape[0]}; "
                                "pass rows from the same tokens")


# Options every architecture accepts. None means "chosen from the config" (see resolve_options).
# input_norm normalises each input row before encoding and undoes it on the reconstruction, as
# openai's top-k autoencoders and SAELens's normalize_activations do (see input_norm.py); it is
# for imported dictionaries: training one is refused.
# Dictionaries trained with a sparsity penalty start from decoder rows of norm 0.1 (Anthropic's
# April 2024 update; SAELens' default): the first reconstructions are then small instead of the sum
# of half the latents at full size, which a short run never recovers from (benchmarks/recipes.py:
# on SmolLM2 layer 6, 1M rows, a weighted-L1 ReLU at coefficient 2.4 reaches held-out FVU 0.216
# instead of 0.454 at the same L0). Top-k dictionaries keep unit rows, as Gao et al.'s do.
PENALTY_DECODER_INIT_NORM = 0.1
# decoder_init_norm is the norm of every decoder row at initialisation (the tied encoder is scaled
# with it); None takes the class's DECODER_INIT_NORM.
COMMON_OPTIONS: dict[str, Any] = {"apply_b_dec_to_input": None, "input_norm": "none", "decoder_init_norm": None}


class Dictionary(nn.Module):
    """A sparse dictionary: encode activations to sparse codes, decode codes back.

    Subclasses set ``OPTIONS`` (name -> default) and ``REQUIRED``, implement ``_activate`` and
    ``_loss``, and are registered with :func:`monosemantic.dictionaries.register`.
    """

    arch: ClassVar[str] = ""
    # ----- what the rest of the toolkit reads about an architecture (docs/adding_an_architecture.md)
    SUMMARY: ClassVar[str] = ""  # one line for `monosemantic archs` and help texts
    SPARSITY_OPTION: ClassVar[str | None] = None  # the option a sweep varies (see sparsity_option)
    LATENT_BIASES: ClassVar[tuple[str, ...]] = ("b_enc",)  # per-latent encoder biases resampling zeroes
    TRAINABLE: ClassVar[bool] = True  # False for closed-form baselines, which no Trainer fits
    EXAMPLE: ClassVar[dict[str, Any]] = {}  # options that make a small working instance (tests, docs)
    # Norm of each decoder row (and of the tied encoder's columns) at initialisation.
    DECODER_INIT_NORM: ClassVar[float] = 1.0
    OPTIONS: ClassVar[dict[str, Any]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    # Options (name -> what to do instead) and tensors that older saves hold but that no longer
    # mean anything here: dropped, an option with a warning.
    RETIRED_OPTIONS: ClassVar[dict[str, str]] = {}
    RETIRED_TENSORS: ClassVar[tuple[str, ...]] = ()
    # Options added after saves existed (name -> the value those saves trained with), so that a
    # resumed run compares like with like.
    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Options that only shape the initial weights: a run that resumes from weights may differ in them.
    INIT_ONLY_OPTIONS: ClassVar[tuple[str, ...]] = ("decoder_init_norm",)
    # Tensors stored as logarithms, where -inf stands for 0 (an imported JumpReLU's zero threshold).
    LOG_TENSORS: ClassVar[tuple[str, ...]] = ()
    # Tensors kept float32 whatever dtype the module is moved to (thresholds need the precision).
    FLOAT32_TENSORS: ClassVar[tuple[str, ...]] = ()
    HAS_B_ENC: ClassVar[bool] = True
    # Whether a copy that never trained needs calibrate_ to be as sparse as a trained one:
    # BatchTopK's inference threshold is learned apart from the weights, and JumpReLU's
    # thresholds start where no data has put them, so untrained copies of either are dense.
    CALIBRATES: ClassVar[bool] = False
    # Whether pre_acts/decode go through the base class, so that input_norm applies.
    SUPPORTS_INPUT_NORM: ClassVar[bool] = True
    # Whether loss() may take the hand-written training paths (monosemantic.kernels) where they
    # apply (CPU, float32/float64). They give the same values and gradients as plain autograd;
    # set False on an instance to get the plain computation, e.g. to compare the two.
    fast_path: bool = True

    def __init__(self, config: DictionaryConfig):
        super().__init__()
        if config.arch != self.arch:
            raise MonosemanticError(
                f"config arch {config.arch!r} does not match {type(self).__name__} ({self.arch!r}); "
                "build dictionaries with make_dictionary or dictionary_from_config")
        self.config = replace(config, options=self.resolve_options(config))
        # RETIRED_TENSORS an older save held, as loaded: not state, but part of that save's identity
        # (the fingerprints of feature folders made from it cover them).
        self.retired_state: dict[str, Tensor] = {}
        self._init_parameters()

    def _init_parameters(self) -> None:
        """Create the parameters (architectures with other shapes override this)."""
        config = self.config
        D, F, D_out = config.d_in, config.d_sae, self.d_out
        W_dec_FD = torch.randn(F, D_out)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        init = self.options["decoder_init_norm"]
        if init != 1.0:
            W_dec_FD *= init
        self.W_dec = nn.Parameter(W_dec_FD)
        # Tied initialisation (Conerly et al. 2024; Gao et al. 2024) where the widths allow it.
        W_enc_DF = W_dec_FD.T if D_out == D else _unit_columns(D, F) * init
        self.W_enc = nn.Parameter(kernels.f_major(W_enc_DF))
        if self.HAS_B_ENC:
            self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.Parameter(torch.zeros(D_out))
        if config.skip:
            # Zero so that a new transcoder starts as a pure dictionary.
            self.W_skip = nn.Parameter(torch.zeros(D_out, D))

    # ----- options -------------------------------------------------------------------------

    @classmethod
    def resolve_options(cls, config: DictionaryConfig) -> dict:
        """The config's options checked, with every default filled in."""
        known = {**COMMON_OPTIONS, **cls.OPTIONS}
        given = cls.live_options(config.options)
        for name in config.options.keys() - given.keys():
            warnings.warn(f"{cls.arch} option {name} no longer applies and is ignored: {cls.RETIRED_OPTIONS[name]}",
                          stacklevel=4)
        check_names(cls.arch, given, known, cls.REQUIRED)
        options = {**known, **given}
        apply = options["apply_b_dec_to_input"]
        apply = (not config.is_transcoder) if apply is None else check_bool(cls.arch, "apply_b_dec_to_input", apply)
        if apply and config.d_out != config.d_in:
            raise MonosemanticError(
                f"apply_b_dec_to_input needs d_out == d_in (got {config.d_out} and {config.d_in}); "
                "leave it unset for transcoders")
        options["apply_b_dec_to_input"] = apply
        options["input_norm"] = check_input_norm(cls.arch, options["input_norm"], cls.SUPPORTS_INPUT_NORM)
        init = options["decoder_init_norm"]
        options["decoder_init_norm"] = check_float(cls.arch, "decoder_init_norm",
                                                   cls.DECODER_INIT_NORM if init is None else init, low_open=True)
        return cls._check_options(options, config)

    @classmethod
    def live_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` without the retired ones (which older saves and checkpoints may hold)."""
        return {name: value for name, value in options.items() if name not in cls.RETIRED_OPTIONS}

    @classmethod
    def pop_retired(cls, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Remove the retired tensors an older save holds from ``tensors``; returns them."""
        return {name: tensors.pop(name) for name in cls.RETIRED_TENSORS if name in tensors}

    @classmethod
    def sparsity_option(cls, options: Mapping[str, Any] | None = None) -> str | None:
        """The option that sets this architecture's sparsity, given the other options (a sweep's axis)."""
        return cls.SPARSITY_OPTION

    @classmethod
    def _check_options(cls, options: dict, config: DictionaryConfig) -> dict:
        """Per-architecture validation and computed defaults; returns the final options."""
        return options

    @property
    def options(self) -> dict:
        return self.config.options

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    @property
    def d_out(self) -> int:
        d_out = self.config.d_out
        assert d_out is not None  # DictionaryConfig.__post_init__ resolves None to d_in
        return d_out

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input row's shape: ``(d_in,)``, or ``(n_sites, d_in)`` for a dictionary over several sites."""
        return (self.d_in,)

    @property
    def n_sites(self) -> int:
        """How many sites one input row spans: 1, or more for multi-site dictionaries (crosscoders)."""
        return sites_spanned(self.input_shape)

    @property
    def sites(self) -> list[str | None]:
        """The sites inputs are read from, one per input site (``[site_in]`` for single-site dictionaries)."""
        return [self.config.site_in]

    @property
    def is_transcoder(self) -> bool:
        """Whether it predicts another site's rows (targets) rather than reconstructing its input."""
        return self.config.is_transcoder

    @property
    def apply_b_dec_to_input(self) -> bool:
        """Whether inputs are centred by ``b_dec`` before encoding (autoencoders, not transcoders)."""
        return self.options["apply_b_dec_to_input"]

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether training keeps decoder rows at unit norm (False: the decoder is free)."""
        return True

    # ----- the computation -----------------------------------------------------------------

    def pre_acts(self, x_ND: Tensor) -> Tensor:
        """Encoder pre-activations ``[N, F]``."""
        x_ND = self._normalized_input(x_ND)
        if self.apply_b_dec_to_input:
            x_ND = x_ND - self.b_dec
        return x_ND @ self.W_enc + self.b_enc

    def _normalized_input(self, x_ND: Tensor) -> Tensor:
        """Input rows checked and, with ``input_norm``, normalised (what the encoder sees)."""
        x_ND = self._rows(x_ND, self.d_in, "input")
        return normalize_rows(x_ND, self.options["input_norm"])

    def _activate(self, pre_NF: Tensor) -> Tensor:
        raise NotImplementedError

    def _encode_parts(self, x_ND: Tensor) -> tuple[Tensor, Tensor]:
        """(pre_acts, codes); architectures whose codes are not a function of pre_acts override it."""
        pre_NF = self.pre_acts(x_ND)
        return pre_NF, self._activate(pre_NF)

    def encode(self, x_ND: Tensor) -> Tensor:
        """Codes ``[N, F]`` (dense) of inputs ``[N, D]``."""
        return self._encode_parts(x_ND)[1]

    def decode(self, codes_NF: Tensor, x_ND: Tensor | None = None) -> Tensor:
        """``codes @ W_dec + b_dec``, plus ``x @ W_skip.T`` when there is a skip connection (pass x)."""
        codes_NF = self._rows(codes_NF, self.d_sae, "codes")
        return self._add_skip(codes_NF @ self.W_dec + self.b_dec, x_ND)

    def _add_skip(self, recon_ND: Tensor, x_ND: Tensor | None) -> Tensor:
        """The decoder's output completed: input normalisation undone, then the skip path added."""
        if self.options["input_norm"] != "none":
            if x_ND is None:
                raise MonosemanticError(f"this dictionary normalises its inputs (input_norm="
                                        f"{self.options['input_norm']}), so decode needs the input too; "
                                        "call decode(codes, x)")
            recon_ND = denormalize_rows(recon_ND, self._rows(x_ND, self.d_in, "input"), self.options["input_norm"])
        if not self.config.skip:
            return recon_ND
        if x_ND is None:
            raise MonosemanticError("this transcoder has a skip connection, so decode needs the input too; "
                                    "call decode(codes, x)")
        return recon_ND + self._rows(x_ND, self.d_in, "input") @ self.W_skip.T

    def forward(self, x_ND: Tensor) -> DictionaryOutput:
        pre_NF, codes_NF = self._encode_parts(x_ND)
        return DictionaryOutput(self.decode(codes_NF, x_ND), codes_NF, pre_NF)

    def loss(self, x_ND: Tensor, target_ND: Tensor | None = None, step: StepInput | None = None) -> LossOutput:
        """Training loss on a batch; ``target`` defaults to the input (autoencoders).

        ``step`` carries the run's state (sparsity warm-up, dead latents, the process group);
        without it the loss is that of a lone step: full sparsity, no latent known dead.
        """
        x_ND = self._rows(x_ND, self.d_in, "input")
        if self.options["input_norm"] != "none":
            raise MonosemanticError(f"training a dictionary with input_norm={self.options['input_norm']} is not "
                                    "supported (it is for imported dictionaries); normalise the activations "
                                    "beforehand and train with input_norm='none'")
        if target_ND is None:
            if self.config.is_transcoder:
                raise MonosemanticError("a transcoder's loss needs the output site's activations; "
                                        "call loss(x, target)")
            target_ND = x_ND
        target_ND = self._rows(target_ND, self.d_out, "target")
        check_paired_rows(x_ND, target_ND)
        return checked_output(self, self._loss(x_ND, target_ND, step_input(step, self.d_sae)))

    def _loss(self, x_ND: Tensor, target_ND: Tensor, step: StepInput) -> LossOutput:
        raise NotImplementedError

    def _fast_path_applies(self, x: Tensor) -> bool:
        return kernels.serves(x, self.fast_path)

    def _rows(self, t: Tensor, width: int, what: str) -> Tensor:
        if not isinstance(t, Tensor) or t.ndim != 2 or t.shape[1] != width or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            kind = f" {t.dtype}" if isinstance(t, Tensor) and not t.is_floating_point() else ""
            raise MonosemanticError(f"{what} must be a floating [rows, {width}] tensor; got{kind} {got}; "
                                    f"reshape to (-1, {width})")
        return t.to(self.W_dec.dtype)

    # ----- training support ----------------------------------------------------------------

    def lr_scales(self) -> dict[str, float]:
        """Multipliers of the learning rate for named parameters (the rest train at the run's lr)."""
        return {}

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale decoder rows to unit norm (a no-op when ``unit_norm_decoder`` is False)."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from W_dec's gradient its component along each row, so a step keeps the norms.

        Call between ``backward()`` and ``optimizer.step()``; renormalise after the step anyway,
        because Adam rescales coordinates and a finite step is not tangent (a no-op when
        ``unit_norm_decoder`` is False).
        """
        grad = self.W_dec.grad
        if not self.unit_norm_decoder or grad is None:
            return
        _remove_radial_(grad, self.W_dec)

    @torch.no_grad()
    def calibrate_(self, x_ND: Tensor, l0: float | None = None) -> None:
        """Set the state that decides sparsity from rows ``x_ND`` (see CALIBRATES), the weights as they are.

        For copies that never trained, such as the untrained control. ``l0``: the mean number
        of active latents per row to match, the trained dictionary's on the same rows; an
        architecture whose target is an option (BatchTopK's k) keeps to that instead. A no-op
        unless the architecture calibrates.
        """

    @torch.no_grad()
    def init_b_dec_(self, sample_ND: Tensor, method: str = "geometric_median") -> None:
        """Set b_dec to the geometric median or mean of a sample of the output site's activations."""
        sample_ND = self._rows(sample_ND, self.d_out, "b_dec sample")
        if method == "geometric_median":
            centre = geometric_median(sample_ND)
        elif method == "mean":
            centre = sample_ND.float().mean(0)
        else:
            raise MonosemanticError(f"init_b_dec_ method {method!r} is unknown; expected geometric_median or mean")
        self.b_dec.copy_(centre)

    @torch.no_grad()
    def fold_scale_(self, scale_in: float | Sequence[float], scale_out: float | Sequence[float] | None = None) -> None:
        """Make a dictionary trained on scaled activations act on raw ones.

        Training saw ``x * scale_in`` and predicted ``target * scale_out`` (``scale_out``
        defaults to ``scale_in``). Afterwards ``forward(x)`` gives the old ``forward(x * scale_in)``
        divided by ``scale_out``, for both the reconstruction and the codes: codes shrink by
        ``1/scale_out`` while decoder rows keep their norms, so a code is the size of its
        latent's contribution in raw units. Every activation here is positively homogeneous
        (ReLU, top-k, thresholds), so scaling pre-activations, biases and thresholds by
        ``1/scale_out`` scales the codes by the same factor.

        Scales are single numbers here; one per source (a sequence) is for multi-site
        dictionaries, whose classes override this, and is refused with MonosemanticError.
        """
        if self.options["input_norm"] != "none":
            raise MonosemanticError(f"fold_scale_ does not apply with input_norm={self.options['input_norm']}: "
                                    "the normalisation already removes the input's scale")
        s_in = _positive("scale_in", scale_in)
        s_out = s_in if scale_out is None else _positive("scale_out", scale_out)
        if self.apply_b_dec_to_input and s_in != s_out:
            raise MonosemanticError("this dictionary centres inputs with b_dec, so input and output scales "
                                    f"must be equal; got {s_in} and {s_out}")
        self.W_enc.mul_(s_in / s_out)
        if self.config.skip:
            self.W_skip.mul_(s_in / s_out)
        self.b_dec.div_(s_out)
        self._scale_codes_(1.0 / s_out)

    def _scale_codes_(self, factor: float) -> None:
        """Scale biases and thresholds so that codes scale by ``factor`` (pre-acts already do)."""
        if self.HAS_B_ENC:
            self.b_enc.mul_(factor)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name in self.FLOAT32_TENSORS:
            tensor = getattr(self, name, None)  # None: an option left this instance without it
            if tensor is not None and tensor.dtype != torch.float32:
                tensor.data = tensor.data.float()
        return self

    def extra_repr(self) -> str:
        extras = ", skip" if self.config.skip else ""
        return f"arch={self.arch!r}, d_in={self.d_in}, d_sae={self.d_sae}, d_out={self.d_out}{extras}"


def sites_spanned(input_shape: tuple[int, ...]) -> int:
    """How many sites rows of ``input_shape`` span: ``(D,)`` one, ``(S, D)`` S."""
    return 1 if len(input_shape) == 1 else input_shape[0]


def require_single_site(dictionary: Dictionary, stage: str, hint: str = "use a single-site dictionary there") -> None:
    """The one capability check for multi-site dictionaries: MonosemanticError if ``stage`` would get one.

    ``stage`` names what cannot take several sites, e.g. "feature analysis"; ``hint`` says what to do.
    """
    if len(dictionary.input_shape) != 1:
        names = ", ".join("unnamed" if s is None else s for s in dictionary.sites)
        raise MonosemanticError(f"{stage} handles single-site dictionaries only, but this {dictionary.arch} "
                                f"dictionary reads {dictionary.n_sites} sites ({names}); {hint}")


def step_input(step, n_latents: int) -> StepInput:
    """``step`` checked against a dictionary of ``n_latents`` latents (None: a lone step)."""
    if step is None:
        return StepInput()
    if not isinstance(step, StepInput):
        raise MonosemanticError(f"loss(x, target, step) takes a StepInput as step; got {type(step).__name__}")
    dead_F = step.dead_F
    if dead_F is not None and (not isinstance(dead_F, Tensor) or dead_F.dtype != torch.bool
                               or tuple(dead_F.shape) != (n_latents,)):
        got = f"{dead_F.dtype} {tuple(dead_F.shape)}" if isinstance(dead_F, Tensor) else type(dead_F).__name__
        raise MonosemanticError(f"StepInput.dead_F must be a boolean [{n_latents}] tensor (one flag per latent); "
                                f"got {got}")
    return step


def checked_output(dictionary: Dictionary, out: LossOutput) -> LossOutput:
    """``out``, after checking it keeps the contract the trainer and the metrics rely on."""
    if "mse" not in out.terms:
        raise MonosemanticError(f"the {dictionary.arch} loss returned terms {sorted(out.terms)} without 'mse'; an "
                                "architecture's _loss must report its reconstruction error as terms['mse']")
    return out


def _unit_columns(d: int, f: int) -> Tensor:
    W_DF = torch.randn(d, f)
    return W_DF / W_DF.norm(dim=0, keepdim=True)


def _remove_radial_(grad_FD: Tensor, W_FD: Tensor) -> None:
    """``grad -= (grad . w / |w|^2) w`` per row, in place."""
    # vecdot would multiply into a fresh [F, D] temporary; a pooled one spares its page faults.
    dots_F = torch.mul(grad_FD, W_FD, out=scratch.new_empty(grad_FD)).sum(dim=1)
    coeff_F = dots_F / torch.linalg.vector_norm(W_FD, dim=1).square().clamp_min(1e-24)
    grad_FD.addcmul_(W_FD, coeff_F[:, None], value=-1)


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MonosemanticError(f"fold_scale_ {name} must be a positive number; got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise MonosemanticError(f"fold_scale_ {name} must be a positive finite number; got {value!r}")
    return value
