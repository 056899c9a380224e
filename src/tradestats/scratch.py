"""Throwaway directories a server owns while it runs: the workers' metrics and an
``--ephemeral`` store, in /dev/shm where it exists (memory, so a leftover costs RAM).

A server removes its own at exit, but a master killed by SIGKILL (or the OOM killer) cannot.
So each such directory is locked (``flock`` on the directory itself) by the process that made
it, for as long as it or a forked child lives, and marked ``OWNER_MARK`` once locked. A server
starting up removes every marked directory whose lock it can take: its owners are all gone,
whatever became of their pids. An unmarked directory (being made this moment, or not ours) is
never touched."""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

#: Every throwaway directory's name starts with this.
PREFIX = "tradestats-"
#: Written into a directory once its owner holds the lock.
OWNER_MARK = ".owned-while-locked"

# The locked directories' descriptors, open until this process (and every forked child) ends.
_held: list[int] = []


def scratch_base() -> Path | None:
    """/dev/shm where it exists, else the system's temporary directory (None: tempfile's)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else None


def make_owned_directory(kind: str, base: Path | None = None) -> Path:
    """A new directory ``PREFIX + kind + random`` under base, locked by this process and
    marked as such."""
    made = Path(tempfile.mkdtemp(prefix=PREFIX + kind, dir=base or scratch_base()))
    descriptor = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    _held.append(descriptor)
    (made / OWNER_MARK).touch()
    return made


def remove_abandoned(base: Path | None = None) -> list[Path]:
    """Remove this user's marked throwaway directories under base whose owners are all gone;
    the ones removed."""
    removed = []
    root = base or scratch_base() or Path(tempfile.gettempdir())
    try:
        candidates = [entry for entry in root.iterdir() if entry.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in candidates:
        if _take_if_abandoned(entry):
            removed.append(entry)
    return removed


def _take_if_abandoned(entry: Path) -> bool:
    """Remove entry if it is a directory of this user's, marked, whose lock is free."""
    try:   # O_NOFOLLOW | O_DIRECTORY: a symbolic link or a file is refused here
        descriptor = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(descriptor).st_uid != os.getuid() or not (entry / OWNER_MARK).exists():
            return False
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)   # refused while an owner lives
        shutil.rmtree(entry, ignore_errors=True)
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
