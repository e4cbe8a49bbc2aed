"""Logit effects: what each latent's decoder direction does to the next-token logits, directly.

The direct path of a decoder row ``d`` (what the latent writes at its output site) to the
logits is ``(d * g) @ W_U.T``: the unembedding ``W_U [V, D]`` after the final norm's scale
``g`` — the usual "logit lens" approximation, which ignores the later layers and the norm's
division by the residual's RMS (a positive number per token, so the ranking of tokens is
unchanged). A LayerNorm's bias and centring add the same to every latent and are left out;
Gemma's norms scale by ``1 + weight``. Final-logit soft-capping (Gemma 2) is monotonic and
ignored.

A decoder that writes to the input of a linear layer (``mlp_hidden`` = the input of the MLP's
down projection) is first mapped through that layer's weight into the residual stream. Other
sites (``mlp_in``, module outputs) are read as if their direction were added to the residual.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import MonosemanticError

_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


def final_norm_scale(model: nn.Module) -> Tensor | None:
    """The final norm's per-coordinate scale ``[D]``, or None when no final norm is found."""
    base = getattr(model, "base_model", model)
    children = dict(base.named_children())
    norm = next((children[n] for n in _NORM_NAMES if n in children), None)
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, Tensor):
        return None
    return 1.0 + weight.float() if type(norm).__name__.startswith("Gemma") else weight.float()


def residual_directions(lm, site_out: str, W_dec_FO: Tensor) -> Tensor:
    """Decoder rows as residual-stream directions ``[F, D]`` (through a linear layer for its input sites)."""
    W_dec_FO = W_dec_FO.detach().float()
    site = lm.site(site_out)
    if site.point == "input":
        module = lm.model.get_submodule(site.module)
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor):
            if isinstance(module, nn.Linear) and weight.shape[1] == W_dec_FO.shape[1]:
                return W_dec_FO @ weight.detach().float().T.cpu()
            if type(module).__name__ == "Conv1D" and weight.shape[0] == W_dec_FO.shape[1]:  # GPT-2: [in, out]
                return W_dec_FO @ weight.detach().float().cpu()
    if W_dec_FO.shape[1] != lm.d_model:
        raise MonosemanticError(f"the decoder writes {W_dec_FO.shape[1]}-wide rows at {site_out}, which is not the "
                                f"residual stream ({lm.d_model}) nor the input of a linear layer; logit effects "
                                "need one of those")
    return W_dec_FO


@torch.inference_mode()
def logit_effects(lm, site_out: str, W_dec_FO: Tensor, n: int, *, chunk: int = 256
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(promoted ids, values, suppressed ids, values), each ``[F, n]``, most extreme first.

    Computed ``chunk`` latents at a time, so the full ``[F, V]`` matrix never exists.
    """
    unembed = lm.model.get_output_embeddings()
    if unembed is None or not isinstance(getattr(unembed, "weight", None), Tensor):
        raise MonosemanticError(f"{lm.name} has no output embedding to read logit effects through")
    W_U_VD = unembed.weight.detach().float().cpu()
    directions_FD = residual_directions(lm, site_out, W_dec_FO)
    scale_D = final_norm_scale(lm.model)
    if scale_D is not None:
        directions_FD = directions_FD * scale_D.cpu()
    n = min(n, W_U_VD.shape[0])
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, directions_FD.shape[0], chunk):
        logits_NV = directions_FD[start:start + chunk] @ W_U_VD.T
        up, down = torch.topk(logits_NV, n, dim=1), torch.topk(logits_NV, n, dim=1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    promoted_ids, promoted, suppressed_ids, suppressed = (torch.cat(p) for p in zip(*parts))
    return promoted_ids, promoted, suppressed_ids, suppressed
