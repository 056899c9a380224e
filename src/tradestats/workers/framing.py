"""Has one whole HTTP/1.1 request arrived? Answered incrementally, without parsing the request.

The buffered worker reads every connection into a buffer and serves a request only once this says
yes (see ``buffered.py``): a client that sends slowly, or stops, then holds a buffer and never
the worker.

It validates nothing. Whenever the framing cannot be read — a head longer than any gunicorn
accepts, a Content-Length that is not digits or disagrees with another, an unknown
Transfer-Encoding, a bad chunk size or a chunk without its CRLF, a body larger than the server
takes — it answers yes at once, and gunicorn's parser (or the app, for a body too large) refuses
the request without needing another byte.

Framing, per RFC 9112 section 6: no Content-Length and no Transfer-Encoding means no body;
``Transfer-Encoding: ... chunked`` means chunks up to a zero-size chunk and an optional trailer
section ending in an empty line; otherwise Content-Length bytes follow the head.
"""
from __future__ import annotations

HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

#: Longest chunk-size line (size, extensions and CRLF) waited for before handing over.
MAX_CHUNK_LINE = 1024


class RequestFraming:
    """Follows one connection's buffer; ``complete(buffer)`` after every read.

    ``buffer`` only grows between calls (the connection appends what it reads) until ``reset()``,
    so each call scans only the new bytes: a client dribbling one byte at a time costs O(1) per
    byte, not a rescan of its head.
    """

    __slots__ = ("max_head", "max_body", "expects_continue", "_scanned", "_head_end", "_body_end",
                 "_chunk_at", "_in_trailers")

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.reset()

    def reset(self) -> None:
        self.expects_continue = False  # the head asked for "100 Continue" before its body
        self._scanned = 0       # where the search for the end of the head resumes
        self._head_end = -1     # offset just past the head's empty line, once seen
        self._body_end = -1     # Content-Length framing: offset just past the body
        self._chunk_at = -1     # chunked framing: offset of the next chunk-size line
        self._in_trailers = False

    def head_too_long(self, buffer: bytes | bytearray) -> bool:
        """The head has not ended within ``max_head`` bytes (nobody should wait for the rest)."""
        return self._head_end < 0 and len(buffer) > self.max_head

    def complete(self, buffer: bytes | bytearray) -> bool:
        """True once the buffer holds a whole request, or a request whose framing is broken."""
        if self._head_end < 0 and not self._find_head(buffer):
            return len(buffer) > self.max_head
        if self._body_end >= 0:
            return len(buffer) >= self._body_end
        if self._chunk_at >= 0:
            return self._chunks_complete(buffer)
        return True  # no body, or framing handed to the parser to refuse

    def _find_head(self, buffer: bytes | bytearray) -> bool:
        start = self._skip_leading_blank_lines(buffer)
        end = buffer.find(b"\n\r\n", max(self._scanned - 2, start))
        bare = buffer.find(b"\n\n", max(self._scanned - 1, start))
        self._scanned = len(buffer)
        if end < 0 and bare < 0:
            return False
        if bare >= 0 and (end < 0 or bare < end):
            self._head_end = bare + 2
        else:
            self._head_end = end + 3
        self._read_framing(bytes(buffer[start:self._head_end]))
        return True

    @staticmethod
    def _skip_leading_blank_lines(buffer: bytes | bytearray) -> int:
        # RFC 9112 section 2.2: a server should ignore empty lines before the request line.
        at = 0
        while buffer.startswith(b"\r\n", at):
            at += 2
        return at

    def _read_framing(self, head: bytes) -> None:
        """Set the body's end (Content-Length) or chunk start; leave both unset to hand over."""
        lengths, codings = set(), []
        for line in head.split(b"\n")[1:]:
            name, colon, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                lengths.add(value.strip(b" \t\r"))
            elif name == b"transfer-encoding":
                codings.append(value.strip(b" \t\r").lower())
            elif name == b"expect":
                self.expects_continue = value.strip(b" \t\r").lower() == b"100-continue"
        if codings:
            if not lengths and codings[-1].rsplit(b",", 1)[-1].strip() == b"chunked":
                self._chunk_at = self._head_end
            return
        if len(lengths) == 1:
            (length,) = lengths
            if length.isdigit() and int(length) <= self.max_body:
                self._body_end = self._head_end + int(length)

    def _chunks_complete(self, buffer: bytes | bytearray) -> bool:
        at = self._chunk_at
        while True:
            line_end = buffer.find(b"\r\n", at, at + MAX_CHUNK_LINE)
            if line_end < 0:
                return len(buffer) - at >= MAX_CHUNK_LINE  # a size line that never ends
            if self._in_trailers:
                if line_end == at:
                    return True  # the empty line after the last chunk (and any trailers)
                if line_end - self._head_end > self.max_head + self.max_body:
                    return True
                at = self._chunk_at = line_end + 2
                continue
            size_text = bytes(buffer[at:line_end]).split(b";", 1)[0]
            if not size_text or len(size_text) > 8 or not HEX_DIGITS.issuperset(size_text):
                return True  # gunicorn refuses this size line
            size = int(size_text, 16)
            if size == 0:
                self._in_trailers = True
                at = self._chunk_at = line_end + 2
                continue
            data_end = line_end + 2 + size
            if data_end - self._head_end > self.max_body:
                return True  # the app answers 413
            if len(buffer) < data_end + 2:
                return False
            if buffer[data_end:data_end + 2] != b"\r\n":
                return True  # gunicorn: chunk missing its terminator
            at = self._chunk_at = data_end + 2
