"""One entry point for reading and writing dictionaries in any supported format.

``load_dictionary("runs/topk")``, ``load_dictionary("some/folder", format="saelens")``,
``load_dictionary("org/repo", subfolder="layers.6")`` (a Hugging Face repo id when no such
local path exists: fetched with ``huggingface_hub.snapshot_download``, honouring
``HF_HUB_OFFLINE``). ``save_dictionary_as(dictionary, folder, to="saelens")`` writes one.
Both dispatch through the format table in :mod:`.registry`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import baselines  # noqa: F401  (registers identity, pca, ica, ...: saved baselines load here)
from ..dictionaries import Dictionary
from ..dictionaries.io import check_finite
from ..errors import MonosemanticError
from .common import list_files
from .detect import check_files, detect_format
from .registry import REGISTRY, writable

WRITABLE = writable()
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_dictionary(path_or_repo_id: str | os.PathLike, subfolder: str | None = None, *, format: str | None = None,
                    device="cpu", input_scale: float | None = None) -> Dictionary:
    """A dictionary from a local folder or file, or a Hugging Face repo, in any supported format.

    ``format`` (one of FORMATS) skips detection. ``input_scale`` is for SAELens folders whose
    inputs were scaled by a factor the folder does not store (see ``saelens.load_saelens``).
    The dictionary is returned in eval mode on ``device``.
    """
    path = _resolve(path_or_repo_id, subfolder)
    if format is not None:
        check_files(path, format)
    fmt = REGISTRY[format or detect_format(path)]
    options = {"input_scale": input_scale} if input_scale is not None else {}
    for name in options.keys() - set(fmt.load_options):
        takers = [f.name for f in REGISTRY.values() if name in f.load_options]
        raise MonosemanticError(f"{name} applies to {' and '.join(takers)} folders only; {path} is {fmt.name}")
    # Folder formats are read from their folder even when given one of its files.
    target = path.parent if path.is_file() and not fmt.single_file else path
    dictionary = fmt.load(target, **options)
    check_finite(dictionary, target)
    return dictionary.to(device).eval()


def _resolve(path_or_repo_id: str | os.PathLike, subfolder: str | None) -> Path:
    path = Path(path_or_repo_id)
    if not path.exists():
        text = str(path_or_repo_id)
        if not _REPO_ID.match(text):
            raise MonosemanticError(f"{text} does not exist and is not a Hugging Face repo id (owner/name); "
                                    "check the path")
        path = _download(text, subfolder)
    if subfolder:
        path = path / subfolder
        if not path.exists():
            raise MonosemanticError(f"{path_or_repo_id} has no {subfolder!r}; found {list_files(path.parent)}")
    return path


def _download(repo_id: str, subfolder: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [f"{subfolder.strip('/')}/*"] if subfolder else None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError as err:
        raise MonosemanticError(
            f"{repo_id} is not a local path and could not be fetched from the Hugging Face Hub "
            f"({type(err).__name__}: offline mode or no connection, and it is not in the local cache); "
            "check the path, or unset HF_HUB_OFFLINE and connect") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise MonosemanticError(f"{repo_id} is not a local path and downloading it from the Hugging Face Hub "
                                f"failed ({type(err).__name__}: {err}); check the repo id") from None


def save_dictionary_as(dictionary: Dictionary, folder: str | os.PathLike, to: str = "native", *,
                       overwrite: bool = False) -> Path:
    """Write ``dictionary`` to ``folder`` in format ``to`` (one of WRITABLE); returns the folder."""
    fmt = REGISTRY.get(to) if isinstance(to, str) else None
    if fmt is None or fmt.save is None:
        readable = f" ({to} is read-only here)" if fmt is not None else ""
        raise MonosemanticError(f"cannot write format {to!r}{readable}; expected one of {', '.join(WRITABLE)}")
    return fmt.save(dictionary, folder, overwrite=overwrite)
