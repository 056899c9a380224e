"""A file store's directory: which symbol lives in which file, the store's own metadata, and the
lock under which symbols are created.

Guarantees and limits (the symbol files themselves: layout.pxd):

* One file per symbol under ``symbols/``, named from the symbol reversibly: letters, digits,
  ``_`` and ``-`` stay as they are and every other character becomes its UTF-8 bytes as ``%XX``
  (so ``/``, ``.``, ``..`` and any Unicode are safe); a name longer than 240 bytes is split
  into nested directories. The symbol is also stored in the file's header and checked on open.
* ``tradestats-store.json`` records the format version, max_k and the largest batch (which
  fixes the ring's slack). A store opened with another max_k, a larger max_batch or an unknown
  version is refused with StoreFormatError naming the file and the reason; nothing is changed.
* A store of format version 1 is migrated to version 2 when it is opened (under the lock, so
  every other opener waits): each symbol file is rewritten whole in ``tmp/`` from the old file's
  window of prices (exact sums recomputed, deques rebuilt), fsynced, and renamed over the old
  one; the metadata says version 2 only after every symbol has. A stop at any point leaves every
  symbol whole in one version or the other, and the next open carries on. Needs the disk space
  of one more symbol file while it runs. Stop every process of the previous version first.
* A symbol is created under ``store.lock`` (an open-file-description lock, which the kernel
  releases if its holder dies): the count is checked and the new file, formatted under a
  temporary name in ``tmp/``, is renamed into place. So creation is atomic and at most
  max_symbols symbols ever exist, whichever processes race to create them.
* A symbol is deleted under ``store.lock`` too: a last commit in its file says so (every
  process's mapping sees the symbol gone from then on: layout.pxd), then the file is unlinked.
  A kill in between leaves a file that says it is deleted: it is treated as absent and the next
  open of it (or of the store) unlinks it. Its disk space returns when the last process that
  mapped it lets go (at its next touch of that symbol, its next new symbol or listing).
* With ``sync``, a new symbol's file and directory entries are fsynced before it is used, and
  a deletion is on disk before it returns.
* What the store creates is its owner's alone (files 0600, directories 0700): prices are
  nobody else's to read, nor the metadata anyone else's to rewrite. ``shared_group`` opens them
  to the group as well (0660, 0770), for a group of processes run by different users. The
  umask can narrow these further, never widen them.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import string
import threading
import time
import weakref
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote_to_bytes

from tradestats import limits, messages
from tradestats.engine import SymbolStats
from tradestats.filestore import (
    _migrate_v1_file, _open_symbol_file, symbol_file_deleted, symbol_file_version,
)
from tradestats.errors import (
    DiskFullError, StoreFormatError, SymbolDeletedError, TooManySymbolsError,
)
from tradestats.symbolfile import format_symbol_file, lock_fd

FORMAT = "tradestats-store"
VERSION = 2
#: Versions this tradestats migrates on open.
MIGRATES_FROM = frozenset({1})
META_NAME = "tradestats-store.json"
LOCK_NAME = "store.lock"
SYMBOLS_DIR = "symbols"
TMP_DIR = "tmp"
SUFFIX = ".sym"
#: Below NAME_MAX (255) with room for the suffix; longer names become nested directories.
MAX_NAME_PART = 240
_KEPT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")


def encode_symbol(symbol: str) -> list[str]:
    """The path parts (relative to symbols/) of a symbol's file, without the suffix."""
    encoded = [c if c in _KEPT_CHARACTERS else "".join(f"%{b:02X}" for b in c.encode())
               for c in symbol]
    parts, current = [], ""
    for piece in encoded:  # never split inside a character's %XX run
        if len(current) + len(piece) > MAX_NAME_PART:
            parts.append(current)
            current = ""
        current += piece
    parts.append(current)
    return parts


def decode_symbol(parts: tuple[str, ...]) -> str:
    return unquote_to_bytes("".join(parts)).decode("utf-8")


def symbol_named(parts: tuple[str, ...]) -> str | None:
    """The symbol whose file these path parts name, or None for a name encode_symbol would never
    write (``%FF``: not UTF-8; ``%zz``: not an escape; ``%41``: ``A`` is written as is)."""
    try:
        symbol = decode_symbol(parts)
    except UnicodeDecodeError:
        return None
    return symbol if tuple(encode_symbol(symbol)) == parts else None


def _after_delete_commit() -> None:
    """Test hook: runs between a delete's commit and its unlink (tests kill the process here)."""


#: A symbol another process deletes this many times while one opens it is given up on (KeyError).
OPEN_TRIES = 8

#: Stray files already warned about in this process: one warning each.
_warned_strays: set[Path] = set()


log = logging.getLogger("tradestats.storage")

#: Permissions of what the store creates (see the module doc), before the umask.
PRIVATE_FILE_MODE, PRIVATE_DIR_MODE = 0o600, 0o700
GROUP_FILE_MODE, GROUP_DIR_MODE = 0o660, 0o770

#: errno values that mean the file system has no room (blocks, inodes, quota).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Every open directory in this process, for the fork hook below.
_OPEN_DIRECTORIES: "weakref.WeakSet[SymbolDirectory]" = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    for directory in list(_OPEN_DIRECTORIES):
        directory._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_locks_after_fork)


def read_meta(meta_path: Path) -> tuple[int, int, int]:
    """(format version, max_k, max_batch) of a store's metadata, each checked; StoreFormatError
    naming the file and the field otherwise (an unknown version included)."""
    try:
        meta = json.loads(meta_path.read_bytes())
        kind, version = meta["format"], meta["version"]
        stored_k, stored_batch = meta["max_k"], meta["max_batch"]
    except FileNotFoundError:
        raise StoreFormatError(meta_path, "missing: not a tradestats data directory") from None
    except (ValueError, KeyError, TypeError):
        raise StoreFormatError(meta_path, "corrupt: not this store's metadata") from None
    for field, value in (("version", version), ("max_k", stored_k), ("max_batch", stored_batch)):
        if type(value) is not int or value < 1:
            raise StoreFormatError(meta_path, f"corrupt: {field} is {value!r}, not a "
                                   "positive integer")
    if kind != FORMAT:
        raise StoreFormatError(meta_path, f"not a tradestats store ({kind!r})")
    if version != VERSION and version not in MIGRATES_FROM:
        raise StoreFormatError(
            meta_path, f"format version {version}; this tradestats reads version {VERSION}")
    return version, stored_k, stored_batch


class SymbolDirectory:
    """One store directory (see the module doc); SymbolStats does the rest in each file."""

    def __init__(self, path, *, max_k: int, max_batch: int | None, sync: bool,
                 shared_group: bool = False) -> None:
        self.root = Path(path)
        self.max_k = max_k
        self.sync = sync
        self.file_mode = GROUP_FILE_MODE if shared_group else PRIVATE_FILE_MODE
        self.dir_mode = GROUP_DIR_MODE if shared_group else PRIVATE_DIR_MODE
        for folder in (self.root, self.root / SYMBOLS_DIR, self.root / TMP_DIR):
            folder.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
        with self._locked():
            self.max_batch, version = self._check_or_write_meta(max_batch)
            self._remove_leftovers()
            if version != VERSION:
                self._migrate(version)
        self._thread_lock = threading.Lock()
        _OPEN_DIRECTORIES.add(self)

    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork: it would stay held.
        self._thread_lock = threading.Lock()

    # -- the store's metadata ------------------------------------------------------------------

    def _check_or_write_meta(self, max_batch: int | None) -> tuple[int, int]:
        """(max_batch, format version) of the store, its metadata written if it is new."""
        meta_path = self.root / META_NAME
        if not meta_path.exists():
            if self.symbols():
                raise StoreFormatError(meta_path, "missing, but the store holds symbol files")
            created = max_batch or limits.DEFAULT_MAX_BATCH
            self._write_meta(created)
            return created, VERSION
        version, stored_k, stored_batch = read_meta(meta_path)
        if stored_k != self.max_k:
            raise StoreFormatError(
                meta_path, f"created with max_k={stored_k}, opened with max_k={self.max_k}")
        if max_batch is not None and max_batch > stored_batch:
            raise StoreFormatError(
                meta_path, f"created for batches of at most {stored_batch} prices, "
                f"opened with max_batch={max_batch}")
        return stored_batch, version

    def _write_meta(self, max_batch: int) -> None:
        meta = {"format": FORMAT, "version": VERSION, "max_k": self.max_k,
                "max_batch": max_batch}
        self._write_atomically(self.root / META_NAME, json.dumps(meta, indent=2).encode() + b"\n")

    def _migrate(self, version: int) -> None:
        """Rewrite every symbol file still in ``version`` (we hold the lock; see the module doc)."""
        started = time.monotonic()
        symbols = self.symbols()
        log.warning(messages.MIGRATION_STARTED.format(root=self.root, old=version, new=VERSION,
                                                      symbols=len(symbols)))
        for done, symbol in enumerate(symbols, 1):
            path = self.path_of(symbol)
            if symbol_file_version(path) == VERSION:   # done before a stop
                continue
            began = time.monotonic()
            migrated = self._migrate_file(symbol, path)
            log.warning(messages.MIGRATION_SYMBOL.format(
                path=path, done=done, total=len(symbols), prices=len(migrated),
                seconds=time.monotonic() - began))
        self._write_meta(self.max_batch)
        log.warning(messages.MIGRATION_DONE.format(root=self.root, symbols=len(symbols),
                                                   new=VERSION,
                                                   seconds=time.monotonic() - started))

    def _migrate_file(self, symbol: str, path: Path) -> SymbolStats:
        temporary = self.root / TMP_DIR / f"migrating-{os.getpid()}{SUFFIX}"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     self.file_mode)
        try:
            migrated = _migrate_v1_file(path, fd, temporary, symbol.encode(), self.max_k,
                                        self.max_batch)
            os.fsync(fd)   # whatever the sync mode: this rename replaces the only copy
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            os.close(fd)
        os.rename(temporary, path)
        self._sync_directory(path.parent, always=True)
        return migrated

    def _write_atomically(self, path: Path, data: bytes) -> None:
        temporary = self.root / TMP_DIR / f"{path.name}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     self.file_mode)
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, path)
        self._sync_directory(path.parent)

    def _remove_leftovers(self) -> None:
        """Files a creator killed mid-creation left in tmp/ (we hold the lock: none is in use),
        and deleted symbols' files a kill left in symbols/ (module doc)."""
        for leftover in (self.root / TMP_DIR).iterdir():
            leftover.unlink(missing_ok=True)
        for path in (self.root / SYMBOLS_DIR).rglob("*" + SUFFIX):
            if symbol_file_deleted(path):
                self._unlink(path)

    # -- symbols ---------------------------------------------------------------------------------

    def path_of(self, symbol: str) -> Path:
        *folders, name = encode_symbol(symbol)
        return self.root.joinpath(SYMBOLS_DIR, *folders, name + SUFFIX)

    def exists(self, symbol: str) -> bool:
        return self._holds_symbol(self.path_of(symbol))

    @staticmethod
    def _holds_symbol(path: Path) -> bool:
        """A file is there and it is not a deleted symbol's (one a kill left: module doc)."""
        try:
            return not symbol_file_deleted(path)
        except FileNotFoundError:
            return False

    def symbols(self) -> list[str]:
        """Every symbol with a file. A file under symbols/ that no symbol would be written to is
        not one (not counted against max_symbols either), and is left alone: one warning names
        it. Nor is a deleted symbol's file a kill left (module doc)."""
        base = self.root / SYMBOLS_DIR
        found = []
        for path in base.rglob("*" + SUFFIX):
            parts = path.relative_to(base).parts
            symbol = symbol_named((*parts[:-1], parts[-1][: -len(SUFFIX)]))
            if symbol is not None:
                if self._holds_symbol(path):
                    found.append(symbol)
            elif path not in _warned_strays:
                _warned_strays.add(path)
                log.warning(messages.STRAY_FILE.format(path=path))
        return sorted(found)

    def open(self, symbol: str, create_within: int | None = None) -> SymbolStats:
        """The symbol's SymbolStats; KeyError if it has no file, unless ``create_within`` (the
        symbol limit) allows creating it."""
        path = self.path_of(symbol)
        for _ in range(OPEN_TRIES):   # again while deletes in other processes get in between
            if not path.exists():
                if create_within is None:
                    raise KeyError(symbol)
                created = self._create(symbol, path, create_within)
                if created is not None:
                    return created
            try:
                return self._open_file(symbol, path)
            except FileNotFoundError:   # deleted by another process since the check
                continue
            except SymbolDeletedError:
                self._finish_deleting(symbol, path)
        raise KeyError(symbol)

    def _open_file(self, symbol: str, path: Path) -> SymbolStats:
        return _open_symbol_file(path, symbol.encode(), self.max_k, self.max_batch, self.sync)

    def delete(self, symbol: str) -> None:
        """Delete the symbol's file (see the module doc); KeyError if it has none."""
        path = self.path_of(symbol)
        with self._thread_lock, self._locked():
            try:
                stats = self._open_file(symbol, path)
            except FileNotFoundError:
                raise KeyError(symbol) from None
            except SymbolDeletedError:
                self._unlink(path)   # a kill had left it: it was gone already
                raise KeyError(symbol) from None
            stats._delete()
            _after_delete_commit()
            self._unlink(path)

    def hand_over(self, symbol: str, receive) -> None:
        """(A cluster's move) receive(path) with the symbol's file in a committed state, then
        the symbol deleted here, both under its writers' lock (and the store's): a batch
        committed here is in the copy or was never acknowledged. KeyError if it has no file."""
        path = self.path_of(symbol)
        with self._thread_lock, self._locked():
            try:
                stats = self._open_file(symbol, path)
            except (FileNotFoundError, SymbolDeletedError):
                raise KeyError(symbol) from None
            stats._hand_over(receive)
            self._unlink(path)

    def take_in(self, symbol: str, source: Path, copy) -> None:
        """(A cluster's move) The symbol's file made here from source by copy(source, target),
        synced, then renamed into place: whole or absent, whatever stops it. Beyond
        max_symbols if need be (the symbol already counted on the node it came from)."""
        path = self.path_of(symbol)
        with self._thread_lock, self._locked():
            temporary = self.root / TMP_DIR / f"moving-in-{os.getpid()}{SUFFIX}"
            try:
                copy(source, temporary)
                os.chmod(temporary, self.file_mode)
                self._open_file(symbol, temporary)._reserve_held()
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            self._make_folders(path.parent)
            os.rename(temporary, path)
            self._sync_directory(path.parent, always=True)

    def _finish_deleting(self, symbol: str, path: Path) -> None:
        """Unlink a file a kill left between a delete's commit and its unlink, if it is still
        there (under the lock: no other process makes or removes the symbol's file meanwhile)."""
        with self._thread_lock, self._locked():
            self._unlink_if_deleted(symbol, path)

    def _unlink_if_deleted(self, symbol: str, path: Path) -> None:
        """(Under the lock) Unlink the symbol's file if it says the symbol was deleted."""
        try:
            self._open_file(symbol, path)
        except SymbolDeletedError:
            self._unlink(path)
        except (FileNotFoundError, StoreFormatError):
            pass

    def _unlink(self, path: Path) -> None:
        path.unlink()
        self._remove_empty_folders(path.parent)
        self._sync_directory(path.parent if path.parent.exists() else self.root / SYMBOLS_DIR)

    def _remove_empty_folders(self, folder: Path) -> None:
        """The folders a long symbol's file nested in (encode_symbol), once empty."""
        base = self.root / SYMBOLS_DIR
        while folder != base and folder.is_relative_to(base):
            try:
                folder.rmdir()
            except OSError:   # not empty: another symbol's
                return
            folder = folder.parent

    def _create(self, symbol: str, path: Path, max_symbols: int) -> SymbolStats | None:
        """The new symbol's SymbolStats, opened before any delete can come in; None if another
        process or thread made the file first."""
        try:
            return self._create_locked(symbol, path, max_symbols)
        except OSError as error:
            if error.errno in NO_SPACE and not isinstance(error, DiskFullError):
                # No block or no inode for the new file: the disk is full for this symbol.
                raise DiskFullError(error.errno, f"no space for a new symbol file: "
                                    f"{error.strerror}", str(path)) from error
            raise

    def _create_locked(self, symbol: str, path: Path, max_symbols: int) -> SymbolStats | None:
        with self._thread_lock, self._locked():
            if path.exists():  # another process or thread was first
                return None
            if len(self.symbols()) >= max_symbols:
                raise TooManySymbolsError(max_symbols)
            temporary = self.root / TMP_DIR / f"{os.getpid()}-{threading.get_ident()}{SUFFIX}"
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         self.file_mode)
            try:
                format_symbol_file(fd, symbol.encode(), self.max_k, self.max_batch, path)
                if self.sync:
                    os.fsync(fd)
            except BaseException:
                os.unlink(temporary)
                raise
            finally:
                os.close(fd)
            self._make_folders(path.parent)
            os.rename(temporary, path)
            if self.sync:
                self._sync_directory(path.parent)
            return self._open_file(symbol, path)

    # -- helpers -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            lock_fd(fd)
            yield  # closing the descriptor releases its lock
        finally:
            os.close(fd)

    def _make_folders(self, folder: Path) -> None:
        """``folder`` and the folders above it up to symbols/, each with the store's mode (a
        long symbol's file nests in folders: encode_symbol)."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for each in reversed(missing):
            each.mkdir(mode=self.dir_mode, exist_ok=True)

    def _sync_directory(self, folder: Path, always: bool = False) -> None:
        if not (self.sync or always):
            return
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
