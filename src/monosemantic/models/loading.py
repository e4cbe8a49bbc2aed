"""Loading a causal language model from a hub id, a local folder, a GGUF file or an embedded name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import MonosemanticError
from .capture import capture
from .embedded import EMBEDDED_MODELS, embedded_gguf
from .gguf_cache import converted_folder
from .random_init import random_init_spec, randomly_initialised
from .sites import Site, SiteIndex

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.removeprefix("torch.")]
    except KeyError:
        raise MonosemanticError(f"unknown dtype '{dtype}': expected one of {', '.join(_DTYPES)}") from None


@dataclass(eq=False)
class LanguageModel:
    """A Hugging Face causal LM with its tokenizer and the sites it exposes."""

    model: torch.nn.Module
    tokenizer: Any  # a Hugging Face tokenizer, or anything with its interface
    name: str
    source: str = ""
    _widths: dict[str, int] = field(default_factory=dict, repr=False)

    @cached_property
    def config(self) -> Any:
        """The model's Hugging Face config (its text part, for a multimodal model)."""
        config: Any = self.model.config  # an attribute of HF models that nn.Module does not declare
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_context(self) -> int | None:
        """The longest context the model accepts, when its config says."""
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
            value = getattr(self.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @cached_property
    def site_index(self) -> SiteIndex:
        return SiteIndex(self.model, self.n_layers, self.name)

    def site_names(self) -> list[str]:
        return self.site_index.names()

    def site(self, name: str) -> Site:
        return self.site_index.resolve(name)

    def resolve_sites(self, names: Sequence[str] | str) -> list[str]:
        """Validate site names; return them in the order given, without repeats."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise MonosemanticError("no sites given: expected at least one, e.g. blocks.6.resid_post")
        return list(dict.fromkeys(self.site(n).name for n in names))

    def width(self, site: str) -> int:
        """The activation width of a site."""
        return self.widths([site])[site]

    def widths(self, sites: Sequence[str]) -> dict[str, int]:
        """Widths of several sites, found by one two-token probe for those not seen before."""
        unknown = [s for s in sites if s not in self._widths]
        if unknown:
            probe = torch.zeros(1, 2, dtype=torch.long, device=self.device)
            self._widths.update({s: a.shape[-1] for s, a in self.capture(probe, unknown).items()})
        return {s: self._widths[s] for s in sites}

    def capture(self, input_ids_BS: Tensor, sites: Sequence[str]) -> dict[str, Tensor]:
        """Activations ``[B, S, D]`` of every site, from one forward pass stopped after the last site."""
        resolved = [self.site(s) for s in sites]
        return capture(self.model, input_ids_BS.to(self.device), resolved)

    def check_context(self, context_length: int) -> None:
        limit = self.max_context
        if limit is not None and context_length > limit:
            raise MonosemanticError(
                f"context length {context_length} is longer than {self.name} allows ({limit} positions)"
            )

    def describe(self) -> dict:
        """A JSON identity of the model, stored with everything computed from it."""
        return {"name": self.name, "source": self.source, "class": type(self.model).__name__,
                "model_type": getattr(self.config, "model_type", None), "n_layers": self.n_layers,
                "d_model": self.d_model, "vocab_size": getattr(self.config, "vocab_size", None),
                "dtype": str(self.dtype).removeprefix("torch.")}


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has; a one-line MonosemanticError for one it lacks."""
    resolved = device_name(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        built = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise MonosemanticError(f"device {str(device)!r} was asked for, but {built} (torch {torch.__version__}); "
                                "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise MonosemanticError(f"device {str(resolved)!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) "
                                "are visible; use cuda:0 or another index below that")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise MonosemanticError("device 'mps' was asked for, but Apple's Metal backend is not available here; "
                                "use --device cpu")
    return resolved


def device_name(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; plain ``cuda`` under torchrun means this rank's own GPU."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise MonosemanticError(f"device {device!r} is not a device name; expected cpu, cuda, cuda:N, mps or "
                                "auto") from None
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _resolve_spec(spec: str) -> tuple[str, str]:
    """Map a user's model spec to (what transformers loads, a description of the source)."""
    if spec in EMBEDDED_MODELS:
        gguf = embedded_gguf(spec)
        return str(converted_folder(gguf)), f"embedded:{gguf.name}"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise MonosemanticError(f"GGUF file '{spec}' does not exist")
        return str(converted_folder(path)), f"gguf:{path.resolve()}"
    if path.is_dir():
        return str(path), f"folder:{path.resolve()}"
    if spec.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".bin", ".pt"):
        raise MonosemanticError(
            f"model '{spec}' is not a folder holding a saved model; expected a hub id (org/name), "
            f"a local folder, a .gguf file, or one of: {', '.join(EMBEDDED_MODELS)}"
        )
    return spec, f"hub:{spec}"


def load_model(spec: str = "smollm2-135m", *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.float32, threads: int | None = None) -> LanguageModel:
    """Load a causal LM by hub id, local folder, ``.gguf`` file, or embedded name (``smollm2-135m``).

    ``NAME@random-init-SEED`` is NAME with freshly initialised weights (see ``random_init.py``).

    Defaults to float32 on CPU: bfloat16 matmuls are far slower than float32 on most CPUs.
    ``device`` may be ``"auto"``; under torchrun, ``"cuda"`` means ``cuda:LOCAL_RANK``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise MonosemanticError(f"threads={threads!r} is invalid; expected an integer >= 1 (--threads), or none "
                                    "for torch's default")
        torch.set_num_threads(threads)
    resolved = resolve_device(device)  # a bad device fails before the model loads
    if (random := random_init_spec(spec)) is not None:
        # The control model: the base's architecture and tokenizer, weights from the seed.
        return randomly_initialised(load_model(random[0], device=device, dtype=dtype), random[1])
    target, source = _resolve_spec(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=parse_dtype(dtype))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MonosemanticError(
            f"could not load model '{spec}' ({first}); expected a Hugging Face hub id reachable online "
            f"or in the local cache, a local folder, a .gguf file, or one of: {', '.join(EMBEDDED_MODELS)}"
        ) from e
    # transformers wraps `to` with functools.wraps(nn.Module.to), which pyright binds without self.
    model.to(resolved).eval()  # pyright: ignore[reportArgumentType]
    return LanguageModel(model=model, tokenizer=tokenizer, name=spec, source=source)
