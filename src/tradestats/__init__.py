"""tradestats: rolling-window price statistics in constant time.

The engine (``SymbolStats``, ``Store``) has no HTTP in it and imports without Falcon.
"""
from tradestats.engine import (
    DiskFullError,
    InvalidPriceError,
    NotEnoughDataError,
    Stats,
    StorageSyncError,
    Store,
    StoreCorruptionError,
    StoreFormatError,
    SymbolDeletedError,
    SymbolStats,
    TooManySymbolsError,
)

__version__ = "0.2.0"

__all__ = [
    "DiskFullError",
    "InvalidPriceError",
    "NotEnoughDataError",
    "Stats",
    "StorageSyncError",
    "Store",
    "StoreCorruptionError",
    "StoreFormatError",
    "SymbolDeletedError",
    "SymbolStats",
    "TooManySymbolsError",
    "__version__",
]
