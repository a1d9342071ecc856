"""Where the rows of a CSV, TSV or JSON-lines file end: a streaming, quote-aware scan.

A CSV row ends at a newline that is not inside a quoted field; a quoted field
may hold newlines, delimiters and doubled quotes (``""``). Cutting a file on
any other newline loses rows and makes garbage ones, so both ``run`` and
``plan`` cut tables only where :class:`RowEnds` says a row ends.

The rules are those of pandas' reader (the one the workers use): a quote opens
a quoted field only at the start of a field (after a delimiter or a newline, or
at the start of the file); elsewhere it is an ordinary character; inside a
quoted field ``""`` is one quote and a single ``"`` closes the field. A ``\\r``
before the newline is part of the row.

Speed: a stretch of the file without a quote needs no parsing, so it is cut
with ``bytes.find``/``bytes.count`` (GB/s). Only stretches that hold quotes go
through one compiled regular expression, which matches whole rows in C
(about 100 MB/s on quote-heavy data); there is no Python loop per byte.

JSON lines cannot hold a raw newline inside a string (JSON escapes it as
``\\n``), so every newline ends a row there: pass ``delimiter=None``.
"""

from __future__ import annotations

import functools
import re
from typing import BinaryIO

BLOCK = 1 << 20
# A quoted field longer than this (or an unclosed quote in a malformed file) stops the
# cutting: the rest of the file becomes one slice, read whole by a worker, which scores it
# or fails its items with pandas' message. Memory stays bounded either way.
MAX_ROW = 64 << 20
# rows counted per regular-expression call when counting rows through quoted text
STRIDE = 256


def _row(delimiter: bytes) -> bytes:
    """A regular expression for one row; every part is possessive, so a row has exactly one
    reading (no backtracking into another, wrong, one)."""
    d = re.escape(delimiter)
    quoted = rb'(?:(?<=[' + d + rb'\n])|\A)"(?:[^"]++|"")*+"'  # a quote at a field's start opens a field
    plain = rb'[^"\n]++|(?<=[^' + d + rb'\n])"'  # any other quote is an ordinary character
    return rb'(?>(?:' + plain + rb'|' + quoted + rb')*+\n)'


@functools.lru_cache(maxsize=16)
def _rows(delimiter: bytes, count: int = 0) -> re.Pattern:
    """Exactly ``count`` rows, or (0) as many whole rows as there are."""
    return re.compile(rb'(?:' + _row(delimiter) + (rb'){%d}' % count if count else rb')*+'))


class RowEnds:
    """Walks a file from one row boundary to the next, reading it in blocks, never all at once.

    ``position`` is always where a row starts (a boundary). :meth:`end_at_or_after` and
    :meth:`skip_rows` move it forward and return the new boundary; at the end of the file
    (a last row without a newline included) they return the file's size.
    """

    def __init__(self, f: BinaryIO, start: int, total: int, delimiter: bytes | None) -> None:
        self._f = f
        self._total = total
        self._delimiter = delimiter
        self._patterns = (_rows(delimiter, 1), _rows(delimiter)) if delimiter is not None else None
        f.seek(start)
        self._start = start
        self._buf = b""
        self._base = start  # file offset of _buf[0]
        self._pos = 0  # index in _buf of the current boundary
        self._eof = start >= total

    @property
    def position(self) -> int:
        """The current row boundary, as a file offset."""
        return self._base + self._pos

    def head(self) -> bytes | None:
        """The bytes from where the walk started to the current boundary (after ``skip_rows(1)``
        from the start of a file: its header line), or None if they are no longer in the buffer."""
        if self._base != self._start:
            return None
        return bytes(self._buf[: self._pos])

    def _more(self) -> bool:
        """Read on (keeping only what lies after the current boundary); False at the end of the
        file. The block is read straight into the new buffer, behind the kept tail (one copy).
        A row longer than a block doubles the read, so a long row is scanned O(its length) times."""
        if self._eof:
            return False
        tail = len(self._buf) - self._pos
        buf = bytearray(tail + max(BLOCK, tail))
        buf[:tail] = memoryview(self._buf)[self._pos :]
        got = self._f.readinto(memoryview(buf)[tail:])
        if not got:
            self._eof = True
            return False
        del buf[tail + got :]
        self._buf, self._base, self._pos = buf, self._base + self._pos, 0
        return True

    def _to_end(self) -> int:
        self._base, self._buf, self._pos = self._total, b"", 0
        return self._total

    def _too_long(self) -> bool:
        return len(self._buf) - self._pos > MAX_ROW

    def _jump(self, offset: int) -> None:
        """JSON lines only (every newline ends a row): go straight to ``offset`` without reading."""
        self._f.seek(offset)
        self._base, self._buf, self._pos = offset, b"", 0

    def end_at_or_after(self, offset: int) -> int:
        """The first row boundary at or after ``offset`` (and past the current one)."""
        if self._patterns is None and offset - 1 > self._base + len(self._buf):
            self._jump(offset - 1)
        while True:
            buf, pos = self._buf, self._pos
            target = max(offset - self._base, pos + 1)  # index in buf
            newline = buf.find(b"\n", target - 1)
            quote = -1 if self._patterns is None else buf.find(b'"', pos, newline if newline >= 0 else len(buf))
            if quote < 0:
                if newline >= 0:  # no quote since the last boundary: every newline ends a row
                    self._pos = newline + 1
                    return self.position
                self._pos = buf.rfind(b"\n", pos) + 1 or pos  # every row read so far ends before the target
            else:
                one, many = self._patterns
                # the whole rows that end before the target, then the row that crosses it
                before = many.match(buf, pos, min(target - 1, len(buf))).end() if target - 1 > pos else pos
                row = one.match(buf, before) if newline >= 0 else None
                if row is not None:
                    self._pos = row.end()
                    return self.position
                self._pos = before  # the row that crosses the target goes on past what is read
            if self._too_long() or not self._more():
                return self._to_end()

    def skip_rows(self, count: int) -> int:
        """The boundary ``count`` rows after the current one (or the end of the file)."""
        while count > 0:
            buf, pos = self._buf, self._pos
            if self._patterns is None or buf.find(b'"', pos) < 0:
                lines = buf.count(b"\n", pos)
                if lines >= count:
                    for _ in range(count):
                        pos = buf.find(b"\n", pos) + 1
                    self._pos = pos
                    return self.position
                count -= lines
                self._pos = buf.rfind(b"\n", pos) + 1 if lines else pos
            else:
                while count >= STRIDE and (stride := _rows(self._delimiter, STRIDE).match(buf, pos)):
                    pos = self._pos = stride.end()  # STRIDE rows in one call, in C
                    count -= STRIDE
                if count == 0:
                    return self.position
                one, many = self._patterns
                whole = many.match(buf, pos).end()  # every complete row read so far
                for row in one.finditer(buf, pos, whole):
                    count -= 1
                    if count == 0:
                        self._pos = row.end()
                        return self.position
                self._pos = whole
            if self._too_long() or not self._more():
                return self._to_end()
        return self.position
