"""Type stubs for the Cython engine (tradestats/engine.pyx)."""
from array import array
from typing import Iterator, Sequence, Union

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

class SymbolStats:
    """One symbol's rolling store over the windows 10**1 .. 10**max_k."""
    def __init__(self, max_k: int = 8) -> None: ...
    @property
    def max_k(self) -> int: ...
    @property
    def nbytes(self) -> int:
        """Bytes of memory this symbol holds now."""
    @property
    def rebuilds(self) -> tuple[int, ...]:
        """Per window, how often its sums were rebuilt from the ring (numerical safety valve)."""
    def add(self, values: Prices) -> None:
        """Append prices, oldest first; all or nothing. ValueError names the first bad index."""
    def stats(self, k: int) -> Stats:
        """Statistics over the last 10**k prices in O(1)."""
    def __len__(self) -> int:
        """Prices added so far."""

class Store:
    """Symbol -> SymbolStats, created on first add. Not thread-safe."""
    def __init__(self, max_symbols: int = 10, max_k: int = 8) -> None: ...
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
    def __getitem__(self, symbol: str) -> SymbolStats: ...
    def __contains__(self, symbol: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
