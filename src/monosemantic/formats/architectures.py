"""Our architectures as the other formats see them: one row per architecture.

Each row says what the architecture computes at inference (an activation of
:mod:`.inference`), which of our tensors holds its threshold, which of its options the other
formats keep, and its name in each format: the SAELens architectures written for an
autoencoder, a transcoder and a skip transcoder; the dictionary_learning classes written (the
first that reads back with the same centring and options is chosen, else the first that
computes the dictionary exactly); the sparsify and openai activations.

Reading goes the other way: a name found in a file becomes the architecture whose row lists it
(``reads`` where that differs from what the row writes). Architectures that are another one at
inference (``p_anneal`` is a ReLU dictionary trained with another penalty) read nothing, so
their exports come back as that architecture.

==========  =========  ========================================  ===========================  ========
ours        inference  SAELens (written / read)                  dictionary_learning          sparsify
==========  =========  ========================================  ===========================  ========
relu        relu       standard, transcoder, skip_transcoder     AutoEncoderNew, AutoEncoder  -
p_anneal    relu       as relu; read back as relu                as relu                      -
topk        topk       topk (no transcoders)                     AutoEncoderTopK              topk
batchtopk   threshold  jumprelu (*); read: batchtopk             BatchTopKSAE                 -
matryoshka  threshold  jumprelu (*); read: matryoshka_batchtopk  MatryoshkaBatchTopKSAE       -
jumprelu    jumprelu   jumprelu, jumprelu_(skip_)transcoder      JumpReluAutoEncoder          -
gated       gated      gated                                     GatedAutoEncoder             -
==========  =========  ========================================  ===========================  ========

(*) jumprelu, jumprelu_transcoder, jumprelu_skip_transcoder: the one threshold repeated per
latent, as SAELens's ``save_inference_model`` writes BatchTopK SAEs.

To let the formats hold a new architecture, add its row to ``ARCHITECTURES``; an architecture
without a row (crosscoders, baselines) is refused by every exporter with the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MonosemanticError

_JUMPRELU_SAELENS = ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder")


@dataclass(frozen=True)
class ArchFormats:
    """How one of our architectures is written to, and read from, the other formats."""

    activation: str  # its computation at inference: one of inference.ACTIVATIONS
    threshold: str | None = None  # our tensor holding the threshold: "log_threshold" ([F], as its log) or
    #                               "threshold" (one 0-d threshold for every latent)
    options: tuple[str, ...] = ()  # our options the inference form carries (and readers may set)
    saelens: tuple[str | None, str | None, str | None] = (None, None, None)  # autoencoder, transcoder, skip
    dictionary_learning: tuple[str, ...] = ()  # classes, tried in order
    sparsify: str | None = None  # sparsify activation
    openai: str | None = None  # openai checkpoint activation (read only)
    reads: dict[str, tuple[str, ...]] | None = field(default=None, hash=False)  # format -> names read as this
    #                                                                           architecture; None: those written

    def names_read(self, fmt: str) -> tuple[str, ...]:
        """The names that ``fmt`` files use for this architecture (which readers turn into it)."""
        if self.reads is not None:
            return self.reads.get(fmt, ())
        written = {"saelens": self.saelens, "dictionary_learning": self.dictionary_learning,
                   "sparsify": (self.sparsify,), "openai": (self.openai,)}.get(fmt, ())
        return tuple(name for name in written if name is not None)


_RELU: dict[str, Any] = dict(saelens=("standard", "transcoder", "skip_transcoder"),
                             dictionary_learning=("AutoEncoderNew", "AutoEncoder"))

ARCHITECTURES: dict[str, ArchFormats] = {
    "relu": ArchFormats("relu", options=("weight_l1_by_decoder_norm",), openai="ReLU", **_RELU),
    # Trained with an L_p penalty annealed from L1 toward L0; at inference a ReLU dictionary.
    "p_anneal": ArchFormats("relu", reads={}, **_RELU),
    "topk": ArchFormats("topk", options=("k",), saelens=("topk", None, None), dictionary_learning=("AutoEncoderTopK",),
                        sparsify="topk", openai="TopK"),
    # SAELens's save_inference_model writes BatchTopK SAEs as jumprelu with the threshold per latent.
    "batchtopk": ArchFormats("threshold", threshold="threshold", options=("k",), saelens=_JUMPRELU_SAELENS,
                             dictionary_learning=("BatchTopKSAE",),
                             reads={"saelens": ("batchtopk",), "dictionary_learning": ("BatchTopKSAE",)}),
    "matryoshka": ArchFormats("threshold", threshold="threshold", options=("k", "group_sizes"),
                              saelens=_JUMPRELU_SAELENS, dictionary_learning=("MatryoshkaBatchTopKSAE",),
                              reads={"saelens": ("matryoshka_batchtopk",),
                                     "dictionary_learning": ("MatryoshkaBatchTopKSAE",)}),
    "jumprelu": ArchFormats("jumprelu", threshold="log_threshold", saelens=_JUMPRELU_SAELENS,
                            dictionary_learning=("JumpReluAutoEncoder",)),
    "gated": ArchFormats("gated", saelens=("gated", None, None), dictionary_learning=("GatedAutoEncoder",)),
}


def exportable(arch: str, fmt: str) -> ArchFormats:
    """The row of ``arch``; MonosemanticError naming the way out when no format but ours holds it."""
    row = ARCHITECTURES.get(arch)
    if row is None:
        raise MonosemanticError(f"a {arch!r} dictionary cannot be exported to {fmt}: it stores "
                                f"{', '.join(sorted(ARCHITECTURES))} dictionaries; save it with --to native")
    return row


def arch_reading(fmt: str, name: str) -> str | None:
    """Our architecture for what ``fmt`` calls ``name``; None when no row reads it."""
    for arch, row in ARCHITECTURES.items():
        if name in row.names_read(fmt):
            return arch
    return None


def names_read(fmt: str) -> list[str]:
    """Every name ``fmt`` files may use that some row reads (for error messages)."""
    return [name for row in ARCHITECTURES.values() for name in row.names_read(fmt)]
