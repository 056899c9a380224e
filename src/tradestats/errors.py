"""The engine's exceptions (re-exported by tradestats and tradestats.engine)."""
from __future__ import annotations

import errno

from tradestats.limits import MAX_ABS_PRICE
from tradestats.messages import NOT_ENOUGH_DATA


class NotEnoughDataError(ValueError):
    """Fewer than 10**k prices have been added."""

    def __init__(self, message=NOT_ENOUGH_DATA):
        super().__init__(message)


class InvalidPriceError(ValueError):
    """A batch element is not a finite real number with |x| <= 1e100; nothing was stored."""

    def __init__(self, index, value):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        super().__init__(
            f"value at index {index} is not a finite real number with magnitude at most "
            f"{MAX_ABS_PRICE:g}: {shown}"
        )
        self.index = index


class StoreFormatError(ValueError):
    """A store file this version cannot use: another format version or max_k, truncated or corrupt.

    Nothing in the file is changed.
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StoreCorruptionError(StoreFormatError):
    """A checksum or a check of a symbol file failed while it was in use: what it holds is not
    what was written. Nothing of it is served, and nothing is written to it."""


class SymbolDeletedError(KeyError):
    """The symbol was deleted (by this process or another) since this SymbolStats was opened.
    A Store opens the symbol again: it is not found, or it is a new symbol made since."""

    def __str__(self):
        where = self.args[0] if self.args else None
        return "the symbol was deleted" if where is None else f"{where}: the symbol was deleted"


class DiskFullError(OSError):
    """No disk space for a batch (or a new symbol); nothing of it was stored."""


class StorageSyncError(OSError):
    """The disk did not take a batch (a failed write) or, in sync mode, did not confirm it:
    nothing of it was stored (retry it)."""


def sync_failure(code: int, path) -> OSError:
    """The exception for a failed sync of ``path``: the batch was rolled back."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(code, f"no space to sync {path}; the batch was not stored", str(path))
    return StorageSyncError(code, f"cannot sync {path}; the batch was not stored", str(path))


def write_failure(code: int, path) -> OSError:
    """The exception for a failed write of a batch's prices into ``path``: it was rolled back."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(code, f"no space to write {path}; the batch was not stored", str(path))
    return StorageSyncError(code, f"cannot write {path}; the batch was not stored", str(path))


class TooManySymbolsError(ValueError):
    """A new symbol would pass the store's max_symbols."""

    def __init__(self, max_symbols):
        super().__init__(f"symbol limit reached: at most {max_symbols} symbols")
        self.max_symbols = max_symbols
