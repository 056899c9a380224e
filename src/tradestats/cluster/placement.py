"""Which node owns a symbol: one deterministic rule plus explicit overrides, in one file that
every node and ``tradestats-cluster`` read, and from which HAProxy's maps are written.

The rule: the nodes in their configured order ``node1 .. nodeN``; a symbol belongs to node number
``crc32(symbol as UTF-8) % N`` (zlib's CRC-32, which is HAProxy's ``crc32`` converter), unless
an override names another node (a moved symbol). Adding a node changes N and so the owner of
most symbols: move them first, or pin them with overrides (README, "Cluster").

The placement file (JSON, replaced atomically by rename, so a reader sees the old or the new
one whole)::

    {"nodes": [["node1", "http://127.0.0.1:9001"], ...],
     "overrides": {"AAPL": "node2"},       # symbol -> node, where the rule says otherwise
     "moving": {"MSFT": "node3"}}          # symbol -> its destination, while it moves

HAProxy cannot read JSON: ``haproxy_maps`` gives the two map files it routes with, keyed by
the symbol's UTF-8 bytes in hex (HAProxy's ``hex`` converter), so that no symbol (spaces, ``#``,
any Unicode) needs quoting: ``nodes.map`` (``index node``) and ``overrides.map`` (``hex node``).
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path


log = logging.getLogger("tradestats.cluster")


class SymbolElsewhere(Exception):
    """The symbol belongs to another node (HTTP 421 naming it)."""

    def __init__(self, symbol: str, owner: str, url: str) -> None:
        super().__init__(f"Symbol {symbol} belongs to node {owner} ({url})")
        self.symbol, self.owner, self.url = symbol, owner, url


class SymbolMoving(Exception):
    """The symbol is being moved to another node: writes wait (HTTP 503 with Retry-After)."""

    def __init__(self, symbol: str, target: str) -> None:
        super().__init__(f"Symbol {symbol} is moving to node {target}: retry in a moment")
        self.symbol, self.target = symbol, target


def rule_owner(symbol: str, node_names: list[str]) -> str:
    """The node the rule gives a symbol, overrides aside."""
    return node_names[zlib.crc32(symbol.encode()) % len(node_names)]


def symbol_key(symbol: str) -> str:
    """A symbol as a key of HAProxy's maps: its UTF-8 bytes in upper-case hex."""
    return symbol.encode().hex().upper()


@dataclass
class Placement:
    nodes: list[tuple[str, str]]                          # (name, url), in rule order
    overrides: dict[str, str] = field(default_factory=dict)
    moving: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.nodes]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a cluster needs distinct node names, not {names}")
        for symbol, node in [*self.overrides.items(), *self.moving.items()]:
            if node not in names:
                raise ValueError(f"symbol {symbol!r} is placed on unknown node {node!r}")

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.nodes]

    def url(self, name: str) -> str:
        return dict(self.nodes)[name]

    def owner(self, symbol: str) -> str:
        return self.overrides.get(symbol) or rule_owner(symbol, self.names)

    def with_owner(self, symbol: str, node: str) -> "Placement":
        """This placement with symbol on node (an override only where the rule differs)."""
        overrides = {s: n for s, n in self.overrides.items() if s != symbol}
        if rule_owner(symbol, self.names) != node:
            overrides[symbol] = node
        moving = {s: n for s, n in self.moving.items() if s != symbol}
        return Placement(list(self.nodes), overrides, moving)

    def with_moving(self, symbol: str, target: str) -> "Placement":
        return Placement(list(self.nodes), dict(self.overrides),
                         {**self.moving, symbol: target})

    # -- the file ---------------------------------------------------------------------------

    def to_json(self) -> bytes:
        return json.dumps({"nodes": [list(node) for node in self.nodes],
                           "overrides": self.overrides, "moving": self.moving},
                          indent=1, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> "Placement":
        document = json.loads(data)
        return cls([(str(name), str(url)) for name, url in document["nodes"]],
                   dict(document.get("overrides", {})), dict(document.get("moving", {})))

    @classmethod
    def read(cls, path: Path) -> "Placement":
        return cls.from_json(Path(path).read_bytes())

    def write(self, path: Path) -> None:
        """Replace the file atomically (and its HAProxy maps beside it), synced."""
        path = Path(path)
        write_atomically(path, self.to_json())
        for name, text in self.haproxy_maps().items():
            write_atomically(path.parent / name, text.encode())

    def haproxy_maps(self) -> dict[str, str]:
        return {"nodes.map": "".join(f"{i} {name}\n" for i, name in enumerate(self.names)),
                "overrides.map": "".join(f"{symbol_key(symbol)} {node}\n"
                                         for symbol, node in sorted(self.overrides.items()))}


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.rename(temporary, path)


class PlacementFile:
    """A node's view of the placement file, read again whenever it was replaced (one stat per
    call: a move must be seen by the next request, on every worker)."""

    def __init__(self, path: Path, node: str) -> None:
        self.path, self.node = Path(path), node
        self._stamp: tuple[int, int] | None = None
        self._bad_stamp: tuple[int, int] | None = None
        self._placement = self.current()

    def current(self) -> Placement:
        """The file's placement; the last good one while the file is missing or not one (a
        hand edit gone wrong must not turn every request into an error)."""
        stamp = None
        try:
            status = os.stat(self.path)
            stamp = (status.st_ino, status.st_mtime_ns)
            if stamp != self._stamp:
                placement = Placement.read(self.path)
                if self.node not in placement.names:
                    raise ValueError(f"node {self.node!r} is not in {self.path}")
                self._placement, self._stamp = placement, stamp
        except (OSError, ValueError, KeyError, TypeError) as error:
            if self._stamp is None:   # at start: refuse to run without one
                raise
            if stamp != self._bad_stamp:
                log.error("%s: %s; keeping the placement read before", self.path, error)
                self._bad_stamp = stamp
        return self._placement

    def check(self, symbol: str, write: bool) -> bool:
        """Whether symbol is moving (a read may still find it here, until the switch).
        SymbolMoving for a write while it moves; SymbolElsewhere if another node owns it."""
        placement = self.current()
        target = placement.moving.get(symbol)
        if target is not None:
            if write:
                raise SymbolMoving(symbol, target)
            return True
        owner = placement.owner(symbol)
        if owner != self.node:
            raise SymbolElsewhere(symbol, owner, placement.url(owner))
        return False

    def admit(self, symbol: str) -> None:
        """Store's hook before it opens or creates a symbol for a write: the placement as it is
        now (a move may have switched it since the request was checked)."""
        self.check(symbol, write=True)
