"""Downstream loss: the model's next-token cross-entropy with a dictionary spliced into a site.

For each batch of token windows the model runs four times: clean; with the site's activation
replaced by the dictionary's reconstruction (for a transcoder, the output site replaced by its
prediction from the input site, read in the same forward); with the site zeroed; and with the
site set to its mean over the evaluation tokens. Reported:

- ``ce_*``: mean cross-entropy (nats) of each run over the scored positions;
- ``loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)`` (1: as good as clean,
  0: as bad as zero ablation), and ``loss_recovered_mean`` the same against mean ablation;
- ``delta_loss = ce_spliced - ce_clean``;
- ``kl_*``: mean KL(clean || run) of the next-token distributions.

Positions follow the harvest's rule (``data.storable_mask``): position 0 (the attention sink)
and special tokens are neither replaced nor scored, because the dictionary never saw them in
training. A position is scored when it is storable and not the last of its window (the
prediction at position p is scored against token p + 1); replacing and scoring the same
positions keeps "what the dictionary touched" and "what is measured" one set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import CorpusSpec, check_windows, storable_mask, text_source
from ..dictionaries import Dictionary, require_single_site
from ..errors import MonosemanticError
from ..models import eval_mode, splice
from .results import Result, ratio
from .windows import corpus_windows, fingerprint

RUNS = ("clean", "spliced", "zero", "mean")


@dataclass(frozen=True)
class SpliceConfig(Result):
    site_in: str  # where the dictionary reads
    site_out: str  # where its output replaces the model's (site_in for autoencoders)
    batch_size: int  # windows per forward
    skip_first: bool  # position 0 neither replaced nor scored
    exclude_special: bool  # special tokens neither replaced nor scored
    windows: dict  # which windows: count, length, fingerprint and, from a corpus, its description


@dataclass(frozen=True)
class SpliceResult(Result):
    config: SpliceConfig
    dictionary: dict  # the DictionaryConfig spliced in
    model: dict  # LanguageModel.describe()
    n_windows: int
    n_tokens: int  # scored positions
    ce_clean: float
    ce_spliced: float
    ce_zero: float
    ce_mean: float
    delta_loss: float
    loss_recovered: float
    loss_recovered_mean: float
    kl_spliced: float
    kl_zero: float
    kl_mean: float


def scored_positions(windows_WS: Tensor, special_ids, *, skip_first: bool = True) -> Tensor:
    """Bool ``[W, S]``: storable positions that have a next token (the last position has none)."""
    mask_WS = storable_mask(windows_WS, special_ids, skip_first=skip_first)
    mask_WS[:, -1] = False
    return mask_WS


def evaluate_splice(lm, dictionary: Dictionary, windows_WS: Tensor | None = None, *, corpus: CorpusSpec = "stdlib",
                    n_windows: int = 64, context_length: int = 128, prepend_bos: bool = False,
                    holdout: float | None = 0.05, site: str | tuple[str, str] | None = None, batch_size: int = 8,
                    skip_first: bool = True, exclude_special: bool = True) -> SpliceResult:
    """Cross-entropy of ``lm`` with ``dictionary`` spliced in, against clean, zero and mean ablation.

    Windows: ``windows_WS [W, S]`` token ids, or else the first ``n_windows`` held-out windows
    of ``corpus`` (see :func:`~monosemantic.evaluation.windows.corpus_windows`). Sites come
    from the dictionary's config; ``site`` overrides them (a name for an autoencoder, a pair
    ``(site_in, site_out)`` for a transcoder).
    """
    return evaluate_splices(lm, {"dictionary": dictionary}, windows_WS, corpus=corpus, n_windows=n_windows,
                            context_length=context_length, prepend_bos=prepend_bos, holdout=holdout, site=site,
                            batch_size=batch_size, skip_first=skip_first, exclude_special=exclude_special)["dictionary"]


def evaluate_splices(lm, dictionaries: Mapping[str, Dictionary], windows_WS: Tensor | None = None, *,
                     corpus: CorpusSpec = "stdlib", n_windows: int = 64, context_length: int = 128,
                     prepend_bos: bool = False, holdout: float | None = 0.05, site: str | tuple[str, str] | None = None,
                     batch_size: int = 8, skip_first: bool = True, exclude_special: bool = True
                     ) -> dict[str, SpliceResult]:
    """:func:`evaluate_splice` of several dictionaries of the same sites, by name.

    The clean, zero- and mean-ablated runs are computed once and shared, so n dictionaries cost
    n + 3 forward passes per batch instead of 4n.
    """
    if not dictionaries:
        raise MonosemanticError("no dictionaries to splice; pass {name: dictionary}")
    sites = {name: splice_sites(lm, d, site) for name, d in dictionaries.items()}
    if len(set(sites.values())) != 1:
        raise MonosemanticError(f"the dictionaries splice at different sites ({sorted(set(sites.values()))}); "
                                "evaluate each site separately")
    site_in, site_out = next(iter(sites.values()))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MonosemanticError(f"batch_size={batch_size!r} is invalid; expected a positive number of windows, e.g. 8")
    windows_WS, origin = _windows(lm, windows_WS, corpus=corpus, n_windows=n_windows, context_length=context_length,
                                  prepend_bos=prepend_bos, holdout=holdout)
    special_ids = lm.tokenizer.all_special_ids if exclude_special else []
    mask_WS = scored_positions(windows_WS, special_ids, skip_first=skip_first)
    n_tokens = int(mask_WS.sum())
    if n_tokens == 0:
        raise MonosemanticError(f"the {windows_WS.shape[0]} windows have no position to score (all special, first or "
                                "last); pass longer windows of ordinary text")
    windows = {"n_windows": windows_WS.shape[0], "context_length": windows_WS.shape[1],
               "fingerprint": fingerprint(windows_WS), **origin}
    config = SpliceConfig(site_in=site_in, site_out=site_out, batch_size=batch_size, skip_first=skip_first,
                          exclude_special=exclude_special, windows=windows)
    with torch.inference_mode(), ExitStack() as stack:
        for dictionary in dictionaries.values():
            stack.enter_context(eval_mode(dictionary))
        mean_D = site_mean(lm, site_out, windows_WS, mask_WS, batch_size)
        ce, kl = _sums(lm, dictionaries, windows_WS, mask_WS, config, mean_D)
    return {name: _result(lm, d, config, windows_WS.shape[0], n_tokens,
                          {run: total / n_tokens for run, total in ce[name].items()},
                          {run: total / n_tokens for run, total in kl[name].items()})
            for name, d in dictionaries.items()}


def _result(lm, dictionary: Dictionary, config: SpliceConfig, n_windows: int, n_tokens: int, ce: dict,
            kl: dict) -> SpliceResult:
    return SpliceResult(
        config=config, dictionary=dictionary.config.to_dict(), model=lm.describe(), n_windows=n_windows,
        n_tokens=n_tokens, ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_zero=ce["zero"], ce_mean=ce["mean"],
        delta_loss=ce["spliced"] - ce["clean"],
        loss_recovered=ratio(ce["zero"] - ce["spliced"], ce["zero"] - ce["clean"]),
        loss_recovered_mean=ratio(ce["mean"] - ce["spliced"], ce["mean"] - ce["clean"]),
        kl_spliced=kl["spliced"], kl_zero=kl["zero"], kl_mean=kl["mean"])


def _windows(lm, windows_WS: Tensor | None, *, corpus, n_windows: int, context_length: int, prepend_bos: bool,
             holdout: float | None) -> tuple[Tensor, dict]:
    """The windows to score, and where they came from (for the result's config)."""
    if windows_WS is None:
        lm.check_context(context_length)
        source = text_source(corpus)
        windows_WS = corpus_windows(lm.tokenizer, source, n_windows=n_windows, context_length=context_length,
                                    prepend_bos=prepend_bos, holdout=holdout)
        return windows_WS, {"corpus": source.describe(), "holdout": holdout, "prepend_bos": prepend_bos}
    windows_WS = check_windows(windows_WS)
    lm.check_context(windows_WS.shape[1])
    return windows_WS, {"corpus": None}


def splice_sites(lm, dictionary: Dictionary, site: str | tuple[str, str] | None = None) -> tuple[str, str]:
    """(input site, output site) to splice at, checked against the model's widths."""
    config = dictionary.config
    require_single_site(dictionary, "splice evaluation", "evaluate its reconstruction with evaluate_reconstruction")
    if isinstance(site, tuple):
        if len(site) != 2 or not all(isinstance(s, str) for s in site):
            raise MonosemanticError(f"site={site!r} is invalid; expected a name or a pair (site_in, site_out)")
        site_in, site_out = site
    elif config.is_transcoder:
        if site is not None:
            raise MonosemanticError(f"a transcoder reads one site and writes another; pass site=(site_in, site_out), "
                                    f"got {site!r}")
        site_in, site_out = config.site_in, config.site_out
    else:
        site_in = site_out = site or config.site_in
    if site_in is None or site_out is None:
        raise MonosemanticError(f"the {config.arch} dictionary's config does not say where it splices; pass "
                                "site='blocks.L.kind' (or site=(site_in, site_out) for a transcoder)")
    site_in, site_out = lm.site(site_in).name, lm.site(site_out).name
    widths = lm.widths([site_in, site_out])
    if (widths[site_in], widths[site_out]) != (config.d_in, config.d_out):
        raise MonosemanticError(f"sites {site_in} -> {site_out} of {lm.name} have widths {widths[site_in]} -> "
                                f"{widths[site_out]}, but the dictionary maps {config.d_in} -> {config.d_out}; "
                                "pass the sites it was trained on")
    return site_in, site_out


def site_mean(lm, site: str, windows_WS: Tensor, mask_WS: Tensor, batch_size: int = 8) -> Tensor:
    """``[D]``: the mean activation of ``site`` over the masked positions (accumulated in float64)."""
    total_D, count = None, 0
    for start in range(0, windows_WS.shape[0], batch_size):
        mask_BS = mask_WS[start:start + batch_size]
        if not mask_BS.any():
            continue
        acts_BSD = lm.capture(windows_WS[start:start + batch_size], [site])[site]
        rows_sum_D = acts_BSD[mask_BS.to(acts_BSD.device)].double().sum(0)
        total_D = rows_sum_D if total_D is None else total_D + rows_sum_D
        count += int(mask_BS.sum())
    if total_D is None:
        raise MonosemanticError(f"mask_WS selects no position of the {windows_WS.shape[0]} windows, so {site} has no "
                                "mean; pass a mask with at least one True")
    return (total_D / count).to(lm.dtype)


def _sums(lm, dictionaries: Mapping[str, Dictionary], windows_WS: Tensor, mask_WS: Tensor, config: SpliceConfig,
          mean_D: Tensor) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Cross-entropy and KL summed over scored positions, per dictionary and run."""
    ce: dict[str, dict[str, float]] = {name: dict.fromkeys(RUNS, 0.0) for name in dictionaries}
    kl: dict[str, dict[str, float]] = {name: dict.fromkeys(RUNS[1:], 0.0) for name in dictionaries}
    for start in range(0, windows_WS.shape[0], config.batch_size):
        ids_BS = windows_WS[start:start + config.batch_size].to(lm.device)
        mask_BS = mask_WS[start:start + config.batch_size].to(lm.device)
        if not mask_BS.any():
            continue
        targets_P = ids_BS[:, 1:][mask_BS[:, :-1]]
        clean_PV = _scored_log_probs(lm, ids_BS, mask_BS, [])
        shared = {}
        for run, edits in _ablations(mask_BS, config, mean_D).items():
            run_PV = _scored_log_probs(lm, ids_BS, mask_BS, edits)
            # KL(clean || run) = sum_v p_clean (log p_clean - log p_run)
            shared[run] = (_cross_entropy(run_PV, targets_P),
                           float((clean_PV.exp() * (clean_PV - run_PV)).sum(dtype=torch.float64)))
        clean = _cross_entropy(clean_PV, targets_P)
        for name, dictionary in dictionaries.items():
            spliced_PV = _scored_log_probs(lm, ids_BS, mask_BS, _spliced(dictionary, mask_BS, config))
            shared["spliced"] = (_cross_entropy(spliced_PV, targets_P),
                                 float((clean_PV.exp() * (clean_PV - spliced_PV)).sum(dtype=torch.float64)))
            ce[name]["clean"] += clean
            for run, (run_ce, run_kl) in shared.items():
                ce[name][run] += run_ce
                kl[name][run] += run_kl
    return ce, kl


Edit = tuple[str, Callable[[Tensor], Tensor]]


def _ablations(mask_BS: Tensor, config: SpliceConfig, mean_D: Tensor) -> dict[str, list[Edit]]:
    """The hooks of the zero- and mean-ablated runs."""
    return {"zero": [(config.site_out, _replace_rows(mask_BS, torch.zeros_like))],
            "mean": [(config.site_out, _replace_rows(mask_BS, lambda rows_PD: mean_D.expand_as(rows_PD)))]}


def _spliced(dictionary: Dictionary, mask_BS: Tensor, config: SpliceConfig) -> list[Edit]:
    """The hooks of the spliced run: (site, new activation from old) in forward order."""
    site_in, site_out = config.site_in, config.site_out
    device = next(dictionary.parameters()).device
    inputs: dict[str, Tensor] = {}

    def record(acts_BSD: Tensor) -> Tensor:
        inputs["x"] = acts_BSD
        return acts_BSD

    def reconstruct(rows_PD: Tensor) -> Tensor:
        if site_in != site_out:
            if "x" not in inputs:
                raise MonosemanticError(f"transcoder input site {site_in} is not reached before its output site "
                                        f"{site_out} in the forward pass; check the config's sites")
            rows_PD = inputs["x"][mask_BS]
        return dictionary(rows_PD.to(device)).recon

    spliced = [(site_in, record)] if site_in != site_out else []
    return spliced + [(site_out, _replace_rows(mask_BS, reconstruct))]


def _replace_rows(mask_BS: Tensor, rows_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """An edit replacing the activation at the masked positions by ``rows_fn(those rows)``."""
    def edit(acts_BSD: Tensor) -> Tensor:
        out_BSD = acts_BSD.clone()
        out_BSD[mask_BS] = rows_fn(acts_BSD[mask_BS]).to(out_BSD.device, out_BSD.dtype)
        return out_BSD
    return edit


def _scored_log_probs(lm, ids_BS: Tensor, mask_BS: Tensor, edits: list[Edit]) -> Tensor:
    """``[P, V]`` float32 next-token log-probabilities at the scored positions, with ``edits`` applied."""
    with ExitStack() as stack:
        for site, fn in edits:
            stack.enter_context(splice(lm, site, fn))
        logits_BSV = lm.model(input_ids=ids_BS, use_cache=False).logits
    return torch.log_softmax(logits_BSV[:, :-1][mask_BS[:, :-1]].float(), dim=-1)


def _cross_entropy(log_probs_PV: Tensor, targets_P: Tensor) -> float:
    return -float(log_probs_PV.gather(1, targets_P[:, None]).sum(dtype=torch.float64))
