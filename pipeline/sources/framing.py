"""Framing: split a dump file's byte stream into units (JSON objects, CSV rows, XML items).

A framer yields :class:`RawUnit` for each unit it could parse and :class:`UnitError` for each
it could not, with the line (1-based) and byte offset where known. A fault the framer cannot
recover from (a broken JSON array, an XML feed whose skeleton is not well-formed) ends the file
with one ``UnitError``; every unit before it has already been yielded. JSON is framed here, CSV/TSV
in :mod:`pipeline.sources.delimited` and XML feeds in :mod:`pipeline.sources.xml_feed`, all on the
line reading and the bounds below. Framing knows nothing about retailers:
:mod:`pipeline.sources.base` pairs a framer with a retailer's record parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.records import Reason


@dataclass(frozen=True)
class RawUnit:
    line: int
    offset: int | None
    payload: object  # dict for JSON / CSV / XML items; None for a blank line
    raw: str = ""


@dataclass(frozen=True)
class UnitError:
    line: int | None
    offset: int | None
    reason: Reason
    message: str
    raw: str = ""
    fatal: bool = False  # the framer stops here: the rest of the file is not read


# Bounds on untrusted dumps: one line (JSON Lines, CSV row, XML chunk) and a whole JSON array.
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_JSON_ARRAY_BYTES = 512 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


Frame = Iterator[RawUnit | UnitError]
# A \uD800-\uDFFF escape: JSON allows it, but an unpaired one decodes to a lone surrogate,
# which no later stage can encode as UTF-8 (Beam coders, Parquet).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unencodable(payload: object, text: str) -> str | None:
    """Why ``payload`` cannot be written as UTF-8 (a lone surrogate escape), or None."""
    if not _SURROGATE_ESCAPE.search(text):  # the fast path: no such escape at all
        return None
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"unpaired UTF-16 surrogate escape in the JSON text ({exc.reason}): not representable as UTF-8"
    return None


class LineTooLong(Exception):
    pass


def _lines(stream, limit: int | None = None) -> Iterator[tuple[int, int, bytes | None]]:
    """(line number, byte offset, raw bytes) per line; raw is None for a line over ``limit``
    bytes (default MAX_LINE_BYTES), which is skipped up to its newline without being held in memory."""
    limit = limit or MAX_LINE_BYTES
    offset, number = 0, 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        number += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1024 * 1024)
                size += len(raw)
            yield number, offset, None
            offset += size
            continue
        yield number, offset, raw
        offset += len(raw)


def decoded_lines(stream) -> Iterator[tuple[int, int, str | None, bytes | None]]:
    """(line number, byte offset, text or None if not UTF-8, raw bytes or None if too long)."""
    for number, offset, raw in _lines(stream):
        if raw is None:
            yield number, offset, None, None
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        yield number, offset, text, raw


def line_error(number: int, offset: int, raw: bytes | None) -> UnitError:
    """The dead letter for a line :func:`decoded_lines` could not give as text."""
    if raw is None:
        return UnitError(number, offset, Reason.LINE_TOO_LONG, "line is longer than the limit of "
                         f"{MAX_LINE_BYTES} bytes")
    return UnitError(number, offset, Reason.INVALID_ENCODING, "line is not valid UTF-8", raw.decode("utf-8", "replace"))


class PeekStream:
    """A binary stream that can look at its first bytes without consuming them."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._head = b""
        if self.peek(3) == _BOM:  # Excel and some feed exporters start UTF-8 files with a BOM
            self._head = self._head[3:]

    def peek(self, size: int = 65536) -> bytes:
        while len(self._head) < size:
            chunk = self._stream.read(size - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head[:size]

    def first_char(self, chunk: int = 4096) -> bytes:
        """The first non-whitespace byte (b"" for a blank stream), reading ahead in small chunks."""
        while True:
            stripped = self._head.lstrip()
            if stripped:
                return stripped[:1]
            size = len(self._head)
            if len(self.peek(size + chunk)) == size:
                return b""

    def read(self, size: int = -1) -> bytes:
        head, self._head = self._head, b""
        if size is None or size < 0:
            return head + self._stream.read()
        if len(head) >= size:
            self._head = head[size:]
            return head[:size]
        return head + self._stream.read(size - len(head))

    def readline(self, limit: int = -1) -> bytes:
        if b"\n" in self._head:
            line, _, rest = self._head.partition(b"\n")
            line += b"\n"
            if 0 <= limit < len(line):
                line, rest = line[:limit], line[limit:] + rest
            self._head = rest
            return line
        head, self._head = self._head, b""
        if 0 <= limit <= len(head):
            self._head = head[limit:]
            return head[:limit]
        return head + self._stream.readline(limit - len(head) if limit >= 0 else -1)

    def __iter__(self):
        while line := self.readline():
            yield line


def frame_json(stream: PeekStream, path: str = "") -> Frame:
    """JSON Lines, or one JSON array of objects.

    ``.jsonl`` / ``.ndjson`` files are always JSON Lines; otherwise a file whose first
    non-blank byte is '[' is read as an array (anything after its closing ']' is an error).
    """
    name = path.lower().removesuffix(".gz")
    if not name.endswith((".jsonl", ".ndjson")) and stream.first_char() == b"[":
        data = stream.read(MAX_JSON_ARRAY_BYTES + 1)
        if len(data) > MAX_JSON_ARRAY_BYTES:
            yield UnitError(None, 0, Reason.FILE_TOO_LARGE,
                            f"JSON array files are read whole and this one exceeds {MAX_JSON_ARRAY_BYTES} bytes;"
                            " write JSON Lines instead", fatal=True)
            return
        yield from _frame_json_array(data)
    else:
        yield from _frame_json_lines(stream)


def _frame_json_lines(stream) -> Frame:
    for number, offset, text, raw in decoded_lines(stream):
        if text is None:
            yield line_error(number, offset, raw)
            continue
        if not text.strip():
            yield RawUnit(number, offset, None)
            continue
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, absurd nesting
            yield UnitError(number, offset, Reason.MALFORMED_JSON, f"invalid JSON: {exc}"[:500], text)
            continue
        if not isinstance(payload, dict):
            yield UnitError(number, offset, Reason.NOT_AN_OBJECT,
                            f"expected a JSON object, got {type(payload).__name__}", text)
            continue
        if problem := _unencodable(payload, text):
            yield UnitError(number, offset, Reason.INVALID_ENCODING, problem, text)
            continue
        yield RawUnit(number, offset, payload, text)


def _frame_json_array(data: bytes) -> Frame:
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        yield UnitError(None, exc.start, Reason.INVALID_ENCODING, f"file is not valid UTF-8: {exc}", fatal=True)
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, offset, seen = 1, 0, 0  # line and byte offset of text[seen], advanced incrementally

    def advance(to: int) -> None:
        nonlocal line, offset, seen
        chunk = text[seen:to]
        line += chunk.count("\n")
        offset += len(chunk.encode("utf-8"))
        seen = to

    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        advance(pos)
        if pos < len(text) and text[pos] == "]":
            rest = text[pos + 1:]
            if rest.strip():
                advance(pos + 1 + len(rest) - len(rest.lstrip()))
                yield UnitError(line, offset, Reason.MALFORMED_JSON,
                                "content after the end of the JSON array (is this JSON Lines?)", rest.strip()[:500],
                                fatal=True)
            return
        try:
            payload, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            yield UnitError(line, offset, Reason.MALFORMED_JSON,
                            f"invalid JSON array element: {str(exc)[:300]} (the rest of the file is skipped)",
                            text[pos: pos + 500], fatal=True)
            return
        raw = text[pos:end]
        if isinstance(payload, dict) and (problem := _unencodable(payload, raw)):
            yield UnitError(line, offset, Reason.INVALID_ENCODING, problem, raw)
        elif isinstance(payload, dict):
            yield RawUnit(line, offset, payload, raw)
        else:
            yield UnitError(line, offset, Reason.NOT_AN_OBJECT,
                            f"expected a JSON object, got {type(payload).__name__}", raw)
        pos = end
