"""Top examples of a graph's features: where each fires most over some text, for cards and pages.

One pass over token windows with the transcoders spliced in as observers (the model's own MLP
outputs are kept), recording only the wanted latents of each layer. Positions follow the
harvest's rule: not the first of a window, not a special token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import storable_mask
from .replacement import Editor, Replacement


@dataclass(frozen=True)
class Example:
    tokens: list[str]  # the context shown, ending a couple of tokens after the peak
    acts: list[float]  # the feature's activation on each
    peak: int  # index of the strongest token in ``tokens``

    def text(self) -> str:
        """The context with the peak token in guillemets."""
        return "".join(f"«{t}»" if i == self.peak else t for i, t in enumerate(self.tokens))


class _Watch(Editor):
    def __init__(self, wanted: dict[int, Tensor]):
        self.wanted, self.seen = wanted, {}

    def codes(self, layer, pre_NF, codes_NF):
        if layer in self.wanted:
            self.seen[layer] = codes_NF[:, self.wanted[layer]].detach()
        return codes_NF

    def output(self, layer, out_ND, real_ND, x_ND):
        return real_ND


def feature_examples(replacement: Replacement, features: Iterable[tuple[int, int]], windows_WS: Tensor, *,
                     top: int = 5, before: int = 12, after: int = 2, batch_size: int = 8
                     ) -> dict[tuple[int, int], list[Example]]:
    """``{(model layer, latent): examples}``, strongest first, for each of ``features``."""
    lm = replacement.lm
    features = sorted(set(features))
    wanted: dict[int, list[int]] = {}
    for layer, latent in features:
        wanted.setdefault(replacement.layers.index(layer), []).append(latent)
    index = {i: torch.tensor(latents) for i, latents in wanted.items()}
    mask_WS = storable_mask(windows_WS, lm.tokenizer.all_special_ids)
    acts: dict[int, list[Tensor]] = {i: [] for i in wanted}
    with torch.inference_mode():
        for start in range(0, windows_WS.shape[0], batch_size):
            ids_BS = windows_WS[start:start + batch_size]
            watch = _Watch(index)
            with replacement.spliced(watch):
                lm.model(input_ids=ids_BS.to(lm.device), use_cache=False)
            for i in wanted:
                acts[i].append(watch.seen[i].float().cpu().view(*ids_BS.shape, -1))
    found: dict[tuple[int, int], list[Example]] = {}
    for i, latents in wanted.items():
        acts_WSK = torch.cat(acts[i]).masked_fill(~mask_WS[..., None], 0.0)
        for j, latent in enumerate(latents):
            flat = acts_WSK[..., j].flatten()
            best = flat.topk(min(top, flat.numel()))
            examples = []
            for value, where in zip(best.values.tolist(), best.indices.tolist()):
                if value <= 0:
                    break
                w, s = divmod(where, windows_WS.shape[1])
                lo, hi = max(0, s - before), min(windows_WS.shape[1], s + after + 1)
                examples.append(Example([lm.tokenizer.decode([t]) for t in windows_WS[w, lo:hi].tolist()],
                                        acts_WSK[w, lo:hi, j].tolist(), s - lo))
            found[(replacement.layers[i], latent)] = examples
    return found
