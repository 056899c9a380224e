"""Moving a symbol from its node to another while the cluster serves (``tradestats-cluster
move``), on one machine: every node's data directory is ``DIR/<node>`` (``tradestats-cluster
up``).

1. The placement file marks the symbol moving: every node answers writes to it 503 with
   Retry-After (reads go on where it is).
2. On the source, under the store's lock and the symbol's writers' lock held once: its file is
   copied (sparse) into the target's data directory, synced, renamed into place, and the symbol
   deleted on the source. A batch the source committed is in the copy; a writer that was waiting
   for the lock finds the symbol deleted and, asking the placement again, answers 503: nothing
   acknowledged is lost, nothing is stored twice.
3. HAProxy's map sends the symbol to the target (its runtime API: no reload); then the placement
   file names the target and the symbol is no longer moving. A request already routed to the
   source gets 421 naming the target.

A move stopped halfway (a kill) leaves the symbol marked moving, its data whole on one node or
both: run the same move again to finish it.
"""
from __future__ import annotations

import socket
from pathlib import Path

from tradestats.admin import copy_sparse, stored_max_k
from tradestats.cluster.placement import Placement, symbol_key
from tradestats.errors import StoreFormatError
from tradestats.storage import META_NAME, SymbolDirectory, read_meta

PLACEMENT_NAME = "placement.json"
SOCKET_NAME = "haproxy.sock"
OVERRIDES_MAP = "overrides.map"


def move_symbol(cluster_dir: Path, symbol: str, target: str) -> str:
    """Move symbol to node target (see the module doc); what was done, in one line."""
    cluster_dir = Path(cluster_dir)
    placement_path = cluster_dir / PLACEMENT_NAME
    placement = Placement.read(placement_path)
    if target not in placement.names:
        raise ValueError(f"no node {target!r} in {placement_path} ({placement.names})")
    source = placement.owner(symbol)
    if source == target and symbol not in placement.moving:
        return f"{symbol!r} is on {target} already"
    check_same_format(cluster_dir / source, cluster_dir / target)
    placement.with_moving(symbol, target).write(placement_path)
    moved = hand_over(cluster_dir / source, cluster_dir / target, symbol) \
        if source != target else False
    switched = placement.with_owner(symbol, target)
    tell_haproxy(cluster_dir, symbol, switched)
    switched.write(placement_path)
    return (f"moved {symbol!r} from {source} to {target}" if moved
            else f"{symbol!r} now belongs to {target} (it held no prices on {source})")


def check_same_format(source: Path, target: Path) -> None:
    """The two data directories take the same files (max_k, max_batch, version)."""
    if read_meta(source / META_NAME) != read_meta(target / META_NAME):
        raise StoreFormatError(target / META_NAME,
                               f"not made with the same max_k and max_batch as {source}")


def hand_over(source_dir: Path, target_dir: Path, symbol: str) -> bool:
    """The symbol's file from the source's store into the target's; False if it had none
    (a second run after a stop between the copy and the switch finds it moved already)."""
    max_k = stored_max_k(source_dir)
    source = SymbolDirectory(source_dir, max_k=max_k, max_batch=None, sync=False)
    target = SymbolDirectory(target_dir, max_k=max_k, max_batch=None, sync=False)
    try:
        source.hand_over(symbol, lambda path: target.take_in(symbol, Path(path), copy_sparse))
    except KeyError:
        return False
    return True


def tell_haproxy(cluster_dir: Path, symbol: str, placement: Placement) -> None:
    """Point HAProxy's override for symbol where placement says, through its runtime API
    (skipped when no HAProxy runs: the map file, written next, is what a start reads)."""
    path = cluster_dir / SOCKET_NAME
    if not path.exists():
        return
    map_file = cluster_dir / OVERRIDES_MAP
    key = symbol_key(symbol)
    command = f"del map {map_file} {key}"
    if symbol in placement.overrides:
        command += f";add map {map_file} {key} {placement.overrides[symbol]}"
    runtime_api(path, command)


def runtime_api(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(path))
        connection.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer.decode(errors="replace")
