"""Feature analysis: one streaming pass over token windows gives everything :class:`FeatureData` holds.

For each batch of windows the model runs up to the dictionary's site (``lm.capture`` stops
there), the dictionary encodes every position, and running summaries absorb the codes:

- counts, sums and maxima (density, mean, max);
- a histogram of positive activations per latent (:class:`.counting.DoublingHistogram`: exact,
  with bins that follow the running max by doubling);
- context *chunks*: each window is tiled by slices of ``context_tokens`` tokens (the last one
  aligned to the window's end). A chunk's peak is its largest code. Top examples are the chunks
  with the highest positive peaks, shown as a slice placed so the peak has three quarters of the
  context before it. Negatives are a uniform random sample of the chunks where the latent is
  never > 0 (shown as the chunk itself); a latent that fires in nearly every chunk is topped up
  with its chunks of lowest peak.
- quantile examples: every firing token is offered with a random key to one of ``G`` fine bins
  of ``[0, 2^e]`` (the histogram's range) and each fine bin keeps its ``per_quantile`` largest
  keys (:class:`.reservoir.Reservoir`). At the end the fine bins are pooled into
  ``n_quantiles`` equal intervals of ``(0, max]`` and the largest keys of each interval are its
  examples: a uniform sample of the interval's firings, except in fine bins that straddle an
  interval edge, which are sampled as a whole;
- input tokens per latent (:class:`.counting.InputTokenCounter`; exact unless its cap is hit).

Positions that harvests never store (position 0, the attention sink, and special tokens; see
``data.storable_mask``) are not analysed: they count nowhere and show activation 0 in examples.
"Activation" is the code value, which may be negative for baselines (PCA, ICA, neurons); a
latent *fires* where its code is > 0. Logit effects come from the decoder alone (:mod:`.logits`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import check_windows, storable_mask
from ..dictionaries import require_single_site
from ..errors import MonosemanticError
from ..models import eval_mode
from .counting import DoublingHistogram, InputTokenCounter, range_bin
from .data import FORMAT, FORMAT_VERSION, FeatureData, dictionary_fingerprint
from .logits import logit_effects
from .reservoir import Reservoir

QUANTILE_FINE_BINS = 32  # G: fine bins per latent for quantile sampling (a power of two, so ranges can halve)


class _Pass:
    """The running state of one analysis pass over ``F`` latents and windows of ``S`` tokens."""

    def __init__(self, F: int, S: int, vocab: int, s: dict, seed: int):
        C = self.C = min(s["context_tokens"], S)
        self.F, self.S, self.s = F, S, s
        self.chunk_starts_J = torch.tensor(sorted({min(j, S - C) for j in range(0, S, C)}))
        self.before = (3 * C) // 4
        self.fire_count_F = torch.zeros(F, dtype=torch.int64)
        self.act_sum_F = torch.zeros(F, dtype=torch.float64)
        self.max_F = torch.full((F,), float("-inf"))
        self.n_tokens = 0
        self.hist = DoublingHistogram(F, s["histogram_bins"])
        self.top = Reservoir(F, s["n_top"], C)
        self.negatives = Reservoir(F, s["n_negative"], C)
        self.fine = Reservoir(F * QUANTILE_FINE_BINS, s["per_quantile"], C)
        self.inputs = InputTokenCounter(F, vocab)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, codes_BSF: Tensor, ids_BS: Tensor, mask_BS: Tensor, offset: int) -> None:
        mask_BS1 = mask_BS[..., None]
        shown_BSF = codes_BSF * mask_BS1  # what examples display: 0 where not analysed
        fires_BSF = (codes_BSF > 0) & mask_BS1
        self.n_tokens += int(mask_BS.sum())
        self.fire_count_F += fires_BSF.sum((0, 1))
        self.act_sum_F += shown_BSF.sum((0, 1), dtype=torch.float64)
        self.max_F = torch.maximum(self.max_F, codes_BSF.masked_fill(~mask_BS1, float("-inf")).amax((0, 1)))
        doublings_F = self.hist.grow(shown_BSF.clamp(min=0).amax((0, 1)))
        self._halve_fine_bins(doublings_F)
        b_N, s_N, f_N = torch.nonzero(fires_BSF, as_tuple=True)
        act_N = codes_BSF[b_N, s_N, f_N]
        self.hist.add(f_N, act_N)
        self.inputs.add(f_N, ids_BS[b_N, s_N], act_N)
        self._offer_chunks(codes_BSF.masked_fill(~mask_BS1, float("-inf")), shown_BSF, offset)
        self._offer_quantiles(b_N, s_N, f_N, act_N, shown_BSF, offset)

    def _halve_fine_bins(self, doublings_F: Tensor) -> None:
        # Beyond log2(G) doublings everything already sits in fine bin 0.
        most = int(doublings_F.max()) if doublings_F.numel() else 0
        for step in range(min(most, int(math.log2(QUANTILE_FINE_BINS)))):
            self.fine.merge_pairs(torch.nonzero(doublings_F > step).flatten(), QUANTILE_FINE_BINS)

    def _offer_chunks(self, masked_BSF: Tensor, shown_BSF: Tensor, offset: int) -> None:
        B, C, F = masked_BSF.shape[0], self.C, self.F
        starts_J = self.chunk_starts_J
        chunks_BJCF = masked_BSF[:, starts_J[:, None] + torch.arange(C)]
        peak_BJF, arg_BJF = chunks_BJCF.max(dim=2)
        J = starts_J.numel()
        peak_FM, arg_FM = peak_BJF.reshape(B * J, F).T, arg_BJF.reshape(B * J, F).T
        b_FM = torch.arange(B).repeat_interleave(J).expand(F, -1)
        chunk_start_FM = starts_J.repeat(B).expand(F, -1)
        position_FM = chunk_start_FM + arg_FM
        start_FM = (position_FM - self.before).clamp(0, self.S - C)
        rows_F, latents_F = torch.arange(F), torch.arange(F)
        top_key_FM = torch.where(peak_FM > 0, peak_FM, float("-inf"))
        self.top.offer(rows_F, top_key_FM, b_FM, start_FM, position_FM - start_FM, latents_F, shown_BSF, offset)
        random_FM = 1.0 + torch.rand(peak_FM.shape, generator=self.generator)
        # Chunks without an analysed position (all special tokens) are no candidates.
        negative_key_FM = torch.where(peak_FM <= 0, random_FM, -peak_FM)
        negative_key_FM = torch.where(peak_FM == float("-inf"), float("-inf"), negative_key_FM)
        self.negatives.offer(rows_F, negative_key_FM, b_FM, chunk_start_FM, torch.full_like(b_FM, C // 2),
                             latents_F, shown_BSF, offset)

    def _offer_quantiles(self, b_N, s_N, f_N, act_N, shown_BSF: Tensor, offset: int) -> None:
        if f_N.numel() == 0:
            return
        G, P = QUANTILE_FINE_BINS, self.s["per_quantile"]
        group_N = f_N * G + range_bin(act_N, self.hist.exponent_F[f_N], G)
        key_N = torch.rand(f_N.shape, generator=self.generator)
        # Each group's P largest keys: sort by key (descending), then stably by group.
        order = torch.sort(key_N, descending=True).indices
        order = order[torch.sort(group_N[order], stable=True).indices]
        group_sorted = group_N[order]
        rank = torch.arange(order.numel()) - torch.searchsorted(group_sorted, group_sorted, side="left")
        keep = order[rank < P]
        groups_U, row_K = torch.unique_consecutive(group_N[keep], return_inverse=True)
        slot_K = rank[rank < P]
        U = groups_U.numel()
        key_UP = torch.full((U, P), float("-inf"))
        b_UP, start_UP, peak_UP = (torch.zeros(U, P, dtype=torch.int64) for _ in range(3))
        position = s_N[keep]
        start = (position - self.before).clamp(0, self.S - self.C)
        key_UP[row_K, slot_K] = key_N[keep]
        b_UP[row_K, slot_K], start_UP[row_K, slot_K], peak_UP[row_K, slot_K] = b_N[keep], start, position - start
        self.fine.offer(groups_U, key_UP, b_UP, start_UP, peak_UP, groups_U // G, shown_BSF, offset)

    def quantile_tables(self) -> dict[str, Tensor]:
        """Pool each latent's fine bins into ``n_quantiles`` equal intervals of (0, max]."""
        F, G, C = self.F, QUANTILE_FINE_BINS, self.C
        Q, P = self.s["n_quantiles"], self.s["per_quantile"]
        fine = self.fine
        key_FX = fine.key_RK.reshape(F, G * P)
        acts_FXC = fine.acts_RKC.reshape(F, G * P, C)
        act_FX = acts_FXC.gather(2, fine.peak_RK.reshape(F, G * P, 1).clamp(0, C - 1)).squeeze(2)
        top_F1 = self.max_F.clamp(min=torch.finfo(torch.float32).tiny)[:, None]
        interval_FX = torch.floor(act_FX / top_F1 * Q).long().clamp(0, Q - 1)
        out = {"quant_window_FQP": [], "quant_start_FQP": [], "quant_peak_FQP": [], "quant_acts_FQPC": []}
        for q in range(Q):
            key_q = torch.where(interval_FX == q, key_FX, float("-inf"))
            best_key_FP, best_FP = torch.topk(key_q, P, dim=1)
            window_FP = fine.window_RK.reshape(F, G * P).gather(1, best_FP)
            out["quant_window_FQP"].append(torch.where(best_key_FP == float("-inf"), -1, window_FP))
            out["quant_start_FQP"].append(fine.start_RK.reshape(F, G * P).gather(1, best_FP))
            out["quant_peak_FQP"].append(fine.peak_RK.reshape(F, G * P).gather(1, best_FP))
            out["quant_acts_FQPC"].append(acts_FXC.gather(1, best_FP[..., None].expand(-1, -1, C)))
        return {name: torch.stack(parts, dim=1) for name, parts in out.items()}

    def tables(self) -> dict[str, Tensor]:
        ids, counts, means = self.inputs.top(self.s["n_input_tokens"])
        return {
            "fire_count_F": self.fire_count_F, "act_sum_F": self.act_sum_F,
            "max_F": torch.where(torch.isfinite(self.max_F), self.max_F, 0.0),
            "hist_counts_FH": self.hist.counts_FH, "hist_top_F": self.hist.top_F,
            "top_window_FK": self.top.window_RK, "top_start_FK": self.top.start_RK, "top_peak_FK": self.top.peak_RK,
            "top_value_FK": self.top.key_RK, "top_acts_FKC": self.top.acts_RKC,
            "neg_window_FN": self.negatives.window_RK, "neg_start_FN": self.negatives.start_RK,
            "neg_acts_FNC": self.negatives.acts_RKC,
            "input_id_FT": ids, "input_count_FT": counts, "input_mean_FT": means,
            **self.quantile_tables(),
        }


def _check_settings(settings: dict) -> None:
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MonosemanticError(f"{name}={value!r} is invalid; expected a positive integer")


def _sites(dictionary, site: str | None) -> tuple[str, str]:
    """(site the codes are read from, site the decoder writes to)."""
    config = dictionary.config
    require_single_site(dictionary, "feature analysis")
    site_in = site or config.site_in
    if site_in is None:
        raise MonosemanticError("the dictionary's config names no site; pass site='blocks.L.kind' (--site)")
    site_out = config.site_out if config.is_transcoder and config.site_out else site_in
    return site_in, site_out


def _token_strings(tokenizer, *id_tensors: Tensor) -> dict[int, str]:
    ids = torch.unique(torch.cat([t.reshape(-1) for t in id_tensors]))
    ids = ids[ids >= 0].tolist()
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return dict(zip(ids, texts))


def site_activations(lm, site: str, windows_WS: Tensor, batch_size: int = 8) -> Tensor:
    """``[W, S, D]`` activations of ``site`` over the windows: captured once, analysed for several dictionaries
    (``analyze_features(acts_WSD=...)``)."""
    windows_WS = check_windows(windows_WS).cpu()
    lm.check_context(windows_WS.shape[1])
    with torch.inference_mode():
        return torch.cat([lm.capture(windows_WS[start:start + batch_size], [site])[site].cpu()
                          for start in range(0, windows_WS.shape[0], batch_size)])


def _codes(lm, dictionary, ids_BS: Tensor, site: str, acts_BSD: Tensor | None) -> Tensor:
    if acts_BSD is None:
        return _codes(lm, dictionary, ids_BS, site, lm.capture(ids_BS, [site])[site])
    B, S, D = acts_BSD.shape
    W_enc = dictionary.W_enc
    codes_NF = dictionary.encode(acts_BSD.reshape(B * S, D).to(W_enc.device, W_enc.dtype))
    return codes_NF.float().cpu().reshape(B, S, -1)


def analyze_features(lm, dictionary, windows_WS, *, site=None, n_top=20, n_quantiles=5, per_quantile=4,
                     n_negative=8, context_tokens=24, n_logits=10, batch_size=8, progress=True,
                     n_input_tokens=16, histogram_bins=128, seed=0, acts_WSD: Tensor | None = None) -> FeatureData:
    """Analyse every latent of ``dictionary`` over ``windows_WS`` ``[W, S]`` in one streaming pass.

    ``site`` defaults to the dictionary's input site; memory is bounded by the settings and the
    number of latents, not by the number of windows. Deterministic for a ``seed``. ``acts_WSD``:
    the site's activations over those windows (:func:`site_activations`), when several dictionaries
    of one site share one forward pass; without it each batch runs the model.
    """
    settings = {"n_top": n_top, "n_quantiles": n_quantiles, "per_quantile": per_quantile, "n_negative": n_negative,
                "context_tokens": context_tokens, "n_logits": n_logits, "batch_size": batch_size,
                "n_input_tokens": n_input_tokens, "histogram_bins": histogram_bins}
    _check_settings(settings)
    if histogram_bins & (histogram_bins - 1):
        raise MonosemanticError(f"histogram_bins={histogram_bins} must be a power of two (bins halve exactly); "
                                "try 128")
    windows_WS = check_windows(windows_WS).cpu()
    W, S = windows_WS.shape
    lm.check_context(S)
    site_in, site_out = _sites(dictionary, site)
    if lm.width(site_in) != dictionary.d_in:
        raise MonosemanticError(f"{site_in} of {lm.name} is {lm.width(site_in)} wide but the dictionary reads "
                                f"{dictionary.d_in}; pass the site (and model) the dictionary was trained on")
    if acts_WSD is not None and tuple(acts_WSD.shape) != (W, S, dictionary.d_in):
        raise MonosemanticError(f"acts_WSD has shape {tuple(acts_WSD.shape)}; expected {(W, S, dictionary.d_in)}, "
                                f"the activations of {site_in} over the windows (site_activations)")
    vocab = max(len(lm.tokenizer), int(windows_WS.max()) + 1, getattr(lm.config, "vocab_size", 0) or 0)
    mask_WS = storable_mask(windows_WS, lm.tokenizer.all_special_ids)
    state = _Pass(dictionary.d_sae, S, vocab, settings, seed)
    with eval_mode(dictionary), torch.inference_mode():
        for start in tqdm(range(0, W, batch_size), desc="features", unit="batch", disable=not progress):
            ids_BS = windows_WS[start:start + batch_size]
            given_BSD = None if acts_WSD is None else acts_WSD[start:start + batch_size]
            state.update(_codes(lm, dictionary, ids_BS, site_in, given_BSD), ids_BS, mask_WS[start:start + batch_size],
                         start)
        up_ids, up, down_ids, down = logit_effects(lm, site_out, dictionary.W_dec, n_logits)
    tables = state.tables()
    tables.update(logit_up_id_FL=up_ids, logit_up_FL=up, logit_down_id_FL=down_ids, logit_down_FL=down)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "dictionary": dictionary.config.to_dict(),
            "fingerprint": dictionary_fingerprint(dictionary), "n_latents": dictionary.d_sae,
            "model": lm.name, "model_info": lm.describe(), "site": site_in, "site_out": site_out,
            "n_windows": W, "context_length": S,
            "n_tokens": state.n_tokens, "settings": {**settings, "seed": seed},
            "input_tokens_exact": state.inputs.exact, "context_shown": state.C}
    strings = _token_strings(lm.tokenizer, windows_WS, up_ids, down_ids, tables["input_id_FT"])
    return FeatureData(meta, windows_WS, tables, strings)
