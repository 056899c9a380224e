"""tradestats-admin: operations on a data directory from the command line.

    tradestats-admin list DIR       every symbol: prices held, the last one, disk used, file size
    tradestats-admin verify DIR     check every symbol file; exit 1 naming each damaged one

``list`` reads what each symbol last published (no price is read, so it takes milliseconds and
may run while a server writes). Its disk column is what the file really takes (its files are
sparse: a symbol file spans its full window's size but holds blocks only for its data).

``verify`` opens the store as any process would (every file's identity, header and snapshot
checksums) and runs ``SymbolStats.verify()`` on every symbol: the checksums of its prices, and
every window's statistics recomputed from them. It may run while a server writes (each symbol's
writers wait for its check: about 0.6 s per full 10**8 window). Exit status: 0 every symbol is
whole, 1 some are damaged (one line each, naming the file and what failed), 2 the directory
cannot be used as a store.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from tradestats import Store, StoreFormatError
from tradestats.storage import META_NAME, VERSION, read_meta


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
        except StoreFormatError as error:
            damaged += 1
            print(f"{symbol!r:<24} DAMAGED {error.path}: {error.reason}")
            continue
        status = os.stat(stats.path)
        used = status.st_blocks * 512
        prices, disk = prices + count, disk + used
        print(f"{symbol!r:<24} {count:>13,} {'-' if last is None else repr(last):>14} "
              f"{format_bytes(used):>10} {format_bytes(status.st_size):>10}")
    print(f"{len(store)} symbols, {prices:,} prices, {format_bytes(disk)} of disk"
          + (f"; {damaged} damaged" if damaged else ""))
    return 1 if damaged else 0


def verify(root: Path) -> int:
    store = Store(max_k=stored_max_k(root), path=root)
    damaged = 0
    for symbol in store:
        try:
            stats = store[symbol]
            stats.verify()
        except StoreFormatError as error:
            damaged += 1
            print(f"DAMAGED {symbol!r}: {error.path}: {error.reason}")
            continue
        print(f"ok      {symbol!r}: {len(stats)} prices")
    print(f"{len(store) - damaged} of {len(store)} symbols whole" +
          (f", {damaged} damaged" if damaged else ""))
    return 1 if damaged else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tradestats-admin", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every symbol with its prices, disk and file size")
    listing.add_argument("data_dir", type=Path)
    check = commands.add_parser("verify", help="check every symbol file of a data directory")
    check.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        sys.exit(list_symbols(args.data_dir) if args.command == "list" else verify(args.data_dir))
    except StoreFormatError as error:
        print(f"tradestats-admin: cannot use {args.data_dir}: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
