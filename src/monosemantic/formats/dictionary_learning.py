"""dictionary_learning folders: ``ae.pt`` (a torch-saved state dict) + ``config.json``.

Classes read and written (the class is told by the state dict's keys; ``config.json``'s
``trainer.dict_class`` separates AutoEncoderTopK from BatchTopKSAE, which share their keys):

=======================  =========================================  ======================
class                    keys                                       ours
=======================  =========================================  ======================
AutoEncoder              bias, encoder.{weight,bias}, decoder.weight  relu (centred)
AutoEncoderNew           encoder.{weight,bias}, decoder.{weight,bias} relu, L1 weighted by
                                                                      decoder norms, uncentred
GatedAutoEncoder         decoder_bias, encoder.weight, r_mag,         gated
                         gate_bias, mag_bias, decoder.weight
JumpReluAutoEncoder      W_enc, b_enc, W_dec, b_dec, threshold        jumprelu (uncentred)
AutoEncoderTopK          b_dec, k, threshold, encoder.{weight,bias},  topk
                         decoder.weight
BatchTopKSAE             same keys as AutoEncoderTopK                 batchtopk
MatryoshkaBatchTopKSAE   k, threshold, group_sizes, W_enc, b_enc,     matryoshka
                         W_dec, b_dec
=======================  =========================================  ======================

``ae.pt`` is read with ``torch.load(weights_only=True)`` only; a file that needs arbitrary
unpickling is refused with an explanation, never loaded another way. The mid-run backup form
``{"step", "ae", "optimizer", "config", "norm_factor"}`` is read too: its ``ae`` acts on
activations divided by ``norm_factor``, which is folded in as the library's final save does.
A ``config.json`` whose ``k``, ``activation_dim`` or ``dict_size`` contradicts ``ae.pt`` is
refused, as the library's ``load_dictionary`` refuses a contradicting ``k``.

Export writes, of the classes its architecture's row in :mod:`.architectures` lists, the first
that reads back with the same centring and options, else the first that computes it exactly
(centring is folded into the encoder bias either way). ``AutoEncoder`` computes a dictionary
exactly only when its decoder rows have unit norm: the library's default loader
(``AutoEncoder.from_pretrained``, used by ``utils.load_dictionary``) rescales them to unit norm,
moving the norms into the encoder, which would scale each latent's codes by its decoder norm;
other ReLU dictionaries are written as ``AutoEncoderNew``, whose loader keeps the weights.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from . import sites
from .architectures import ARCHITECTURES, arch_reading, exportable
from .common import check_names, checked, json_writer, read_json, write_folder
from .inference import Inference, dictionary_from_inference, inference_of, with_centring

AE_NAME = "ae.pt"
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class _Class:
    """One dictionary_learning class: where its state dict keeps the inference form's tensors."""

    keys: dict[str, str]  # form tensor -> state-dict key; nn.Linear weights ("*.weight") are stored transposed
    trainer: str  # the trainer class written into config.json
    centred: bool  # whether it subtracts its decoder bias from inputs before encoding
    scalars: tuple[str, ...] = ()  # further keys: "k" (int 0-d), "threshold" (0-d), "group_sizes" (int [groups])
    options: dict = field(default_factory=dict)  # options of ours its dictionaries have
    unit_decoder: bool = False  # whether the library's default loader rescales decoder rows to unit norm

    @property
    def names(self) -> set[str]:
        return set(self.keys.values()) | set(self.scalars)


_LINEAR = {"W_enc": "encoder.weight", "W_dec": "decoder.weight"}
_PLAIN = {"W_enc": "W_enc", "b_enc": "b_enc", "W_dec": "W_dec", "b_dec": "b_dec"}
_TOPK = {**_LINEAR, "b_enc": "encoder.bias", "b_dec": "b_dec"}
_CLASSES = {
    "AutoEncoder": _Class({**_LINEAR, "b_enc": "encoder.bias", "b_dec": "bias"}, "StandardTrainer", True,
                          options={"weight_l1_by_decoder_norm": False}, unit_decoder=True),
    "AutoEncoderNew": _Class({**_LINEAR, "b_enc": "encoder.bias", "b_dec": "decoder.bias"},
                             "StandardTrainerAprilUpdate", False, options={"weight_l1_by_decoder_norm": True}),
    "GatedAutoEncoder": _Class({**_LINEAR, "b_dec": "decoder_bias", "b_gate": "gate_bias", "b_mag": "mag_bias",
                                "r_mag": "r_mag"}, "GatedSAETrainer", True),
    # apply_b_dec_to_input is an attribute the library does not save; its default is False.
    "JumpReluAutoEncoder": _Class({**_PLAIN, "threshold": "threshold"}, "JumpReluTrainer", False),
    "AutoEncoderTopK": _Class(_TOPK, "TopKTrainer", True, scalars=("k", "threshold")),
    "BatchTopKSAE": _Class(_TOPK, "BatchTopKTrainer", True, scalars=("k", "threshold")),
    "MatryoshkaBatchTopKSAE": _Class(_PLAIN, "MatryoshkaBatchTopKTrainer", True,
                                     scalars=("k", "threshold", "group_sizes")),
}
_BACKUP_KEYS = {"step", "ae", "optimizer", "config", "norm_factor"}
_TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # a zip, or a bare pickle


def read_torch_file(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers only."""
    if not path.is_file():
        raise MonosemanticError(f"{path} is missing; a torch-saved state dict was expected there")
    damaged = f"{path} is damaged or not a torch save (torch.save writes a zip archive or a pickle)"
    with open(path, "rb") as f:
        start = f.read(4)
    if not start.startswith(_TORCH_SAVE_STARTS):
        raise MonosemanticError(f"{damaged}; it starts with bytes {start!r}; check the file, or save it again")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The safe loader names a class it refuses as an "Unsupported global"; anything else it
        # cannot follow is damage, not a Python object.
        if "global" not in str(err).lower():
            raise MonosemanticError(f"{damaged} ({_last_line(err)}); check the file, or save it again") from None
        raise MonosemanticError(
            f"{path} holds Python objects other than tensors, numbers, strings and containers, so the safe "
            f"loader (torch.load weights_only=True) refused it ({_first_line(err)}); monosemantic never unpickles "
            "files unsafely. If you trust the file, re-save just its state dict of tensors with torch.save") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise MonosemanticError(f"cannot read {path} ({err}); the file is damaged or not a torch save") from None
    if not isinstance(data, dict):
        raise MonosemanticError(f"{path} holds a {type(data).__name__}, expected a state dict (name -> tensor)")
    return data


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if "error" in line.lower() or "unsupported" in line.lower()]
    return lines[-1] if lines else _first_line(err)


def _unwrap_backup(path: Path, data: dict) -> tuple[dict, float | None]:
    if not (data.keys() >= {"step", "ae"} and isinstance(data.get("ae"), dict)):
        return data, None
    factor = data.get("norm_factor")
    if factor is not None and not (isinstance(factor, (int, float)) and factor > 0):
        raise MonosemanticError(f"{path}: backup norm_factor={factor!r} is invalid; expected a positive number")
    return data["ae"], (None if factor is None else float(factor))


def _class_of(path: Path, state: dict, config: dict | None) -> str:
    keys = set(state)
    matches = [name for name, cls in _CLASSES.items() if cls.names == keys]
    named = ((config or {}).get("trainer") or {}).get("dict_class")
    if len(matches) == 1:
        return matches[0]
    if matches and named in matches:
        return named
    if matches:
        raise MonosemanticError(f"{path}: the keys fit {' and '.join(matches)}; {CONFIG_NAME} with "
                                "trainer.dict_class is needed to tell them apart")
    closest = min(_CLASSES, key=lambda name: len(_CLASSES[name].names ^ keys))
    check_names(f"{path} (closest class {closest})", state, _CLASSES[closest].names)
    raise AssertionError("unreachable")  # check_names raised


def load_dictionary_learning(folder: str | os.PathLike) -> Dictionary:
    """Read a dictionary_learning folder (``ae.pt`` and, if present, ``config.json``) as one of ours."""
    folder = Path(folder)
    path = folder / AE_NAME
    config = read_json(folder / CONFIG_NAME, "dictionary_learning config") if (folder / CONFIG_NAME).is_file() else None
    state, norm_factor = _unwrap_backup(path, read_torch_file(path))
    cls = _class_of(path, state, config)
    arch = arch_reading("dictionary_learning", cls)
    assert arch is not None  # every class in _CLASSES is read by some row of ARCHITECTURES
    tensors, options = _read_state(str(path), _CLASSES[cls], state)
    trainer = (config or {}).get("trainer") or {}
    _check_config(folder / CONFIG_NAME, trainer, tensors, options)
    row = ARCHITECTURES[arch]
    if row.threshold is None:
        tensors.pop("threshold", None)  # AutoEncoderTopK stores a threshold its top-k encode does not use
    options = {name: value for name, value in options.items() if name in row.options}
    buffer = (config or {}).get("buffer") or {}
    site = sites.to_ours(trainer.get("submodule_name"), io=buffer.get("io", "out"))
    model = trainer.get("lm_name") if isinstance(trainer.get("lm_name"), str) else None
    form = Inference(arch, tensors, _CLASSES[cls].centred, "none", site, site, model, options)
    dictionary = dictionary_from_inference(form)
    if norm_factor is not None and norm_factor != 1.0:
        dictionary.fold_scale_(1.0 / norm_factor)
    return dictionary


def _read_state(where: str, cls: _Class, state: dict) -> tuple[dict, dict]:
    """(form tensors, options) of one class's state dict: shapes checked, nn.Linear weights transposed."""
    D, F = _dims(where, state, cls.keys["W_enc"])
    shapes = {"W_enc": (D, F), "W_dec": (F, D), "b_dec": (D,), "b_enc": (F,), "b_gate": (F,), "b_mag": (F,),
              "r_mag": (F,), "threshold": (F,)}
    tensors = {}
    for name, key in cls.keys.items():
        if key.endswith(".weight"):
            tensors[name] = checked(where, state, key, shapes[name][::-1]).T.contiguous()
        else:
            tensors[name] = checked(where, state, key, shapes[name])
    options = dict(cls.options)
    if "k" in cls.scalars:
        options["k"] = int(checked(where, state, "k", (), integer=True))
    if "threshold" in cls.scalars:
        # The library's -1 ("not estimated") keeps every positive pre-activation, as 0 does here.
        tensors["threshold"] = checked(where, state, "threshold", ()).clamp_min(0.0)
    if "group_sizes" in cls.scalars:
        groups = [int(g) for g in checked(where, state, "group_sizes", tuple(state["group_sizes"].shape),
                                          integer=True).reshape(-1)]
        if sum(groups) != F or min(groups, default=0) <= 0:
            raise MonosemanticError(f"{where}: group_sizes {groups} must be positive and sum to dict size {F}")
        options["group_sizes"] = groups
    return tensors, options


def _check_config(where: Path, trainer: dict, tensors: dict, options: dict) -> None:
    """MonosemanticError when config.json's trainer fields contradict the weights (the library refuses k)."""
    found = {"activation_dim": tensors["W_enc"].shape[0], "dict_size": tensors["W_enc"].shape[1],
             "k": options.get("k")}
    for name, value in found.items():
        said = trainer.get(name)
        if value is None or said is None or isinstance(said, bool) or not isinstance(said, (int, float)):
            continue
        if said != value:
            raise MonosemanticError(f"{where} says trainer.{name}={said!r} but {AE_NAME} has {name}={value}; the "
                                    "two files do not belong together (dictionary_learning refuses them too); "
                                    f"put the {CONFIG_NAME} written with these weights beside them")


def _dims(where: str, state: dict, name: str) -> tuple[int, int]:
    """(D, F) from the encoder weight: [F, D] as an nn.Linear weight, [D, F] otherwise."""
    tensor = state[name]
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise MonosemanticError(f"{where}: {name} must be a 2-d tensor; got {got}")
    a, b = tensor.shape
    return (b, a) if name.endswith(".weight") else (a, b)


# ----- export --------------------------------------------------------------------------------


def save_dictionary_learning(dictionary: Dictionary, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``dictionary`` as a dictionary_learning folder (``ae.pt`` state dict + ``config.json``)."""
    form = inference_of(dictionary, "dictionary_learning")
    if form.is_transcoder:
        raise MonosemanticError("dictionary_learning stores autoencoders only; this dictionary is a transcoder "
                                "(save it with --to saelens, sparsify or native)")
    if form.input_norm != "none":
        raise MonosemanticError(f"dictionary_learning has no input normalisation (input_norm={form.input_norm}); "
                                "save it with --to saelens or native")
    cls = _class_for(form)
    state = _state_for(_CLASSES[cls], form)
    layer = _layer(form.site_in)
    trainer = {"dict_class": cls, "trainer_class": _CLASSES[cls].trainer, "activation_dim": form.d_in,
               "dict_size": form.d_sae, "layer": layer, "lm_name": form.model,
               "submodule_name": sites.from_ours(form.site_in, "dictionary_learning") or form.site_in,
               "exported_by": "monosemantic"}
    if form.k is not None:
        trainer["k"] = form.k
    config = {"trainer": trainer, "buffer": {"d_submodule": form.d_in, "io": "out"}}

    def write_ae(path: Path) -> None:
        torch.save({name: tensor.contiguous().clone() for name, tensor in state.items()}, path)

    return write_folder(folder, {AE_NAME: write_ae, CONFIG_NAME: json_writer(config)}, overwrite=overwrite)


def _class_for(form: Inference) -> str:
    """Of the architecture's classes, the first that reads back the same, else the first that computes it exactly."""
    candidates = [name for name in exportable(form.arch, "dictionary_learning").dictionary_learning
                  if _computes(_CLASSES[name], form)]
    if not candidates:
        raise MonosemanticError(f"dictionary_learning has no class holding this {form.arch} dictionary exactly; "
                                "save it with --to saelens or native")
    same = [name for name in candidates if _reads_back_the_same(_CLASSES[name], form)]
    return (same or candidates)[0]


def _computes(cls: _Class, form: Inference) -> bool:
    if not cls.unit_decoder:
        return True
    # The library's own test before it rescales (torch.allclose with its default tolerances).
    norms_F = form.tensors["W_dec"].norm(dim=1)
    return bool(torch.allclose(norms_F, torch.ones_like(norms_F)))


def _reads_back_the_same(cls: _Class, form: Inference) -> bool:
    return cls.centred == form.centred and all(form.options[name] == value for name, value in cls.options.items()
                                               if name in form.options)


def _state_for(cls: _Class, form: Inference) -> dict:
    """The class's state dict holding ``form``; centring is moved into the biases where the class needs it."""
    t = with_centring(form, cls.centred).tensors
    state = {key: (t[name].T if key.endswith(".weight") else t[name]) for name, key in cls.keys.items()}
    if "k" in cls.scalars:
        state["k"] = torch.tensor(form.k, dtype=torch.int32)
    if "threshold" in cls.scalars:
        # Our 0 means "not estimated", the library's -1 does; both keep every positive activation.
        threshold = t.get("threshold")
        state["threshold"] = threshold.reshape(()) if threshold is not None and float(threshold) > 0 \
            else torch.tensor(-1.0)
    if "group_sizes" in cls.scalars:
        state["group_sizes"] = torch.tensor(form.group_sizes, dtype=torch.int64)
    return state


def _layer(site: str | None) -> int | None:
    parts = site.split(".") if site else []
    return int(parts[1]) if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() else None
