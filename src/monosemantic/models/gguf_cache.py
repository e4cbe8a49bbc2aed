"""Converting GGUF files to a float32 safetensors folder, once.

Transformers de-quantises a GGUF file on every load (~15-30 s for SmolLM2-135M); the converted
folder reloads in about a second. The cache key is derived from the source file, so a changed
file gets a fresh conversion, and the folder appears atomically (written beside, then renamed),
so an interrupted conversion never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MonosemanticError


def cache_root() -> Path:
    """Where converted models live: ``$MONOSEMANTIC_CACHE`` or ``~/.cache/monosemantic``."""
    root = os.environ.get("MONOSEMANTIC_CACHE") or Path.home() / ".cache" / "monosemantic"
    return Path(root).expanduser()


def source_key(path: Path) -> str:
    """A short key for a model file: its name, size and a hash of its first and last MiB.

    Hashing the whole file would cost a few tenths of a second on every load; the ends carry
    the GGUF header and tensor data, so together with the size they identify the file.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def converted_folder(gguf_path: Path) -> Path:
    """Return a cached float32 ``save_pretrained`` folder for ``gguf_path``, converting if needed."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise MonosemanticError(f"GGUF file {gguf_path} does not exist; expected a path to a .gguf file")
    target = cache_root() / "models" / f"{gguf_path.stem}-{source_key(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert(gguf_path, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first; its result is identical.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    except ImportError as e:
        raise MonosemanticError(f"loading {gguf_path.name} needs the 'gguf' package: {e}") from e
    # The weights are plain float32 after de-quantisation, but transformers still marks the
    # model as quantised and refuses to save it; clearing the marks makes it serialisable.
    # The ignores: torch types Module.__setattr__ for tensors and modules only (any value works),
    # and pyright does not narrow on hasattr, so it cannot see the attribute it checks for.
    model.hf_quantizer = None  # pyright: ignore[reportArgumentType]
    model.is_quantized = False  # pyright: ignore[reportArgumentType]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # pyright: ignore[reportAttributeAccessIssue]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
