"""sparsify (EleutherAI) folders: ``cfg.json`` + ``sae.safetensors``, one folder per hookpoint.

Tensors: ``encoder.weight [F, D]``, ``encoder.bias [F]``, ``W_dec [F, D]`` (the same layout as
ours and SAELens's: no transpose), ``b_dec [D]`` and, with ``skip_connection``, ``W_skip [D, D]``
applied as ``x @ W_skip.T``. Encoding is ``topk(relu((x - b_dec) @ encoder.weight.T + bias), k)``,
without the ``b_dec`` subtraction for transcoders (``transcode``); that is our topk dictionary
with ``apply_b_dec_to_input = not transcode``. The ``groupmax`` activation has no counterpart
here and is refused. A run folder holds one sub-folder per hookpoint (``layers.6``,
``layers.6.mlp``, ...); the hookpoint names the sites.

``transcode`` also says what sparsify feeds the coder: the hookpoint module's input (predicting
its output) with it, the module's output without it, skip connection or not. So it is written
from the sites (a dictionary reading one site and writing another), never from the centring,
which is folded into the encoder bias whichever way the format needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from . import sites
from .architectures import ARCHITECTURES, arch_reading, exportable, names_read
from .common import (
    check_names,
    checked,
    config_int,
    json_writer,
    read_json,
    read_safetensors,
    write_folder,
)
from .inference import Inference, dictionary_from_inference, inference_of, with_centring

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae.safetensors"


def hookpoints(run_folder: Path) -> list[str]:
    """The hookpoint sub-folders of a sparsify run (each with cfg.json and sae.safetensors)."""
    return sorted(p.name for p in run_folder.iterdir()
                  if p.is_dir() and (p / CFG_NAME).is_file() and (p / WEIGHTS_NAME).is_file())


def load_sparsify(folder: str | os.PathLike) -> Dictionary:
    """Read one sparsify hookpoint folder as one of our topk dictionaries."""
    folder = Path(folder)
    where = str(folder / CFG_NAME)
    cfg = read_json(folder / CFG_NAME, "sparsify cfg.json")
    activation = cfg.get("activation", "topk")
    arch = arch_reading("sparsify", activation) if isinstance(activation, str) else None
    if arch is None:
        raise MonosemanticError(f"{where}: sparsify activation {activation!r} is not supported (supported: "
                                f"{', '.join(names_read('sparsify'))}; groupmax has no counterpart here)")
    D = config_int(where, cfg, "d_in")
    F = cfg.get("num_latents") or D * config_int(where, cfg, "expansion_factor")
    F = config_int(where, {"num_latents": F}, "num_latents")
    transcode, skip = bool(cfg.get("transcode", False)), bool(cfg.get("skip_connection", False))
    path = folder / WEIGHTS_NAME
    tensors = read_safetensors(path)
    shapes = {"encoder.weight": (F, D), "encoder.bias": (F,), "W_dec": (F, D), "b_dec": (D,)}
    if skip:
        shapes["W_skip"] = (D, D)
    check_names(str(path), tensors, set(shapes))
    t = {name: checked(str(path), tensors, name, shape) for name, shape in shapes.items()}
    weights = {"W_enc": t["encoder.weight"].T.contiguous(), "b_enc": t["encoder.bias"], "W_dec": t["W_dec"],
               "b_dec": t["b_dec"]}
    if skip:
        weights["W_skip"] = t["W_skip"]
    # Without transcode sparsify feeds the module's output, skip connection or not.
    site_in, site_out = sites.sparsify_sites(folder.name, transcode)
    form = Inference(arch, weights, not transcode, site_in=site_in, site_out=site_out,
                     options={"k": config_int(where, cfg, "k")})
    return dictionary_from_inference(form)


def save_sparsify(dictionary: Dictionary, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a topk dictionary as a sparsify hookpoint folder."""
    form = inference_of(dictionary, "sparsify")
    activation = exportable(form.arch, "sparsify").sparsify
    if activation is None:
        held = ", ".join(arch for arch, row in ARCHITECTURES.items() if row.sparsify)
        raise MonosemanticError(f"sparsify stores top-k dictionaries only ({held}); this one is {form.arch!r} "
                                "(save it with --to saelens, dictionary_learning or native)")
    if form.d_out != form.d_in:
        raise MonosemanticError(f"sparsify transcoders predict a site of the input's width; this one maps "
                                f"{form.d_in} to {form.d_out} (save it with --to saelens or native)")
    if form.input_norm != "none":
        raise MonosemanticError(f"sparsify has no input normalisation (input_norm={form.input_norm}); "
                                "save it with --to saelens or native")
    transcode = _transcodes(form)
    form = with_centring(form, not transcode)  # sparsify centres exactly the inputs of non-transcoders
    D, F = form.d_in, form.d_sae
    cfg = {"activation": activation, "expansion_factor": F // D if F % D == 0 else 32, "normalize_decoder": True,
           "num_latents": F, "k": form.k, "multi_topk": False, "skip_connection": form.skip,
           "transcode": transcode, "d_in": D}
    t = form.tensors
    tensors = {"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"], "W_dec": t["W_dec"],
               "b_dec": t["b_dec"]}
    if form.skip:
        tensors["W_skip"] = t["W_skip"]

    def write_weights(path: Path) -> None:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path, metadata={"format": "pt"})

    return write_folder(folder, {WEIGHTS_NAME: write_weights, CFG_NAME: json_writer(cfg)}, overwrite=overwrite)


def _transcodes(form: Inference) -> bool:
    """Whether sparsify should feed this dictionary the module's input rather than its output."""
    if form.site_in is not None or form.site_out is not None:
        return (form.site_out or form.site_in) != form.site_in
    # No sites to go by: a skip connection left uncentred is how transcoders come (ours and
    # sparsify's), while a sparsify SAE with a skip connection centres its input.
    return form.skip and not form.centred
