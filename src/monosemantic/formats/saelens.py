"""SAELens v6 folders: ``cfg.json`` + ``sae_weights.safetensors`` (and the flat pre-6.0 config).

Architectures read: ``standard``, ``topk``, ``jumprelu``, ``gated``, ``transcoder``,
``skip_transcoder``, ``jumprelu_transcoder``, ``jumprelu_skip_transcoder``, and the training
forms ``batchtopk`` / ``matryoshka_batchtopk`` (read as our batchtopk / matryoshka).
Written: the inference architectures, as SAELens's ``save_inference_model`` writes them: our
batchtopk and matryoshka become ``jumprelu`` with their one threshold repeated per latent.

Semantics handled exactly: ``apply_b_dec_to_input``; ``normalize_activations`` of
``layer_norm`` / ``constant_norm_rescale`` (our ``input_norm`` option) and
``expected_average_only_in`` (folded into the weights with the factor from
``activation_scaler.json`` or ``input_scale=``, as SAELens folds it); topk's
``rescale_acts_by_decoder_norm`` (folded, as SAELens does on its inference save); the legacy
``scaling_factor`` tensor (folded into ``W_dec``). Anything else is refused with the reason.
Which SAELens architecture each of ours becomes, and back, is in :mod:`.architectures`.

Metadata fields that ours have no place for (``prepend_bos``, ``context_size``,
``neuronpedia_id``, ``dataset_path``, ...) and ``reshape_activations`` are kept on the loaded
dictionary and written again when it is saved as SAELens (see :mod:`.inference`); the model and
hook names are written from ours where ours has them (a ``hook_z`` hook has no site here, so
its name is kept as read).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

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
from .inference import (
    Inference,
    as_jumprelu,
    dictionary_from_inference,
    inference_of,
    with_centring,
)

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"
SCALER_NAME = "activation_scaler.json"
WRITTEN_VERSION = "6.0.0"  # the cfg layout we write; SAELens upgrades configs that claim less than 6

_METADATA_KEYS = {"model_name", "hook_name", "model_class_name", "hook_head_index", "model_from_pretrained_kwargs",
                  "prepend_bos", "exclude_special_tokens", "neuronpedia_id", "context_size", "seqpos_slice",
                  "dataset_path", "sae_lens_version", "sae_lens_training_version", "hook_name_out",
                  "hook_head_index_out", "hf_hook_name", "hf_hook_name_out", "sequence_separator_token",
                  "disable_concat_sequences"}


def _major_version(cfg: dict) -> int | None:
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    match = re.match(r"\s*(\d+)", str(version)) if version else None
    return int(match.group(1)) if match else None


def upgrade_config(cfg: dict) -> dict:
    """A cfg.json in the v6 layout; flat pre-6.0 configs (no version, or < 6) are upgraded.

    The rules are SAELens's: ``hook_point`` -> ``hook_name``, ``activation_fn_str`` ->
    ``activation_fn`` with ``topk`` + ``activation_fn_kwargs.k`` meaning architecture ``topk``,
    ``apply_b_dec_to_input`` defaulting to true, boolean ``normalize_activations`` meaning
    ``expected_average_only_in``, and the model/hook fields moved under ``metadata``.
    """
    major = _major_version(cfg)
    if major is not None and major >= 6:
        return cfg
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "activation_fn_str": "activation_fn"}
    flat = {renames.get(key, key): value for key, value in cfg.items()}
    new = {key: value for key, value in flat.items() if key not in _METADATA_KEYS and key != "metadata"}
    new.setdefault("apply_b_dec_to_input", True)
    new.setdefault("architecture", "standard")
    new.setdefault("finetuning_scaling_factor", False)
    k = (flat.get("activation_fn_kwargs") or {}).get("k")
    if flat.get("activation_fn") == "topk" and k is not None:
        new["architecture"], new["k"] = "topk", k
    norm = flat.get("normalize_activations")
    new["normalize_activations"] = ("expected_average_only_in" if norm else "none") if isinstance(norm, bool) or \
        norm is None else norm
    new["metadata"] = {**(flat.get("metadata") or {}),
                       **{key: value for key, value in flat.items() if key in _METADATA_KEYS}}
    return new


def load_saelens(folder: str | os.PathLike, *, input_scale: float | None = None) -> Dictionary:
    """Read a SAELens folder as one of our dictionaries (eval mode, float32)."""
    folder = Path(folder)
    where = str(folder / CFG_NAME)
    # Weights may be saved in any float dtype; they are read as float32 (exact for bf16 and fp16).
    cfg = upgrade_config(read_json(folder / CFG_NAME, "SAELens cfg.json"))
    arch = cfg.get("architecture", "standard")
    ours = arch_reading("saelens", arch) if isinstance(arch, str) else None
    if ours is None:
        raise MonosemanticError(f"{where}: SAELens architecture {arch!r} is not supported; supported: "
                                f"{', '.join(names_read('saelens'))}")
    row = ARCHITECTURES[ours]
    activation, (transcoder, skip) = row.activation, _transcoder_kind(arch)
    # Pre-6.0 configs name the activation; v6 ones imply it by the architecture.
    if cfg.get("activation_fn", "relu") not in ("relu", "topk"):
        raise MonosemanticError(f"{where}: activation_fn {cfg['activation_fn']!r} is not supported (relu and topk "
                                "are)")
    D, F = config_int(where, cfg, "d_in"), config_int(where, cfg, "d_sae")
    D_out = config_int(where, cfg, "d_out") if transcoder else D
    tensors = read_safetensors(folder / WEIGHTS_NAME)
    weights = _read_weights(str(folder / WEIGHTS_NAME), tensors, activation, arch, D, F, D_out, skip)
    centred = bool(cfg.get("apply_b_dec_to_input", not transcoder))
    weights = _fold_legacy_scaling(where, cfg, tensors, weights, F)
    if activation == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norm(weights)
    input_norm = _input_norm(folder, cfg, weights, input_scale)
    metadata = cfg.get("metadata") or {}
    site_in = sites.to_ours(metadata.get("hook_name"))
    site_out = sites.to_ours(metadata.get("hook_name_out")) if transcoder else site_in
    options: dict[str, Any] = {"k": config_int(where, cfg, "k")} if "k" in row.options else {}
    if "group_sizes" in row.options:
        options["group_sizes"] = _group_sizes(where, cfg, F)
    form = Inference(ours, weights, centred, input_norm, site_in, site_out, metadata.get("model_name"), options,
                     {"saelens": _kept(cfg)})
    return dictionary_from_inference(form)


def _kept(cfg: dict) -> dict:
    """What of ``cfg`` ours has no place for, to write again: metadata (all but the version) and reshaping."""
    metadata = {key: value for key, value in (cfg.get("metadata") or {}).items() if key != "sae_lens_version"}
    return {"metadata": metadata, "reshape_activations": cfg.get("reshape_activations", "none")}


def _transcoder_kind(arch: str) -> tuple[bool, bool]:
    """(transcoder, skip) of a SAELens architecture, by SAELens's naming: ``[prefix_][skip_]transcoder``."""
    return arch.endswith("transcoder"), arch.endswith("skip_transcoder")


def _read_weights(where: str, tensors: dict, activation: str, arch: str, D: int, F: int, D_out: int,
                  skip: bool) -> dict:
    shapes = {"W_enc": (D, F), "W_dec": (F, D_out), "b_dec": (D_out,)}
    shapes.update({"b_gate": (F,), "b_mag": (F,), "r_mag": (F,)} if activation == "gated" else {"b_enc": (F,)})
    if skip:
        shapes["W_skip"] = (D_out, D)
    optional = {"scaling_factor", "finetuning_scaling_factor"}
    if activation == "jumprelu":
        # Inference saves hold threshold; a training SAE's save_model may hold log_threshold instead.
        optional |= {"threshold", "log_threshold"}
        if not {"threshold", "log_threshold"} & tensors.keys():
            raise MonosemanticError(f"{where}: a {arch} SAE needs tensor threshold (or log_threshold); "
                                    f"found {', '.join(sorted(tensors))}")
    if activation == "threshold":
        shapes["topk_threshold"] = ()
    check_names(where, tensors, set(shapes), optional)
    weights = {name: checked(where, tensors, name, shape) for name, shape in shapes.items()}
    if activation == "jumprelu":
        weights["threshold"] = (checked(where, tensors, "threshold", (F,)) if "threshold" in tensors
                                else checked(where, tensors, "log_threshold", (F,)).exp())
    if activation == "threshold":
        weights["threshold"] = weights.pop("topk_threshold")
    return weights


def _fold_legacy_scaling(where: str, cfg: dict, tensors: dict, weights: dict, F: int) -> dict:
    """Old SAEs multiplied codes by a per-latent ``scaling_factor`` before decoding; fold it into W_dec."""
    name = next((n for n in ("finetuning_scaling_factor", "scaling_factor") if n in tensors), None)
    if name is None:
        return weights
    factor_F = checked(where, tensors, name, (F,))
    weights["W_dec"] = weights["W_dec"] * factor_F[:, None]
    return weights


def _fold_decoder_norm(weights: dict) -> None:
    """topk with rescale_acts_by_decoder_norm: pre-acts times ||W_dec||, decoder rows divided by it."""
    norms_F = weights["W_dec"].norm(dim=-1)
    weights["W_enc"] = weights["W_enc"] * norms_F
    weights["b_enc"] = weights["b_enc"] * norms_F
    weights["W_dec"] = weights["W_dec"] / norms_F[:, None]


def _input_norm(folder: Path, cfg: dict, weights: dict, input_scale: float | None) -> str:
    norm = cfg.get("normalize_activations", "none")
    if norm in ("none", "layer_norm", "constant_norm_rescale"):
        return norm
    where = str(folder / CFG_NAME)
    if norm != "expected_average_only_in":
        raise MonosemanticError(f"{where}: normalize_activations={norm!r} cannot be represented (supported: none, "
                                "expected_average_only_in, layer_norm, constant_norm_rescale); fold it with SAELens "
                                "and save again")
    scale = input_scale if input_scale is not None else _scaler_factor(folder)
    if scale is None:
        raise MonosemanticError(
            f"{where}: normalize_activations is expected_average_only_in but the scaling factor is not stored "
            f"({SCALER_NAME} is missing or null), so the SAE expects inputs scaled by an unknown factor; pass "
            "input_scale= (use 1.0 to take the weights as they are)")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise MonosemanticError(f"input_scale must be a positive number; got {scale!r}")
    # SAELens's fold: the SAE saw x * scale; W_enc * scale, W_dec / scale, b_dec / scale act on raw x.
    weights["W_enc"] = weights["W_enc"] * scale
    weights["W_dec"] = weights["W_dec"] / scale
    weights["b_dec"] = weights["b_dec"] / scale
    return "none"


def _scaler_factor(folder: Path) -> float | None:
    if not (folder / SCALER_NAME).is_file():
        return None
    return read_json(folder / SCALER_NAME, "activation scaler").get("scaling_factor")


def _group_sizes(where: str, cfg: dict, F: int) -> list[int]:
    widths = cfg.get("matryoshka_widths") or [F]
    if not all(isinstance(w, int) and w > 0 for w in widths) or sorted(widths) != widths or widths[-1] > F:
        raise MonosemanticError(f"{where}: matryoshka_widths={widths!r} is invalid; expected increasing widths <= {F}")
    widths = widths if widths[-1] == F else [*widths, F]  # SAELens adds the final level too
    return [b - a for a, b in zip([0, *widths[:-1]], widths)]


# ----- export --------------------------------------------------------------------------------


def saelens_architecture(form: Inference) -> str:
    """The SAELens architecture that holds ``form``; MonosemanticError if SAELens has none."""
    names = exportable(form.arch, "SAELens").saelens
    name = names[(2 if form.skip else 1) if form.is_transcoder else 0]
    if name is None:
        kind = "transcoder" if form.is_transcoder else "autoencoder"
        held = ", ".join(arch for arch, row in ARCHITECTURES.items() if row.saelens[1])
        raise MonosemanticError(f"SAELens has no {form.arch} {kind}; it stores transcoders of {held} "
                                "(save with --to native)")
    return name


def save_saelens(dictionary: Dictionary, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``dictionary`` as a SAELens v6 inference folder."""
    form = inference_of(dictionary, "SAELens")
    arch = saelens_architecture(form)
    # SAELens's inference architectures have no shared threshold: BatchTopK's is repeated per latent.
    form = as_jumprelu(form)
    if form.is_transcoder:
        form = with_centring(form, False)  # SAELens transcoders never centre their input
    kept = form.metadata.get("saelens", {})
    metadata = {"hook_head_index": None, **kept.get("metadata", {}), "sae_lens_version": WRITTEN_VERSION}
    # Ours where ours is known; a name read that has no site here (hook_z, hook_resid_mid) is kept.
    metadata["model_name"] = form.model or metadata.get("model_name")
    metadata["hook_name"] = sites.from_ours(form.site_in, "transformer_lens") or form.site_in or \
        metadata.get("hook_name")
    if form.is_transcoder:
        metadata["hook_name_out"] = sites.from_ours(form.site_out, "transformer_lens") or form.site_out or \
            metadata.get("hook_name_out")
    cfg = {"d_in": form.d_in, "d_sae": form.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": form.centred, "normalize_activations": form.input_norm,
           "reshape_activations": kept.get("reshape_activations", "none"), "architecture": arch,
           "metadata": metadata}
    if form.is_transcoder:
        cfg["d_out"] = form.d_out
    if arch == "topk":
        cfg.update(k=form.k, rescale_acts_by_decoder_norm=False)
    tensors = {name: t.contiguous() for name, t in form.tensors.items()}

    def write_weights(path: Path) -> None:
        save_file(tensors, path, metadata={"format": "pt"})

    return write_folder(folder, {WEIGHTS_NAME: write_weights, CFG_NAME: json_writer(cfg)}, overwrite=overwrite)

