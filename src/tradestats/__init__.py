"""tradestats: rolling-window price statistics in constant time.

The engine (``SymbolStats``, ``Store``) has no HTTP in it and imports without Falcon.
"""
from tradestats.engine import (
    InvalidPriceError,
    NotEnoughDataError,
    Stats,
    Store,
    SymbolStats,
    TooManySymbolsError,
)

__version__ = "0.1.0"

__all__ = [
    "InvalidPriceError",
    "NotEnoughDataError",
    "Stats",
    "Store",
    "SymbolStats",
    "TooManySymbolsError",
    "__version__",
]
