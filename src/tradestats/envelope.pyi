"""Min/max envelopes of a symbol's window for charts (envelope.pyx)."""
from array import array

from tradestats.engine import SymbolStats

#: Most buckets one envelope has.
MAX_BUCKETS: int

class Envelope:
    """Bucket i covers positions max(start, (start // bucket_prices + i) * bucket_prices) ..
    min(count, (start // bucket_prices + i + 1) * bucket_prices) - 1."""
    @property
    def count(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def bucket_prices(self) -> int: ...
    @property
    def min(self) -> "array[float]": ...
    @property
    def max(self) -> "array[float]": ...
    @property
    def complete(self) -> bool:
        """False while this process's pyramid does not cover the window: its oldest buckets
        are NaN."""

def envelope(symbol: SymbolStats, k: int, buckets: int = 200) -> Envelope: ...
