"""A dictionary's inference computation, independent of who wrote it.

Every format stores some subset of: an affine encoder (optionally centring inputs by ``b_dec``),
one of five activations, an affine decoder and an optional skip path. :class:`Inference` holds
exactly that (our row-vector layout, float32) together with the architecture of ours it is, and
:func:`inference_of` reads it from one of our dictionaries and :func:`dictionary_from_inference`
builds one of ours from it. Which activation, threshold tensor and options each architecture
has comes from its row in :mod:`.architectures`; the converters only translate names and
layouts to and from this form.

Activations: ``relu``; ``topk`` (the k largest pre-activations per row, then ReLU); ``jumprelu``
(``relu(pre) * (pre > threshold)``, per-latent thresholds); ``gated`` (``b_gate``, ``b_mag``,
``r_mag`` instead of ``b_enc``); ``threshold`` (a BatchTopK dictionary at inference: one
threshold for every latent, ``k`` and matryoshka ``group_sizes`` kept for training).

Fields a format stores that ours have no place for (SAELens's ``prepend_bos``, ``context_size``,
``neuronpedia_id``, ...) travel in ``Inference.metadata`` (format name -> fields) and are kept on
the loaded dictionary as its ``format_metadata`` attribute, with the fingerprint of the weights
they came with, so writing that format again keeps them, unless the weights changed (a
fine-tuned SAE is not the one a ``neuronpedia_id`` names). They live in memory only: a native
save does not store them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..dictionaries import Dictionary, DictionaryConfig, dictionary_from_config
from ..errors import MonosemanticError
from ..features import dictionary_fingerprint
from .architectures import ARCHITECTURES, exportable

ACTIVATIONS = ("relu", "topk", "jumprelu", "gated", "threshold")
FORMAT_METADATA = "format_metadata"  # the dictionary attribute holding Inference.metadata
# Our tensors that the form holds under the same names (thresholds are translated, see _THRESHOLDS).
_SHARED_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "b_gate", "b_mag", "r_mag")


@dataclass(frozen=True)
class Inference:
    """What a dictionary computes at inference, in our layout (see the module docstring)."""

    arch: str  # the architecture of ours it is: a key of architectures.ARCHITECTURES
    tensors: dict[str, Tensor]  # float32: W_enc [D,F], b_enc [F] (not gated), W_dec [F,O], b_dec [O],
    #                             W_skip [O,D], threshold [F] (jumprelu) or [] (threshold), b_gate/b_mag/r_mag [F]
    centred: bool  # whether inputs are centred by b_dec before encoding
    input_norm: str = "none"  # see dictionaries/input_norm.py
    site_in: str | None = None
    site_out: str | None = None
    model: str | None = None
    options: dict = field(default_factory=dict)  # the architecture's options that formats keep (k, group_sizes, ...)
    metadata: dict = field(default_factory=dict)  # format name -> fields of that format kept for writing it again

    @property
    def activation(self) -> str:
        return ARCHITECTURES[self.arch].activation

    @property
    def k(self) -> int | None:
        return self.options.get("k")

    @property
    def group_sizes(self) -> list[int] | None:
        return self.options.get("group_sizes")

    @property
    def d_in(self) -> int:
        return self.tensors["W_enc"].shape[0]

    @property
    def d_sae(self) -> int:
        return self.tensors["W_enc"].shape[1]

    @property
    def d_out(self) -> int:
        return self.tensors["W_dec"].shape[1]

    @property
    def skip(self) -> bool:
        return "W_skip" in self.tensors

    @property
    def is_transcoder(self) -> bool:
        return self.skip or self.d_out != self.d_in or (self.site_out is not None and self.site_out != self.site_in)


# our threshold tensor -> (to the form's threshold, back to ours). relu(pre) * (pre > t) keeps nothing
# below 0, so a negative threshold acts as 0 does; our BatchTopK's 0 means "not yet estimated" and
# at inference keeps every positive pre-activation, as 0 does.
_THRESHOLDS = {
    "log_threshold": (torch.exp, lambda t: t.clamp_min(0.0).log()),
    "threshold": (lambda t: t.clamp_min(0.0), lambda t: t.clamp_min(0.0).reshape(())),
}


def inference_of(dictionary: Dictionary, fmt: str) -> Inference:
    """The inference form of one of our dictionaries; MonosemanticError if ``fmt`` cannot hold its architecture."""
    config = dictionary.config
    row = exportable(config.arch, fmt)
    state = {name: t.detach().to("cpu", torch.float32).clone()
             for name, t in dictionary.state_dict().items() if t.is_floating_point()}
    tensors = {name: state[name] for name in _SHARED_TENSORS if name in state}
    if row.threshold is not None:
        tensors["threshold"] = _THRESHOLDS[row.threshold][0](state[row.threshold])
    options = {name: dictionary.options[name] for name in row.options if name in dictionary.options}
    return Inference(config.arch, tensors, dictionary.apply_b_dec_to_input, dictionary.options["input_norm"],
                     config.site_in, config.site_out, config.model, options,
                     _kept_metadata(dictionary))


def _kept_metadata(dictionary: Dictionary) -> dict:
    """The format fields read with ``dictionary``, if its weights are still the ones read."""
    kept = getattr(dictionary, FORMAT_METADATA, None)
    if not kept or kept["fingerprint"] != dictionary_fingerprint(dictionary):
        return {}
    return {fmt: dict(fields) for fmt, fields in kept["formats"].items()}


def as_jumprelu(form: Inference) -> Inference:
    """A ``threshold`` form as the equivalent ``jumprelu`` one (the threshold repeated per latent)."""
    if form.activation != "threshold":
        return form
    tensors = dict(form.tensors, threshold=form.tensors["threshold"].expand(form.d_sae).clone())
    return replace(form, arch="jumprelu", tensors=tensors, options={})


def with_centring(form: Inference, centred: bool) -> Inference:
    """The same computation with inputs centred by b_dec (or not): the shift moves into the encoder biases.

    ``(x - b_dec) @ W_enc + b = x @ W_enc + (b - b_dec @ W_enc)``, so this is exact up to float
    rounding; it needs d_out == d_in when centring is switched on.
    """
    if form.centred == centred:
        return form
    if centred and form.d_out != form.d_in:
        raise MonosemanticError(f"this format centres inputs by b_dec, which needs d_out == d_in; got d_in={form.d_in} "
                                f"and d_out={form.d_out}")
    shift_F = form.tensors["b_dec"] @ form.tensors["W_enc"]
    sign = 1.0 if centred else -1.0  # centring subtracts b_dec @ W_enc, so the bias gains it back
    tensors = dict(form.tensors)
    if form.activation == "gated":
        tensors["b_gate"] = tensors["b_gate"] + sign * shift_F
        tensors["b_mag"] = tensors["b_mag"] + sign * shift_F * tensors["r_mag"].exp()
    else:
        tensors["b_enc"] = tensors["b_enc"] + sign * shift_F
    return replace(form, tensors=tensors, centred=centred)


def dictionary_from_inference(form: Inference) -> Dictionary:
    """One of our dictionaries computing ``form`` exactly (in eval mode, float32, on the CPU)."""
    row = ARCHITECTURES[form.arch]
    t = form.tensors
    options = {"apply_b_dec_to_input": form.centred, "input_norm": form.input_norm, **form.options}
    state = {name: t[name] for name in _SHARED_TENSORS if name in t}
    if row.threshold is not None:
        state[row.threshold] = _THRESHOLDS[row.threshold][1](t["threshold"])
    config = DictionaryConfig(arch=form.arch, d_in=form.d_in, d_sae=form.d_sae, d_out=form.d_out, skip=form.skip,
                              site_in=form.site_in, site_out=form.site_out, model=form.model, options=options)
    dictionary = dictionary_from_config(config)
    with torch.no_grad():
        for name, tensor in state.items():
            getattr(dictionary, name).copy_(tensor)
    if form.metadata:
        setattr(dictionary, FORMAT_METADATA, {"fingerprint": dictionary_fingerprint(dictionary),
                                              "formats": {fmt: dict(fields) for fmt, fields in form.metadata.items()}})
    return dictionary.eval()
