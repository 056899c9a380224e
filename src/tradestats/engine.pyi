"""Type stubs for the Cython engine (tradestats/engine.pyx)."""
import os
from array import array
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from typing_extensions import Buffer  # noqa: F401  (PEP 688; any 1-D float64 buffer)

Prices = Union[Sequence[float], "Buffer"]

#: Bytes per stored price at a full window when both deques are full (ring + two deque slots).
WORST_CASE_BYTES_PER_PRICE: int

class NotEnoughDataError(ValueError):
    """Fewer than 10**k prices were added; message: ``Not enough data points``."""

class InvalidPriceError(ValueError):
    """A value in a batch is not a finite real number with |x| <= 1e100 (bool is not a number).

    ``index`` is the position of the first bad element; nothing of the batch was stored."""
    index: int

class TooManySymbolsError(ValueError):
    """A new symbol would pass the store's ``max_symbols``."""
    max_symbols: int

class StoreFormatError(ValueError):
    """A store file this version cannot use (other version or max_k, truncated, corrupt);
    nothing in it was changed."""
    path: Union[str, Path]
    reason: str

class StoreCorruptionError(StoreFormatError):
    """A checksum or check of a symbol file failed while in use: refused, never served."""

class SymbolDeletedError(KeyError):
    """The symbol was deleted since this SymbolStats was opened (a Store opens it again)."""

class DiskFullError(OSError):
    """No disk space for a batch or a new symbol; nothing of it was stored."""

class StorageSyncError(OSError):
    """The disk did not take a batch (a failed write) or, in sync mode, did not confirm it:
    nothing of it was stored (retry it)."""

#: Bytes of exact sums kept per price (one record of a block's sums per 1,000 prices).
RECORD_BYTES_PER_PRICE: float

def symbol_file_size(max_k: int, max_batch: int) -> int:
    """Bytes one symbol file spans (sparse: disk blocks follow the data)."""

class Stats:
    """Immutable statistics of one window."""
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def last(self) -> float: ...
    @property
    def avg(self) -> float: ...
    @property
    def var(self) -> float: ...
    def as_dict(self) -> dict[str, float]: ...
    def __iter__(self) -> Iterator[float]: ...

def as_prices(values: Prices) -> "array[float]":
    """Validate a whole batch into array('d'); InvalidPriceError/TypeError before anything is stored."""

from tradestats.envelope import Envelope

class SymbolStats:
    """One symbol's rolling store over the windows 10**1 .. 10**max_k."""
    def __init__(self, max_k: int = 8) -> None: ...
    @property
    def max_k(self) -> int: ...
    @property
    def nbytes(self) -> int:
        """Bytes this symbol holds now: memory in the heap, disk blocks in a file."""
    @property
    def path(self) -> Optional[Path]:
        """The symbol's file in a file store, else None."""
    @property
    def recoveries(self) -> int:
        """Torn batches rolled back in this symbol's file (0 in the heap)."""
    @property
    def last(self) -> Optional[float]:
        """The most recent price, or None before the first."""
    def count_and_last(self) -> tuple[int, Optional[float]]:
        """(prices added, the most recent price or None), both of one commit."""
    def prices(self, n: int) -> "array[float]":
        """The last n prices (fewer if fewer are held), oldest first, in one copy."""
    def envelope(self, k: int, buckets: int = 200) -> Envelope:
        """The last 10**k prices in about `buckets` (1..2000) aligned buckets, each with its
        lowest and highest price; O(buckets) once this process built the pyramid (at most
        1,000 blocks a call, newest first: until then not `complete`, the oldest buckets NaN)."""
    def recover(self) -> bool:
        """Roll back a torn batch now if there is one; True if there was."""
    def verify(self, recompute: bool = True) -> None:
        """Check the checksums (header, snapshot, the window's prices) and, with recompute, every
        window's statistics against the prices themselves (reads the whole window);
        StoreCorruptionError names the first difference."""
    def add(self, values: Prices) -> None:
        """Append prices, oldest first; all or nothing. ValueError names the first bad index."""
    def stats(self, k: int) -> Stats:
        """Statistics over the last 10**k prices in O(1)."""
    def __len__(self) -> int:
        """Prices added so far."""

class Store:
    """Symbol -> SymbolStats, created on first add: in the heap (not thread-safe), or with
    ``path`` in memory-mapped files shared by every process that opens the directory."""
    def __init__(self, max_symbols: int = 10, max_k: int = 8,
                 path: Union[str, "os.PathLike[str]", None] = None, *,
                 max_batch: Optional[int] = None, sync: bool = False,
                 shared_group: bool = False) -> None: ...
    @property
    def path(self) -> Optional[Path]: ...
    @property
    def max_batch(self) -> Optional[int]:
        """The largest batch a file store takes (fixed at creation); None in the heap."""
    def recover(self) -> list[str]:
        """Roll back torn batches in every symbol; the symbols that had one."""
    def verify(self) -> dict[str, str]:
        """SymbolStats.verify() of every symbol: {symbol: reason} for each that failed."""
    @property
    def max_symbols(self) -> int: ...
    @property
    def max_k(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def add(self, symbol: str, values: Prices) -> None:
        """Validate the whole batch, then create the symbol if new, then append."""
    def stats(self, symbol: str, k: int) -> Stats:
        """KeyError for an unknown symbol, else SymbolStats.stats(k)."""
    def prices(self, symbol: str, n: int) -> "array[float]":
        """KeyError for an unknown symbol, else SymbolStats.prices(n)."""
    def count_and_last(self, symbol: str) -> tuple[int, Optional[float]]:
        """KeyError for an unknown symbol, else SymbolStats.count_and_last()."""
    def envelope(self, symbol: str, k: int, buckets: int = 200) -> Envelope:
        """KeyError for an unknown symbol, else SymbolStats.envelope(k, buckets)."""
    def symbols(self) -> list[dict]:
        """[{"symbol", "count", "last"}, ...] sorted by symbol."""
    def delete(self, symbol: str) -> None:
        """Remove the symbol and its prices (its slot is free); KeyError if it has none. In a
        file store every process sees it gone at once; a kill leaves it whole or gone."""
    def __getitem__(self, symbol: str) -> SymbolStats:
        """KeyError for an unknown symbol; the SymbolStats raises SymbolDeletedError (a KeyError)
        once the symbol is deleted."""
    def __delitem__(self, symbol: str) -> None: ...
    def __contains__(self, symbol: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
