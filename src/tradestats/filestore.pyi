"""Type stubs for a file store's symbol (tradestats/filestore.pyx)."""
import os
from typing import Union

from tradestats.engine import SymbolStats

class FileSymbolStats(SymbolStats):
    """SymbolStats in a shared, memory-mapped symbol file: what Store(path=DIR)[symbol] returns.
    One writer at a time per symbol, readers that never wait, every byte read checked first."""

def symbol_file_version(path: Union[str, "os.PathLike[str]"]) -> int:
    """The format version a symbol file says it has (0 if it is too short to say)."""
