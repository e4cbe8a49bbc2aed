"""One writer per output folder: an exclusive lock beside the folder, naming its holder.

Every command that writes a folder (harvest, train, sweep, features, dashboard, convert, and any
save through :func:`~monosemantic.folders.replacing_folder`) holds ``.<name>.lock`` in the
folder's parent while it writes. The file says who holds it (pid, host, command, since when); the
lock itself is the kernel's ``flock`` on that file, so it ends with its holder however that
process ends, and a lock left by a killed process is simply taken over by the next writer. A
second writer gets a :class:`FolderBusyError` naming the holder.

Locks are re-entrant within a process (a trainer's save inside a train command's folder), and
under torchrun only rank 0 takes them: the ranks of one job write one folder together, and the
other ranks write nothing before rank 0 has passed the lock (the harvest and the trainer wait for
it at a barrier).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import MonosemanticError


class FolderBusyError(MonosemanticError):
    """Another process is writing the folder."""


_held: dict[Path, tuple[int, int]] = {}  # lock path -> (file descriptor, depth) of this process
_guard = threading.Lock()


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: a hidden sibling, so that replacing the folder keeps it.

    Symbolic links are followed, so that two names of one folder share its lock.
    """
    folder = Path(folder).expanduser().resolve()
    return folder.with_name(f".{folder.name}.lock")


@contextmanager
def folder_lock(folder: str | Path, command: str | None = None) -> Iterator[None]:
    """Hold ``folder``'s writer lock for the block; :class:`FolderBusyError` if another process holds it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        # A torchrun rank other than 0: rank 0 holds the lock for the whole job.
        yield
        return
    path = lock_path(folder)
    with _guard:
        if path in _held:
            fd, depth = _held[path]
            _held[path] = (fd, depth + 1)
        else:
            _held[path] = (_acquire(path, command or _command()), 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[path]
            if depth > 1:
                _held[path] = (fd, depth - 1)
            else:
                del _held[path]
                _release(path, fd)


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return lock_path(folder) in _held


def _acquire(path: Path, command: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(path)
            os.close(fd)
            raise FolderBusyError(f"{path.parent / path.name[1:-5]} is being written by {holder}; wait for it to "
                                  "finish or write elsewhere (another --out)") from None
        # The holder before us may have removed the file between our open and our flock: then
        # we lock a file nobody else can see, and must start over on the path's new file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())
    return fd


def _release(path: Path, fd: int) -> None:
    # Removed while still locked, so that no other process can lock the file we are leaving.
    with suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


def _describe(path: Path) -> str:
    """The holder, as its lock file records it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
        return (f"another process (`{record['command']}`, pid {record['pid']} on {record['host']}, "
                f"since {record['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file is not readable yet)"


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) if sys.argv and sys.argv[0] else "python"
