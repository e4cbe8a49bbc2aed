"""The replacement model: a language model whose MLPs are computed by transcoders at every layer.

``Replacement(lm, transcoders)`` pairs a model with a ``transcoders`` or ``clt`` dictionary
(``dictionaries.layered``) and checks that they fit: the sites are ``blocks.L.mlp_in`` ->
``blocks.L.mlp_out``, widths match, and (``require_all``) every layer is covered. Within
``with replacement.spliced(editor):`` each layer's MLP output is what the transcoders predict
from that layer's MLP input (for a CLT: the sum of what every earlier layer's latents write
there). The ``Editor`` sees each layer's codes before they are decoded and the output before
it replaces the MLP's, which is how attribution makes them graph inputs and interventions edit
them. ``evaluate_replacement`` splices every layer at once and reports loss recovered and KL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import CorpusSpec, check_windows, storable_mask, text_source
from ..dictionaries import Dictionary, LayeredTranscoder
from ..errors import MonosemanticError
from ..evaluation.results import Result, ratio
from ..evaluation.windows import corpus_windows, fingerprint
from ..models import eval_mode, splice

_MLP_SITE = re.compile(r"^blocks\.(\d+)\.mlp_(in|out)$")


class Editor:
    """What a spliced forward does with each layer's codes and output; the default changes nothing."""

    def codes(self, layer: int, pre_NF: Tensor, codes_NF: Tensor) -> Tensor:
        """The codes to decode at ``layer`` (index into the transcoders' layers), given the encoder's."""
        return codes_NF

    def output(self, layer: int, out_ND: Tensor, real_ND: Tensor, x_ND: Tensor) -> Tensor:
        """What replaces the MLP's output ``real_ND``, given the transcoders' ``out_ND`` and MLP input ``x_ND``."""
        return out_ND


class Replacement:
    """A model and transcoders that replace its MLPs; ``layers[i]`` is the model layer of the i-th."""

    def __init__(self, lm, transcoders: Dictionary, *, require_all: bool = True):
        if not isinstance(transcoders, LayeredTranscoder):
            raise MonosemanticError(f"a replacement model needs transcoders at many layers (arch 'transcoders' or "
                                    f"'clt'); got a {getattr(transcoders, 'arch', type(transcoders).__name__)!r} "
                                    "dictionary; train one with `monosemantic replace`")
        model = transcoders.config.model
        if model is not None and model != lm.name:
            raise MonosemanticError(f"the transcoders were trained on {model}, not {lm.name}; load the model they "
                                    "belong to")
        self.lm, self.transcoders = lm, transcoders
        self.layers = _layers(transcoders)
        widths = lm.widths([f"blocks.{self.layers[0]}.mlp_in", f"blocks.{self.layers[0]}.mlp_out"])
        if tuple(widths.values()) != (transcoders.d_in, transcoders.d_out):
            raise MonosemanticError(f"{lm.name}'s MLPs map {' -> '.join(map(str, widths.values()))} but the "
                                    f"transcoders map {transcoders.d_in} -> {transcoders.d_out}; they belong to "
                                    "another model")
        if max(self.layers) >= lm.n_layers:
            raise MonosemanticError(f"the transcoders cover layer {max(self.layers)} but {lm.name} has layers "
                                    f"0-{lm.n_layers - 1}; they belong to another model")
        missing = sorted(set(range(lm.n_layers)) - set(self.layers))
        if require_all and missing:
            raise MonosemanticError(f"the transcoders cover layers {_ranges(self.layers)} of {lm.name} but not "
                                    f"{_ranges(missing)}; a replacement model needs every layer (train them with "
                                    "`monosemantic replace`)")

    @contextmanager
    def spliced(self, editor: Editor | None = None, positions_BS: Tensor | None = None) -> Iterator[None]:
        """Within the block, every covered MLP output is replaced (at ``positions_BS`` only, when given)."""
        editor = editor or Editor()
        t = self.transcoders
        inputs: dict[int, Tensor] = {}
        codes: dict[int, Tensor] = {}
        targets = {i: [(j, t.decoder_rows(j)) for j in range(i + 1)] for i in range(len(self.layers))}

        def record(i: int):
            def fn(acts_BSD: Tensor) -> Tensor:
                inputs[i] = acts_BSD
                return acts_BSD
            return fn

        def replace(i: int):
            def fn(real_BSD: Tensor) -> Tensor:
                B, S, _ = real_BSD.shape
                x_ND = inputs.pop(i).reshape(B * S, -1)
                pre_NF, codes_NF = t.encode_layer(x_ND, i)
                codes[i] = editor.codes(i, pre_NF, codes_NF)
                out_ND = t.b_dec[i].expand(B * S, -1)
                for j, rows in targets[i]:
                    if i in rows:
                        out_ND = out_ND + codes[j] @ rows[i]
                skip = t.skip_out(x_ND, i)
                if skip is not None:
                    out_ND = out_ND + skip
                new_ND = editor.output(i, out_ND, real_BSD.reshape(B * S, -1), x_ND)
                new_BSD = new_ND.reshape(B, S, -1).to(real_BSD.dtype)
                if positions_BS is not None:
                    new_BSD = torch.where(positions_BS[..., None].to(real_BSD.device), new_BSD, real_BSD)
                return new_BSD
            return fn

        with ExitStack() as stack:
            stack.enter_context(eval_mode(t))
            for i, layer in enumerate(self.layers):
                stack.enter_context(splice(self.lm, f"blocks.{layer}.mlp_in", record(i)))
                stack.enter_context(splice(self.lm, f"blocks.{layer}.mlp_out", replace(i)))
            yield


def _layers(transcoders: LayeredTranscoder) -> list[int]:
    layers = []
    for i, (site_in, site_out) in enumerate(zip(transcoders.sites, transcoders.sites_out)):
        m_in, m_out = _MLP_SITE.match(site_in or ""), _MLP_SITE.match(site_out or "")
        if not (m_in and m_out and m_in.group(2) == "in" and m_out.group(2) == "out"
                and m_in.group(1) == m_out.group(1)):
            raise MonosemanticError(f"the transcoders' layer {i} maps {site_in} -> {site_out}; a replacement model "
                                    "needs blocks.L.mlp_in -> blocks.L.mlp_out at each layer")
        layers.append(int(m_in.group(1)))
    if layers != sorted(set(layers)):
        raise MonosemanticError(f"the transcoders' layers {layers} are not in increasing order without repeats")
    return layers


def _ranges(values: list[int]) -> str:
    spans, start = [], None
    for a, b in zip(values, values[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            spans.append(str(start) if start == a else f"{start}-{a}")
            start = None
    return ", ".join(spans)


@dataclass(frozen=True)
class ReplacementResult(Result):
    """Next-token loss of the model with every covered MLP replaced at once."""

    layers: tuple[int, ...]  # model layers replaced
    windows: dict  # which windows: count, length, fingerprint and, from a corpus, its description
    n_tokens: int  # scored positions
    ce_clean: float  # mean cross-entropy (nats) of the model
    ce_replaced: float  # ... with the transcoders' outputs in place of the MLPs'
    ce_zero: float  # ... with every replaced MLP's output zeroed
    loss_recovered: float  # (ce_zero - ce_replaced) / (ce_zero - ce_clean)
    kl_replaced: float  # mean KL(clean || replaced) of the next-token distributions
    mean_l0: float  # mean active latents per layer and position


def evaluate_replacement(replacement: Replacement, windows_WS: Tensor | None = None, *,
                         corpus: CorpusSpec = "stdlib", n_windows: int = 32, context_length: int = 128,
                         holdout: float | None = 0.05, batch_size: int = 8) -> ReplacementResult:
    """Splice every layer at once; positions follow the splice evaluation's rule (not the first, not special)."""
    lm = replacement.lm
    if windows_WS is None:
        lm.check_context(context_length)
        source = text_source(corpus)
        windows_WS = corpus_windows(lm.tokenizer, source, n_windows=n_windows, context_length=context_length,
                                    holdout=holdout)
        origin = {"corpus": source.describe(), "holdout": holdout}
    else:
        windows_WS = check_windows(windows_WS)
        lm.check_context(windows_WS.shape[1])
        origin = {"corpus": None}
    stored_WS = storable_mask(windows_WS, lm.tokenizer.all_special_ids)
    scored_WS = stored_WS.clone()
    scored_WS[:, -1] = False
    totals: dict[str, float] = dict.fromkeys(("clean", "replaced", "zero", "kl"), 0.0)
    counter = _Counter()
    with torch.inference_mode():
        for start in range(0, windows_WS.shape[0], batch_size):
            ids_BS = windows_WS[start:start + batch_size].to(lm.device)
            stored_BS, scored_BS = (m[start:start + batch_size].to(lm.device) for m in (stored_WS, scored_WS))
            targets_P = ids_BS[:, 1:][scored_BS[:, :-1]]
            clean_PV = _log_probs(lm, ids_BS, scored_BS)
            with replacement.spliced(counter, stored_BS):
                replaced_PV = _log_probs(lm, ids_BS, scored_BS)
            with replacement.spliced(_Zero(), stored_BS):
                zero_PV = _log_probs(lm, ids_BS, scored_BS)
            for run, lp in (("clean", clean_PV), ("replaced", replaced_PV), ("zero", zero_PV)):
                totals[run] += float(-lp.gather(1, targets_P[:, None]).sum(dtype=torch.float64))
            totals["kl"] += float((clean_PV.exp() * (clean_PV - replaced_PV)).sum(dtype=torch.float64))
    n = int(scored_WS.sum())
    if n == 0:
        raise MonosemanticError("the windows have no position to score; pass longer windows of ordinary text")
    ce = {run: totals[run] / n for run in ("clean", "replaced", "zero")}
    windows = {"n_windows": windows_WS.shape[0], "context_length": windows_WS.shape[1],
               "fingerprint": fingerprint(windows_WS), **origin}
    return ReplacementResult(layers=tuple(replacement.layers), windows=windows, n_tokens=n, ce_clean=ce["clean"],
                             ce_replaced=ce["replaced"], ce_zero=ce["zero"],
                             loss_recovered=ratio(ce["zero"] - ce["replaced"], ce["zero"] - ce["clean"]),
                             kl_replaced=totals["kl"] / n, mean_l0=counter.mean())


def _log_probs(lm, ids_BS: Tensor, scored_BS: Tensor) -> Tensor:
    logits_BSV = lm.model(input_ids=ids_BS, use_cache=False).logits
    return torch.log_softmax(logits_BSV[:, :-1][scored_BS[:, :-1]].float(), dim=-1)


class _Zero(Editor):
    def output(self, layer, out_ND, real_ND, x_ND):
        return torch.zeros_like(real_ND)


class _Counter(Editor):
    """Counts active codes (every position, including those the mask keeps real)."""

    def __init__(self) -> None:
        self.active, self.rows = 0, 0

    def codes(self, layer, pre_NF, codes_NF):
        self.active += int((codes_NF > 0).sum())
        self.rows += codes_NF.shape[0]
        return codes_NF

    def mean(self) -> float:
        return self.active / max(self.rows, 1)
