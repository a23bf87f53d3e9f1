"""Framing: split a dump file's byte stream into units (JSON objects, CSV rows, XML items).

A framer yields :class:`RawUnit` for each unit it could parse and :class:`UnitError` for each
it could not, with the line (1-based) and byte offset where known. A fault the framer cannot
recover from (a broken JSON array, XML that is not well-formed) ends the file with one
``UnitError``; every unit before it has already been yielded. Framing knows nothing about
retailers: :mod:`pipeline.sources.base` pairs a framer with a retailer's record parser.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
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


Frame = Iterator[RawUnit | UnitError]


def _decoded_lines(stream: BinaryIO) -> Iterator[tuple[int, int, str | None, bytes]]:
    """(line number, byte offset, text or None if not UTF-8, raw bytes) per line."""
    offset = 0
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        yield number, offset, text, raw
        offset += len(raw)


class PeekStream:
    """A binary stream that can look at its first bytes without consuming them."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._head = b""

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

    def readline(self) -> bytes:
        if b"\n" in self._head:
            line, _, self._head = self._head.partition(b"\n")
            return line + b"\n"
        head, self._head = self._head, b""
        return head + self._stream.readline()

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
        yield from _frame_json_array(stream.read())
    else:
        yield from _frame_json_lines(stream)


def _frame_json_lines(stream) -> Frame:
    for number, offset, text, raw in _decoded_lines(stream):
        if text is None:
            yield UnitError(number, offset, Reason.INVALID_ENCODING, "line is not valid UTF-8",
                            raw.decode("utf-8", "replace"))
            continue
        if not text.strip():
            yield RawUnit(number, offset, None)
            continue
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            yield UnitError(number, offset, Reason.MALFORMED_JSON, f"invalid JSON: {exc}", text)
            continue
        if not isinstance(payload, dict):
            yield UnitError(number, offset, Reason.NOT_AN_OBJECT,
                            f"expected a JSON object, got {type(payload).__name__}", text)
            continue
        yield RawUnit(number, offset, payload, text)


def _frame_json_array(data: bytes) -> Frame:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield UnitError(None, exc.start, Reason.INVALID_ENCODING, f"file is not valid UTF-8: {exc}")
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos < len(text) and text[pos] == "]":
            rest = text[pos + 1:]
            if rest.strip():
                start = pos + 1 + len(rest) - len(rest.lstrip())
                yield UnitError(text.count("\n", 0, start) + 1, len(text[:start].encode()), Reason.MALFORMED_JSON,
                                "content after the end of the JSON array (is this JSON Lines?)", rest.strip()[:500])
            return
        line = text.count("\n", 0, pos) + 1
        try:
            payload, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield UnitError(exc.lineno, len(text[: exc.pos].encode()), Reason.MALFORMED_JSON,
                            f"invalid JSON array element: {exc.msg} (the rest of the file is skipped)",
                            text[pos: pos + 500])
            return
        raw = text[pos:end]
        if isinstance(payload, dict):
            yield RawUnit(line, len(text[:pos].encode()), payload, raw)
        else:
            yield UnitError(line, None, Reason.NOT_AN_OBJECT,
                            f"expected a JSON object, got {type(payload).__name__}", raw)
        pos = end


def frame_delimited(stream: BinaryIO, delimiter: str) -> Frame:
    """CSV/TSV with a header row; a row whose column count differs from the header is an error."""
    errors: list[UnitError] = []
    row_lines: list[tuple[int, int]] = []  # (line, offset) of the physical lines of the current row

    def lines():
        for number, offset, text, raw in _decoded_lines(stream):
            if text is None:
                errors.append(UnitError(number, offset, Reason.INVALID_ENCODING, "line is not valid UTF-8",
                                        raw.decode("utf-8", "replace")))
                continue
            row_lines.append((number, offset))
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    header = None
    try:
        for row in reader:
            yield from errors
            errors.clear()
            line, offset = row_lines[0]
            row_lines.clear()
            if header is None:
                header = [h.strip() for h in row]
                if not any(header):
                    header = None
                continue
            raw = delimiter.join(row)
            if not row or not any(cell.strip() for cell in row):
                yield RawUnit(line, offset, None)
                continue
            if len(row) != len(header):
                yield UnitError(line, offset, Reason.MALFORMED_ROW,
                                f"row has {len(row)} columns, header has {len(header)}", raw)
                continue
            yield RawUnit(line, offset, dict(zip(header, row)), raw)
    except csv.Error as exc:
        line, offset = row_lines[0] if row_lines else (None, None)
        yield UnitError(line, offset, Reason.MALFORMED_ROW, f"CSV error: {exc} (rest of file skipped)")
    yield from errors


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


def _item_payload(elem: ET.Element) -> dict:
    payload: dict[str, object] = {}
    for child in elem:
        key, value = _local(child.tag), (child.text or "").strip()
        if key in payload:  # repeated tag, e.g. several g:additional_image_link
            prev = payload[key]
            payload[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            payload[key] = value
    return payload


def frame_xml(stream: BinaryIO, item_tags: tuple[str, ...] = ("item", "entry")) -> Frame:
    """RSS 2.0 / Atom product feeds: one unit per <item> (or <entry>), namespaces stripped."""
    parser = ET.XMLPullParser(events=("start", "end"))
    stack: list[ET.Element] = []
    item_start = 0
    number = 0
    for number, _offset, _text, raw in _decoded_lines(stream):
        try:
            parser.feed(raw)
            events = list(parser.read_events())
        except ET.ParseError as exc:
            line = exc.position[0] if exc.position else number
            yield UnitError(line, None, Reason.MALFORMED_XML,
                            f"XML is not well-formed: {exc} (the rest of the file is skipped)",
                            raw.decode("utf-8", "replace"))
            return
        for event, elem in events:
            if event == "start":
                stack.append(elem)
                if _local(elem.tag) in item_tags:
                    item_start = number
                continue
            stack.pop()
            if _local(elem.tag) in item_tags:
                yield RawUnit(item_start, None, _item_payload(elem), ET.tostring(elem, encoding="unicode"))
                if stack:
                    stack[-1].remove(elem)  # keep memory flat on large feeds
    try:
        parser.close()
    except ET.ParseError as exc:
        yield UnitError(number or None, None, Reason.MALFORMED_XML,
                        f"XML is not well-formed: {exc} (the rest of the file is skipped)")
