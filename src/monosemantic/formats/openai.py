"""openai/sparse_autoencoder checkpoints: one ``{layer}.pt`` state dict per autoencoder (import only).

Tensors: ``pre_bias [D]``, ``encoder.weight [F, D]``, ``latent_bias [F]``, ``decoder.weight
[D, F]``, statistics buffers (``stats_last_nonzero``, ``latents_activation_frequency``,
``latents_mean_square``, ignored), and the non-tensor entries ``activation`` ("ReLU" or
"TopK") and ``activation_state_dict`` (``{"k", "postact_fn"}``; the library's own ``state_dict``
of a TopK autoencoder also repeats them as ``activation.k`` and ``activation.postact_fn``).

The library computes ``latents = act((x - pre_bias) @ encoder.weight.T + latent_bias)`` and
``recons = latents @ decoder.weight.T + pre_bias``. TopK checkpoints also normalise inputs:
``x' = (x - mean) / (std + 1e-5)`` per row before encoding, and ``recons * std + mean`` after
decoding. That preprocessing is not affine, so it cannot be folded into weights; it becomes our
``input_norm="layer_norm"`` option, which applies exactly this inside ``encode``/``decode``
(``decode`` then needs the input: ``decode(codes, x)``). Codes are those of the normalised row,
as in the library. Such dictionaries are for inference; training one is refused.

Sites follow the release's folder names when the path has them
(``.../{location}/autoencoders/{layer}.pt``; locations ``resid_post_mlp``, ``resid_delta_mlp``,
``resid_delta_attn``, ``mlp_post_act``; ``resid_post_attn`` has no equivalent here).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from .architectures import arch_reading, names_read
from .common import check_names, checked
from .dictionary_learning import read_torch_file
from .inference import Inference, dictionary_from_inference

_STATS = {"stats_last_nonzero", "latents_activation_frequency", "latents_mean_square"}
_WEIGHTS = {"pre_bias", "encoder.weight", "latent_bias", "decoder.weight"}
_LOCATIONS = {"resid_post_mlp": "resid_post", "resid_delta_mlp": "mlp_out", "resid_delta_attn": "attn_out",
              "mlp_post_act": "mlp_hidden"}


def load_openai(path: str | os.PathLike) -> Dictionary:
    """Read an openai sparse_autoencoder ``.pt`` checkpoint as one of our dictionaries."""
    path = Path(path)
    where = str(path)
    state = read_torch_file(path)
    activation = state.get("activation", "ReLU")
    act_state = state.get("activation_state_dict", {})
    # The library's TopK module also writes its k and postact_fn into the outer state dict, as
    # "activation.k" and "activation.postact_fn", beside activation_state_dict.
    nested = {name.removeprefix("activation."): value for name, value in state.items()
              if name.startswith("activation.")}
    if nested and isinstance(act_state, dict):
        act_state = {**nested, **act_state}
    tensors = {name: value for name, value in state.items()
               if name not in ("activation", "activation_state_dict") and not name.startswith("activation.")}
    check_names(where, tensors, _WEIGHTS, _STATS)
    if tensors["encoder.weight"].ndim != 2:
        raise MonosemanticError(f"{where}: encoder.weight must be 2-d; got shape "
                                f"{tuple(tensors['encoder.weight'].shape)}")
    F, D = tensors["encoder.weight"].shape
    weights = {"W_enc": checked(where, tensors, "encoder.weight", (F, D)).T.contiguous(),
               "b_enc": checked(where, tensors, "latent_bias", (F,)),
               "W_dec": checked(where, tensors, "decoder.weight", (D, F)).T.contiguous(),
               "b_dec": checked(where, tensors, "pre_bias", (D,))}
    site = _site(path)
    arch = arch_reading("openai", activation) if isinstance(activation, str) else None
    if arch is None:
        raise MonosemanticError(f"{where}: activation {activation!r} is not supported; expected "
                                f"{' or '.join(names_read('openai'))}")
    options, input_norm = {}, "none"
    if activation == "TopK":
        if not isinstance(act_state, dict) or not isinstance(act_state.get("k"), int):
            raise MonosemanticError(f"{where}: a TopK checkpoint needs activation_state_dict with an integer k; "
                                    f"got {act_state!r}")
        if act_state.get("postact_fn", "ReLU") != "ReLU":
            raise MonosemanticError(f"{where}: TopK with postact_fn={act_state.get('postact_fn')!r} is not "
                                    "supported (only ReLU)")
        # The library turns normalisation on exactly for TopK checkpoints.
        options, input_norm = {"k": act_state["k"]}, "layer_norm"
    form = Inference(arch, weights, True, input_norm, site, site, _model(path, site), options)
    return dictionary_from_inference(form)


def _site(path: Path) -> str | None:
    parts = path.parts
    if not re.fullmatch(r"\d+", path.stem) or len(parts) < 3 or parts[-2] != "autoencoders":
        return None
    location = re.sub(r"_v\d+.*$", "", parts[-3])
    kind = _LOCATIONS.get(location)
    return f"blocks.{path.stem}.{kind}" if kind else None


def _model(path: Path, site: str | None) -> str | None:
    # The published checkpoints are for GPT-2 small; say so only when the path is recognisably theirs.
    return "gpt2" if site is not None and "gpt2-small" in path.parts else None
