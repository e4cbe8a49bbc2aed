"""Replacing a whole folder at once: what every save of a multi-file artefact goes through.

A dictionary, an export in another tool's format, a feature folder and a dashboard are each
written into a hidden sibling of their final name and swapped in only when complete, so a reader
(or a rerun after a crash) finds either the old folder or the new one, never a mix.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .locks import folder_lock


@contextmanager
def replacing_folder(folder: Path, kind: str = "building") -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; on success it takes ``folder``'s place.

    The staging folder is hidden, unique, and in the same parent so that the renames stay within
    one filesystem; it is made with mkdir (not mkdtemp, whose folders are private) so the result
    gets the usual permissions. An old ``folder`` is moved aside before the new one takes its name
    and deleted after, so a crash in between leaves both complete on disk. On an error the staging
    folder is removed and ``folder`` is untouched.
    """
    with folder_lock(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(folder)
        staging = _sibling(folder, kind)
        staging.mkdir()
        try:
            yield staging
            if folder.exists():
                retired = _sibling(folder, RETIRED)
                os.replace(folder, retired)
                os.replace(staging, folder)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


RETIRED = "old"


def _sibling(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.{kind}")


def _clear_leftovers(folder: Path) -> None:
    """Remove what killed writes of ``folder`` left beside it; the caller holds its lock, so none is live.

    A kill between the two renames of a swap leaves no ``folder`` but its complete previous
    version under the retired name: that one is put back first, so nothing saved is lost.
    """
    leftovers = sorted(folder.parent.glob(f".{glob.escape(folder.name)}.????????????.*"),
                       key=lambda p: p.stat().st_mtime)
    if not folder.exists():
        retired = [p for p in leftovers if p.suffix == f".{RETIRED}" and p.is_dir()]
        if retired:
            os.replace(retired[-1], folder)
            leftovers.remove(retired[-1])
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
