"""circuit-tracer's transcoder folders, and Gemma Scope transcoders, as ``transcoders``/``clt`` dictionaries.

A circuit-tracer folder is a ``config.yaml`` and weights, the layout its loader reads and its
local cache writes:

- ``model_kind``: ``transcoder_set`` (one transcoder per layer: ``layer_{i}.safetensors`` with
  ``W_enc [F, D]``, ``W_dec [F, D]``, ``b_enc [F]``, ``b_dec [D]``, optional
  ``activation_function.threshold [F]`` (JumpReLU), ``W_skip [D, D]`` applied as
  ``x @ W_skip.T``, and ``k`` (a 0-d integer) for top-k) or ``cross_layer_transcoder``
  (``W_enc_{i}.safetensors`` with ``W_enc_{i} [F, D]``, ``b_enc_{i} [F]``, ``b_dec_{i} [D]`` (the
  bias of output layer i), optional ``threshold_{i} [F]`` and ``W_skip_{i} [D, D]`` applied as
  ``x @ W_skip_i``; ``W_dec_{i}.safetensors`` with ``W_dec_{i} [F, L - i, D]``);
- ``feature_input_hook`` / ``feature_output_hook``: TransformerLens hook names relative to
  ``blocks.{layer}.``; ``mlp.hook_in`` is our ``mlp_in``, ``hook_mlp_out`` our ``mlp_out`` (what the
  MLP adds to the residual stream, after a post-MLP norm where there is one), and ``mlp.hook_out``
  the MLP's own output (our ``mlp_out`` in families without a post-MLP norm);
- ``model_name``, and ``activation``/``k`` for top-k transcoder sets.

Encoding is ``x @ W_enc.T + b_enc`` (no centring, no input normalisation), decoding
``acts @ W_dec + b_dec``, so the weights map one to one onto ours; only the skip path of a
CLT is stored transposed. circuit-tracer's CLTs have ReLU or JumpReLU activations and no top-k,
so a top-k CLT is refused rather than written as something it is not. Hooks with no site here
(``hook_resid_mid``: the residual stream before the pre-MLP norm) are refused on reading.

Gemma Scope transcoders (``params.npz`` per layer: ``W_enc [D, F]``, ``W_dec [F, D]``, ``b_enc``,
``b_dec``, ``threshold``; JumpReLU, from the MLP input after its norm to the MLP's contribution
to the residual stream) are read by ``load_gemma_scope_transcoders`` from one file per layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..dictionaries import CrossLayerTranscoder, Dictionary, LayeredTranscoder, make_dictionary
from ..errors import MonosemanticError
from .common import check_names, checked, read_safetensors, write_folder

CONFIG_NAME = "config.yaml"
KINDS = {"transcoders": "transcoder_set", "clt": "cross_layer_transcoder"}
INPUT_HOOKS = {"mlp.hook_in": "mlp_in"}
OUTPUT_HOOKS = {"hook_mlp_out": "mlp_out", "mlp.hook_out": "mlp_out"}
THRESHOLD = "activation_function.threshold"


def save_circuit_tracer(dictionary: Dictionary, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``transcoders`` or ``clt`` as a circuit-tracer folder (config.yaml and per-layer safetensors)."""
    if not isinstance(dictionary, LayeredTranscoder):
        raise MonosemanticError(f"circuit-tracer stores transcoders at many layers (arch transcoders or clt); this "
                                f"is a {dictionary.arch!r} dictionary (save it with --to native, saelens, ...)")
    t = dictionary
    activation = t.options["activation"]
    if isinstance(t, CrossLayerTranscoder) and activation == "topk":
        raise MonosemanticError("circuit-tracer's cross-layer transcoders have ReLU or JumpReLU activations, not "
                                "top-k; this clt's codes cannot be stored there exactly (keep it native)")
    S, F = t.n_layers, t.per_layer
    layers = _layer_numbers(t)
    if layers != list(range(S)):
        raise MonosemanticError(f"circuit-tracer numbers transcoders by layer from 0 with none missing; these cover "
                                f"layers {layers} (train every layer, or keep them native)")
    config = {"model_kind": KINDS[t.arch], "feature_input_hook": "mlp.hook_in",
              "feature_output_hook": "hook_mlp_out"}
    if t.config.model:
        config["model_name"] = t.config.model
    if activation == "topk":
        config.update(activation="topk", k=t.options["k"])
    W_enc_SFD = t.W_enc.detach().float().transpose(1, 2)
    b_enc_SF = t.b_enc.detach().float().view(S, F)
    threshold_SF = t.threshold.detach().float().view(S, F) if activation == "jumprelu" else None
    writers = {CONFIG_NAME: _yaml_writer(config)}
    for i in range(S):
        if isinstance(t, CrossLayerTranscoder):
            enc = {f"W_enc_{i}": W_enc_SFD[i], f"b_enc_{i}": b_enc_SF[i], f"b_dec_{i}": t.b_dec[i].detach().float()}
            if threshold_SF is not None:
                enc[f"threshold_{i}"] = threshold_SF[i]
            if t.config.skip:
                enc[f"W_skip_{i}"] = t.W_skip[i].detach().float().T
            writers[f"W_enc_{i}.safetensors"] = _tensors_writer(enc)
            writers[f"W_dec_{i}.safetensors"] = _tensors_writer({f"W_dec_{i}": t.W_dec[i].detach().float()})
        else:
            tensors = {"W_enc": W_enc_SFD[i], "W_dec": t.W_dec[i].detach().float(), "b_enc": b_enc_SF[i],
                       "b_dec": t.b_dec[i].detach().float()}
            if threshold_SF is not None:
                tensors[THRESHOLD] = threshold_SF[i]
            if t.config.skip:
                tensors["W_skip"] = t.W_skip[i].detach().float()
            if activation == "topk":
                tensors["k"] = torch.tensor(t.options["k"], dtype=torch.int64)
            writers[f"layer_{i}.safetensors"] = _tensors_writer(tensors)
    return write_folder(folder, writers, overwrite=overwrite)


def load_circuit_tracer(folder: str | os.PathLike) -> LayeredTranscoder:
    """A circuit-tracer transcoder folder (see the module doc) as ``transcoders`` or ``clt``."""
    folder = Path(folder)
    config = _read_yaml(folder / CONFIG_NAME)
    kind = config.get("model_kind")
    if kind not in KINDS.values():
        raise MonosemanticError(f"{folder / CONFIG_NAME}: model_kind {kind!r} is not one circuit-tracer writes; "
                                f"expected {' or '.join(KINDS.values())}")
    site_in, site_out = _sites(folder / CONFIG_NAME, config)
    if kind == "cross_layer_transcoder":
        return _load_clt(folder, config, site_in, site_out)
    return _load_set(folder, config, site_in, site_out)


def _sites(where: Path, config: dict) -> tuple[str, str]:
    hook_in, hook_out = config.get("feature_input_hook"), config.get("feature_output_hook")
    if hook_in not in INPUT_HOOKS or hook_out not in OUTPUT_HOOKS:
        raise MonosemanticError(f"{where}: features read {hook_in!r} and write {hook_out!r}; the sites here are "
                                f"{', '.join(INPUT_HOOKS)} -> {', '.join(OUTPUT_HOOKS)} (the MLP's input and output); "
                                "hook_resid_mid (before the pre-MLP norm) has no site here yet")
    return INPUT_HOOKS[hook_in], OUTPUT_HOOKS[hook_out]


def _load_set(folder: Path, config: dict, site_in: str, site_out: str) -> LayeredTranscoder:
    files = _numbered(folder, "layer_{}.safetensors")
    per_layer = [read_safetensors(path) for path in files]
    first = per_layer[0]
    if "W_enc" not in first or "b_dec" not in first:
        raise MonosemanticError(f"{files[0]}: expected tensors W_enc, W_dec, b_enc, b_dec; found {sorted(first)}")
    F, D = first["W_enc"].shape
    D_out = first["b_dec"].shape[0]
    skip, jump = "W_skip" in first, THRESHOLD in first
    activation, k = _activation(folder, config, jump, first)
    S = len(files)
    t = _make("transcoders", S, D, F, D_out, skip, activation, k, config, site_in, site_out)
    with torch.no_grad():
        for i, (path, tensors) in enumerate(zip(files, per_layer)):
            where = str(path)
            optional = {name for name, present in ((THRESHOLD, jump), ("W_skip", skip), ("k", "k" in tensors))
                        if present}
            check_names(where, tensors, {"W_enc", "W_dec", "b_enc", "b_dec"} | optional)
            t.W_enc[i] = checked(where, tensors, "W_enc", (F, D)).T
            t.W_dec[i] = checked(where, tensors, "W_dec", (F, D_out))
            t.b_enc.view(S, F)[i] = checked(where, tensors, "b_enc", (F,))
            t.b_dec[i] = checked(where, tensors, "b_dec", (D_out,))
            if jump:
                t.threshold.view(S, F)[i] = checked(where, tensors, THRESHOLD, (F,))
            if skip:
                t.W_skip[i] = checked(where, tensors, "W_skip", (D_out, D))
    return t


def _load_clt(folder: Path, config: dict, site_in: str, site_out: str) -> LayeredTranscoder:
    enc_files = _numbered(folder, "W_enc_{}.safetensors")
    S = len(enc_files)
    encoders = [read_safetensors(path) for path in enc_files]
    if "W_enc_0" not in encoders[0]:
        raise MonosemanticError(f"{enc_files[0]}: expected tensor W_enc_0; found {sorted(encoders[0])}")
    F, D = encoders[0]["W_enc_0"].shape
    skip, jump = "W_skip_0" in encoders[0], "threshold_0" in encoders[0]
    if config.get("activation") == "topk":
        raise MonosemanticError(f"{folder / CONFIG_NAME}: a cross-layer transcoder with activation topk is not "
                                "one circuit-tracer reads; expected relu or jumprelu")
    t = _make("clt", S, D, F, D, skip, "jumprelu" if jump else "relu", None, config, site_in, site_out)
    with torch.no_grad():
        for i, (path, tensors) in enumerate(zip(enc_files, encoders)):
            where = str(path)
            optional = {name for name, present in ((f"threshold_{i}", jump), (f"W_skip_{i}", skip)) if present}
            check_names(where, tensors, {f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"} | optional)
            t.W_enc[i] = checked(where, tensors, f"W_enc_{i}", (F, D)).T
            t.b_enc.view(S, F)[i] = checked(where, tensors, f"b_enc_{i}", (F,))
            t.b_dec[i] = checked(where, tensors, f"b_dec_{i}", (D,))
            if jump:
                t.threshold.view(S, F)[i] = checked(where, tensors, f"threshold_{i}", (F,))
            if skip:
                t.W_skip[i] = checked(where, tensors, f"W_skip_{i}", (D, D)).T
            dec_path = folder / f"W_dec_{i}.safetensors"
            decoder = read_safetensors(dec_path)
            check_names(str(dec_path), decoder, {f"W_dec_{i}"})
            t.W_dec[i].copy_(checked(str(dec_path), decoder, f"W_dec_{i}", (F, S - i, D)))
    return t


def load_gemma_scope_transcoders(paths: Sequence[str | os.PathLike], *, model: str | None = None
                                 ) -> LayeredTranscoder:
    """Gemma Scope transcoders, one ``params.npz`` per layer from layer 0 on, as one JumpReLU ``transcoders``."""
    import numpy as np

    if not paths:
        raise MonosemanticError("no Gemma Scope files given; pass one params.npz per layer, layer 0 first")
    loaded = []
    for path in paths:
        try:
            with np.load(Path(path), allow_pickle=False) as npz:  # never unpickle: plain arrays only
                loaded.append({name: torch.from_numpy(np.asarray(npz[name])) for name in npz.files})
        except (OSError, ValueError) as err:
            raise MonosemanticError(f"cannot read {path} as a Gemma Scope params.npz ({err})") from None
    D, F = loaded[0]["W_enc"].shape
    S = len(loaded)
    t = _make("transcoders", S, D, F, loaded[0]["b_dec"].shape[0], False, "jumprelu", None,
              {"model_name": model}, "mlp_in", "mlp_out")
    with torch.no_grad():
        for i, (path, tensors) in enumerate(zip(paths, loaded)):
            where = str(path)
            check_names(where, tensors, {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"})
            t.W_enc[i] = checked(where, tensors, "W_enc", (D, F))
            t.W_dec[i] = checked(where, tensors, "W_dec", (F, t.d_out))
            t.b_enc.view(S, F)[i] = checked(where, tensors, "b_enc", (F,))
            t.b_dec[i] = checked(where, tensors, "b_dec", (t.d_out,))
            t.threshold.view(S, F)[i] = checked(where, tensors, "threshold", (F,))
    return t


def _make(arch: str, S: int, D: int, F: int, D_out: int, skip: bool, activation: str, k: int | None, config: dict,
          site_in: str, site_out: str) -> LayeredTranscoder:
    options = {"sites_in": [f"blocks.{i}.{site_in}" for i in range(S)],
               "sites_out": [f"blocks.{i}.{site_out}" for i in range(S)], "activation": activation}
    if k is not None:
        options["k"] = k
    made = make_dictionary(arch, D, S * F, d_out=D_out, skip=skip, model=config.get("model_name"), **options)
    assert isinstance(made, LayeredTranscoder)
    return made


def _activation(folder: Path, config: dict, jump: bool, first: dict[str, Tensor]) -> tuple[str, int | None]:
    declared = config.get("activation")
    if declared == "topk" or (declared is None and "k" in first and not jump):
        k = config.get("k", int(first["k"]) if "k" in first else None)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise MonosemanticError(f"{folder / CONFIG_NAME}: activation topk needs a positive integer k; got {k!r}")
        return "topk", k
    if declared not in (None, "relu", "jumprelu"):
        raise MonosemanticError(f"{folder / CONFIG_NAME}: activation {declared!r} is unknown; expected topk, relu "
                                "or jumprelu")
    return ("jumprelu" if jump else "relu"), None


def _numbered(folder: Path, pattern: str) -> list[Path]:
    """``pattern.format(i)`` for i = 0, 1, ... as long as they exist; an error when there is none or a gap."""
    found = sorted(folder.glob(pattern.format("*")))
    files = [folder / pattern.format(i) for i in range(len(found))]
    if not found or set(files) != set(found):
        raise MonosemanticError(f"{folder}: expected {pattern.format(0)}, {pattern.format(1)}, ... with no gap; "
                                f"found {', '.join(p.name for p in found) or 'none'}")
    return files


def _layer_numbers(t: LayeredTranscoder) -> list[int]:
    numbers = []
    for site in t.sites:
        parts = (site or "").split(".")
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
            return []
        numbers.append(int(parts[1]))
    return numbers


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise MonosemanticError(f"{path} is missing; a circuit-tracer config.yaml was expected there")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise MonosemanticError(f"{path} is not readable YAML ({err}); the file is damaged") from None
    if not isinstance(data, dict):
        raise MonosemanticError(f"{path} must hold a YAML mapping; got {type(data).__name__}")
    return data


def _yaml_writer(config: dict):
    def write(path: Path) -> None:
        import yaml

        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    return write


def _tensors_writer(tensors: dict[str, Tensor]):
    def write(path: Path) -> None:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path)

    return write
