"""tradestats-admin: operations on a data directory from the command line.

    tradestats-admin list DIR       every symbol: prices held, the last one, disk used, file size
    tradestats-admin verify DIR     check every symbol file; exit 1 naming each damaged one
    tradestats-admin backup DIR DEST  a consistent copy, while a server writes, sparse-aware
    tradestats-admin delete DIR SYMBOL  remove one symbol and its prices; its slot is free

``list`` reads what each symbol last published (no price is read, so it takes milliseconds and
may run while a server writes). Its disk column is what the file really takes (its files are
sparse: a symbol file spans its full window's size but holds blocks only for its data).

``backup`` copies the metadata, then each symbol's file while holding that symbol's writers'
lock (its writers wait for its copy; readers never do), so every file in DEST is a committed
state of its symbol: whole batches only. Only the file's data is copied (SEEK_DATA/SEEK_HOLE),
so the copy takes on disk what the original does. DEST must not exist yet; each file and
folder is synced before the command says done. A server or Store opened on DEST finds a
store like any other.

``verify`` opens the store as any process would (every file's identity, header and snapshot
checksums) and runs ``SymbolStats.verify()`` on every symbol: the checksums of its prices, and
every window's statistics recomputed from them. It may run while a server writes (each symbol's
writers wait for its check: about 0.6 s per full 10**8 window). Exit status: 0 every symbol is
whole, 1 some are damaged (one line each, naming the file and what failed), 2 the directory
cannot be used as a store.

``delete`` is ``Store.delete``: the symbol's file says it is deleted (every server process
sees it gone at once), then it is unlinked; a kill leaves the symbol whole or gone. It is safe
while a server runs, which may also answer ``DELETE /symbols/?symbol=S`` itself. Exit status 0
deleted, 1 no such symbol, 2 the directory cannot be used as a store.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from tradestats import Store, StoreFormatError
from tradestats.filestore import WritersLock, _open_symbol_file
from tradestats.storage import META_NAME, SYMBOLS_DIR, TMP_DIR, VERSION, read_meta

COPY_CHUNK = 1 << 20


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def stored_max_k(root: Path) -> int:
    """The max_k the directory was created with; StoreFormatError if it is not a current store."""
    meta_path = root / META_NAME
    version, max_k, _ = read_meta(meta_path)
    if version != VERSION:
        raise StoreFormatError(meta_path, f"format version {version}: start tradestats-serve (or "
                               f"open it with Store) once to migrate it to {VERSION} first")
    return max_k


def list_symbols(root: Path) -> int:
    from tradestats.server import format_bytes

    store = Store(max_k=stored_max_k(root), path=root)
    damaged, prices, disk = 0, 0, 0
    print(f"{'symbol':<24} {'prices':>13} {'last':>14} {'disk':>10} {'file size':>10}")
    for symbol in store:
        try:
            stats = store[symbol]
            count, last = stats.count_and_last()
            status = os.stat(stats.path)
        except (KeyError, FileNotFoundError):   # deleted meanwhile
            continue
        except StoreFormatError as error:
            damaged += 1
            print(f"{symbol!r:<24} DAMAGED {error.path}: {error.reason}")
            continue
        used = status.st_blocks * 512
        prices, disk = prices + count, disk + used
        print(f"{symbol!r:<24} {count:>13,} {'-' if last is None else repr(last):>14} "
              f"{format_bytes(used):>10} {format_bytes(status.st_size):>10}")
    print(f"{plural(len(store), 'symbol')}, {prices:,} prices, {format_bytes(disk)} of disk"
          + (f"; {damaged} damaged" if damaged else ""))
    return 1 if damaged else 0


def backup(root: Path, dest: Path) -> int:
    if dest.exists():
        raise StoreFormatError(dest, "already exists: a backup goes to a new directory")
    store = Store(max_k=stored_max_k(root), path=root)
    for folder in (dest, dest / SYMBOLS_DIR, dest / TMP_DIR):
        folder.mkdir(mode=0o700, parents=folder == dest)
    shutil.copy2(root / META_NAME, dest / META_NAME)
    copied = 0
    for symbol in store:
        stats = store[symbol]
        target = dest / Path(stats.path).relative_to(root)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with WritersLock(stats):   # no batch of this symbol is written meanwhile
            copied += copy_sparse(Path(stats.path), target)
        # Disk for what the copy's header says is reserved (allocated but unwritten blocks
        # are holes to SEEK_DATA): a server on the copy must never meet a hole it relies on.
        _open_symbol_file(target, symbol.encode(), store.max_k, store.max_batch,
                          False)._reserve_held()
        print(f"copied  {symbol!r}: {len(stats):,} prices")
    for folder in sorted({path.parent for path in dest.rglob("*")} | {dest}, reverse=True):
        sync_directory(folder)
    print(f"{plural(len(store), 'symbol')} backed up to {dest} ({copied:,} bytes of data)")
    return 0


def copy_sparse(source: Path, target: Path) -> int:
    """Copy source's data segments to the same offsets of a new target of the same size (the
    holes stay holes), synced; the bytes copied."""
    copied = 0
    with open(source, "rb") as reader, open(target, "xb") as writer:
        os.fchmod(writer.fileno(), os.stat(source).st_mode & 0o777)
        size = os.fstat(reader.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(reader.fileno(), offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:   # only a hole from here on
                    break
                raise
            end = os.lseek(reader.fileno(), start, os.SEEK_HOLE)
            for at in range(start, end, COPY_CHUNK):
                data = os.pread(reader.fileno(), min(COPY_CHUNK, end - at), at)
                os.pwrite(writer.fileno(), data, at)
                copied += len(data)
            offset = end
        os.ftruncate(writer.fileno(), size)
        os.fsync(writer.fileno())
    return copied


def sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def verify(root: Path) -> int:
    store = Store(max_k=stored_max_k(root), path=root)
    damaged = 0
    for symbol in store:
        try:
            stats = store[symbol]
            stats.verify()
        except KeyError:   # deleted meanwhile
            continue
        except StoreFormatError as error:
            damaged += 1
            print(f"DAMAGED {symbol!r}: {error.path}: {error.reason}")
            continue
        print(f"ok      {symbol!r}: {len(stats)} prices")
    print(f"{len(store) - damaged} of {len(store)} symbols whole" +
          (f", {damaged} damaged" if damaged else ""))
    return 1 if damaged else 0


def delete(root: Path, symbol: str) -> int:
    store = Store(max_k=stored_max_k(root), path=root)
    try:
        store.delete(symbol)
    except KeyError:
        print(f"tradestats-admin: no symbol {symbol!r} in {root}", file=sys.stderr)
        return 1
    print(f"deleted {symbol!r}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tradestats-admin", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every symbol with its prices, disk and file size")
    listing.add_argument("data_dir", type=Path)
    check = commands.add_parser("verify", help="check every symbol file of a data directory")
    check.add_argument("data_dir", type=Path)
    copy = commands.add_parser("backup", help="a consistent, sparse copy, also while a server "
                               "writes")
    copy.add_argument("data_dir", type=Path)
    copy.add_argument("dest", type=Path, help="a new directory")
    remove = commands.add_parser("delete", help="remove one symbol and its prices, also while "
                                 "a server runs")
    remove.add_argument("data_dir", type=Path)
    remove.add_argument("symbol")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            sys.exit(list_symbols(args.data_dir))
        if args.command == "backup":
            sys.exit(backup(args.data_dir, args.dest))
        if args.command == "delete":
            sys.exit(delete(args.data_dir, args.symbol))
        sys.exit(verify(args.data_dir))
    except StoreFormatError as error:
        print(f"tradestats-admin: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
