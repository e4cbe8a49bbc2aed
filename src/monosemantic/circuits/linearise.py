"""A model made linear in its residual stream: attention patterns and norm denominators frozen.

Within ``with frozen(lm) as freeze:``, every attention layer's pattern (softmax of queries and
keys) and every normalisation's denominator (RMSNorm's ``rsqrt(mean x^2 + eps)``, LayerNorm's
``rsqrt(var + eps)``) are constants: the first forward records them (``freeze.record``), and
later forwards replay the recorded ones (``freeze.replay()``), so the forward can be evaluated at
other inputs as the same linear map. With the MLPs replaced by transcoders whose activations
and error terms are inputs (see ``attribution``), what is left is affine in the token
embeddings, the feature activations and the error terms: gradients are then exact
decompositions, which is what an attribution graph needs.

The values of the first forward equal the model's own (the patterns are computed by the
model's eager attention, the norms by their own formula), up to float rounding.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import MonosemanticError

IMPLEMENTATION = "monosemantic_frozen"


class Freeze:
    """The constants of one forward: per attention module its pattern, per norm module its scale."""

    def __init__(self) -> None:
        self.patterns: dict[str, Tensor] = {}
        self.scales: dict[str, Tensor] = {}
        self.gains: dict[str, Tensor | None] = {}  # per norm: its weight, 1 + weight, or None
        self.recording = True

    def replay(self) -> Freeze:
        """Later forwards reuse the recorded constants (inputs of the same length only)."""
        self.recording = False
        return self


_ACTIVE: list[tuple[Freeze, dict[int, str]]] = []  # the innermost frozen() block, for the attention function


def _frozen_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, **kwargs):
    freeze, names = _ACTIVE[-1]
    name = names[id(module)]
    if freeze.recording:
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            raise MonosemanticError(f"{type(module).__name__} has no eager attention to read patterns from; "
                                    "attribution supports Hugging Face models built on eager_attention_forward")
        _, pattern = eager(module, query.detach(), key.detach(), value.detach(), attention_mask, **kwargs)
        freeze.patterns[name] = pattern.detach()
    pattern = freeze.patterns[name]
    groups = pattern.shape[1] // value.shape[1]  # grouped-query attention shares each value head
    value_BHSD = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    out_BHSD = torch.matmul(pattern.to(value.dtype), value_BHSD)
    return out_BHSD.transpose(1, 2).contiguous(), pattern


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, _frozen_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def _norm_hook(name: str, freeze: Freeze, module: nn.Module):
    layer_norm = isinstance(module, nn.LayerNorm)
    eps = next((getattr(module, a) for a in ("variance_epsilon", "eps", "epsilon") if hasattr(module, a)), None)
    if eps is None:
        raise MonosemanticError(f"normalisation {name} ({type(module).__name__}) has no eps; attribution supports "
                                "RMSNorm and LayerNorm")

    def hook(_m, args, out):
        x = args[0].float()
        centred = x - x.mean(-1, keepdim=True) if layer_norm else x
        if freeze.recording:
            freeze.scales[name] = torch.rsqrt(centred.detach().pow(2).mean(-1, keepdim=True) + eps)
        if name not in freeze.gains:
            real = centred.detach() * torch.rsqrt(centred.detach().pow(2).mean(-1, keepdim=True) + eps)
            freeze.gains[name] = _gain(name, module, real, out.detach().float(), layer_norm)
        gain = freeze.gains[name]
        y = centred * freeze.scales[name]
        if gain is not None:
            y = y * gain
        if layer_norm and module.bias is not None:
            y = y + module.bias
        return y.to(out.dtype)

    return hook


def _gain(name: str, module: nn.Module, normed: Tensor, out: Tensor, layer_norm: bool) -> Tensor | None:
    """The per-channel gain the norm applies: its weight, or 1 + weight (Gemma), checked on its own output."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None) if layer_norm else None
    bias = bias.detach() if isinstance(bias, Tensor) else None
    for gain in [None] if weight is None else [weight, 1 + weight]:
        y = normed if gain is None else normed * gain.detach().float()
        if torch.allclose(y if bias is None else y + bias, out, rtol=1e-3, atol=1e-4):
            return None if gain is None else gain.detach()
    raise MonosemanticError(f"normalisation {name} ({type(module).__name__}) is neither x*scale*w nor "
                            "x*scale*(1+w); attribution cannot freeze it")


def norm_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every normalisation module (RMSNorm and LayerNorm variants), by path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("Norm")}


@contextmanager
def frozen(lm, replay: Freeze | None = None) -> Iterator[Freeze]:
    """Run ``lm.model`` with frozen attention patterns and norm denominators (see the module doc).

    Without ``replay`` the first forward records the constants; with it, forwards use its.
    """
    model = lm.model
    attention = {n: m for n, m in model.named_modules() if n.endswith(("self_attn", ".attn", ".attention"))
                 and hasattr(m, "config")}
    if not attention:
        raise MonosemanticError(f"found no attention modules in {lm.name}; attribution supports Hugging Face "
                                "causal LMs built on the attention interface (Llama, Qwen, Gemma, Mistral...)")
    _register()
    freeze = Freeze() if replay is None else replay.replay()
    before = model.config._attn_implementation
    handles = [m.register_forward_hook(_norm_hook(n, freeze, m)) for n, m in norm_modules(model).items()]
    _ACTIVE.append((freeze, {id(m): n for n, m in attention.items()}))
    _set_attention(model, IMPLEMENTATION)
    try:
        yield freeze
    finally:
        _set_attention(model, before)
        _ACTIVE.pop()
        for handle in handles:
            handle.remove()


def _set_attention(model: nn.Module, implementation: str) -> None:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            config._attn_implementation_internal = implementation
