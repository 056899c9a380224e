"""An /add_batch/ body parsed into doubles without the GIL (batchparse.pyx, libsimdjson)."""

class Prices:
    """A read-only 1-D float64 buffer over parsed values."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class BatchParser:
    """One simdjson parser: one parse at a time (the caller holds a lock)."""
    def parse(self, body: bytes) -> tuple[str, memoryview] | None:
        """(symbol, values as a float64 memoryview), or None when batchparse.h declines the
        body (the ordinary path then reads it). The GIL is released for the whole parse."""
