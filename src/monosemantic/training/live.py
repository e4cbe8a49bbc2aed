"""Training rows computed on the fly by a language model: no activation store on disk.

Token windows are grouped into *chunks* of just enough windows to hold ``buffer_batches``
batches of storable rows. A chunk's rows are shuffled together (seeded by seed and chunk
number) and cut into ``buffer_batches`` batches; the few rows beyond that are dropped. Chunks
are made from the tokens alone, so starting at step n tokenises the skipped chunks but runs
the model only from the chunk holding step n on. Held-out windows (``data.split``) are never
used, so evaluation on the same corpus can score windows no dictionary saw. At the end of the corpus a new epoch starts
over it (its partial last chunk is dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..data import CorpusSpec, storable_mask, text_source, token_windows
from ..data.split import DEFAULT_HOLDOUT, check_split, split_windows
from ..errors import MonosemanticError
from .layout import Batch, Layout
from .seeds import generator


class LiveSource:
    """Rows of ``site_in`` (and ``site_out`` for transcoders, or ``sites`` for crosscoders) of ``lm``.

    ``sites`` with ``sites_out`` gives rows ``[N, S, D]`` and targets ``[N, S, D_out]``, every
    pair read in the same forward: transcoders at many layers (``transcoders``, ``clt``).
    """

    def __init__(self, lm, site_in: str | None = None, site_out: str | None = None, *,
                 sites: Sequence[str] | None = None, sites_out: Sequence[str] | None = None,
                 corpus: CorpusSpec = "stdlib", context_length: int = 128,
                 buffer_batches: int = 4, model_batch_size: int = 16, prepend_bos: bool = False,
                 exclude_special: bool = True, skip_first: bool = True, holdout: float = DEFAULT_HOLDOUT):
        if sites is not None and (site_in is not None or site_out is not None):
            raise MonosemanticError("pass either site_in (and site_out) or sites=[...] for a crosscoder, not both")
        if sites is None and site_in is None:
            raise MonosemanticError("LiveSource needs site_in (e.g. 'blocks.6.resid_post') or sites=[...]")
        for name, value in (("buffer_batches", buffer_batches), ("model_batch_size", model_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MonosemanticError(f"LiveSource {name}={value!r} is invalid; expected an integer >= 1")
        if sites_out is not None and (sites is None or len(sites_out) != len(sites)):
            raise MonosemanticError("sites_out=[...] pairs with sites=[...], one output site per input site (e.g. "
                                    "blocks.L.mlp_in -> blocks.L.mlp_out for transcoders at every layer)")
        lm.check_context(context_length)
        self.lm, self.corpus = lm, text_source(corpus)
        self.multi_site = sites is not None  # rows [N, S, D] over several sites
        if sites is not None:
            wanted = list(sites) + [s for s in (sites_out or []) if s not in sites]
        else:
            wanted = [site_in] + ([site_out] if site_out not in (None, site_in) else [])
        self.sites = lm.resolve_sites(wanted)
        self.inputs = lm.resolve_sites(list(sites)) if sites is not None else self.sites[:1]
        self.outputs = lm.resolve_sites(list(sites_out)) if sites_out is not None else (
            self.sites[1:] if sites is None else [])
        self.context_length, self.buffer_batches = context_length, buffer_batches
        self.model_batch_size = model_batch_size
        self.prepend_bos, self.skip_first = prepend_bos, skip_first
        check_split("train", holdout)
        self.holdout = holdout
        self.special_ids = sorted(set(lm.tokenizer.all_special_ids)) if exclude_special else []
        self.layout = self._layout()

    def _layout(self) -> Layout:
        widths = [self.lm.width(s) for s in self.inputs]
        what = f"model {self.lm.name} site {self.sites[0]!r}"
        if self.multi_site:
            out_widths = [self.lm.width(s) for s in self.outputs]
            if self.outputs and (len(set(widths)) != 1 or len(set(out_widths)) != 1):
                raise MonosemanticError(f"sites {self.inputs} -> {self.outputs} (widths {widths} -> {out_widths}) "
                                        "are invalid; expected input sites of one width and output sites of one width")
            if not self.outputs and (len(self.inputs) < 2 or len(set(widths)) != 1):
                raise MonosemanticError(f"crosscoder sites {self.inputs} (widths {widths}) are invalid; expected two "
                                        "or more sites of one width")
            return Layout((len(self.inputs), widths[0]), out_widths[0] if out_widths else None,
                          f"model {self.lm.name} sites {self.inputs}")
        return Layout((widths[0],), self.lm.width(self.outputs[0]) if self.outputs else None, what)

    def describe(self) -> dict:
        """The text and windows these rows come from, so evaluation can find the windows never trained on."""
        return {"kind": "live", "corpus": self.corpus.describe(), "context_length": self.context_length,
                "prepend_bos": self.prepend_bos, "split": "train", "holdout": self.holdout, "model": self.lm.name}

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0) -> Iterator[Batch]:
        first_chunk, index = divmod(start_step, self.buffer_batches)
        chunk_number = 0
        while True:
            produced = False
            for windows_WS, mask_WS in self._chunks(batch_size):
                produced = True
                if chunk_number >= first_chunk:
                    rows = self._rows(windows_WS, mask_WS, batch_size, generator(seed, "live-chunk", chunk_number))
                    for b in range(index, self.buffer_batches):
                        yield self._batch({s: t[b * batch_size:(b + 1) * batch_size] for s, t in rows.items()})
                    index = 0
                chunk_number += 1
            if not produced:
                raise MonosemanticError(f"corpus {self.corpus!r} holds fewer storable tokens than one chunk of "
                                        f"{self.buffer_batches} x {batch_size} rows; use a bigger corpus or smaller "
                                        "batches")

    def _chunks(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(windows [W, S], storable mask [W, S]) of each chunk of one pass over the corpus."""
        need = self.buffer_batches * batch_size
        windows, masks, rows = [], [], 0
        # The held-out windows are skipped, as a store's training split skips them.
        stream = token_windows(self.corpus, self.lm.tokenizer, self.context_length, prepend_bos=self.prepend_bos)
        for _, window_S in split_windows(stream, "train", self.holdout):
            mask_S = storable_mask(window_S[None], self.special_ids, skip_first=self.skip_first)[0]
            windows.append(window_S)
            masks.append(mask_S)
            rows += int(mask_S.sum())
            if rows >= need:
                yield torch.stack(windows), torch.stack(masks)
                windows, masks, rows = [], [], 0

    # no_grad, not inference_mode: inference tensors could not be saved for the dictionary's backward.
    @torch.no_grad()
    def _rows(self, windows_WS: Tensor, mask_WS: Tensor, batch_size: int, gen: torch.Generator) -> dict[str, Tensor]:
        """The chunk's storable rows per site, shuffled, cut to whole batches (on the model's device)."""
        parts: dict[str, list[Tensor]] = {s: [] for s in self.sites}
        for w0 in range(0, windows_WS.shape[0], self.model_batch_size):
            mask_BS = mask_WS[w0:w0 + self.model_batch_size]
            acts = self.lm.capture(windows_WS[w0:w0 + self.model_batch_size], self.sites)
            flat_rows = mask_BS.flatten().nonzero().squeeze(1).to(self.lm.device)
            for s in self.sites:
                parts[s].append(acts[s].flatten(0, 1).index_select(0, flat_rows).float())
        n_rows = int(mask_WS.sum())
        keep = torch.randperm(n_rows, generator=gen)[:self.buffer_batches * batch_size].to(self.lm.device)
        return {s: torch.cat(p).index_select(0, keep) for s, p in parts.items()}

    def _batch(self, rows: dict[str, Tensor]) -> Batch:
        if self.multi_site:
            target = torch.stack([rows[s] for s in self.outputs], dim=1) if self.outputs else None
            return Batch(torch.stack([rows[s] for s in self.inputs], dim=1), target)
        return Batch(rows[self.inputs[0]], rows[self.outputs[0]] if self.outputs else None)
