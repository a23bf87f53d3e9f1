"""XML product feeds (RSS 2.0 / Atom): one unit per ``<item>`` / ``<entry>``, each parsed alone.

The feed is scanned for item boundaries and every item is parsed on its own, inside the
namespace declarations of the feed's root, so a malformed item is one dead letter and the
items after it are still read. An item that is not closed before the next one starts is
dead-lettered and reading resumes at the next item. Everything outside the items (the feed's
skeleton: ``<rss>``, ``<channel>``, the trailer) goes through a parser of its own: a fault
there, or a feed that stops before its root element is closed, ends the file with one error.

Entity declarations (``<!ENTITY``) are refused; expat never loads external entities or DTDs,
and an item that uses an entity the feed does not define is malformed. Feeds in another
encoding than UTF-8 are transcoded first (the XML declaration or byte-order mark says which).
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Generator, Iterator
from typing import BinaryIO
from xml.sax.saxutils import quoteattr

from pipeline.records import Reason
from pipeline.sources import framing
from pipeline.sources.framing import Frame, RawUnit, UnitError

Unit = RawUnit | UnitError

CHUNK_BYTES = 1024 * 1024
_DECLARED = re.compile(rb"""^(\s*<\?xml[^>]*?\sencoding\s*=\s*["'])([A-Za-z][\w.:-]*)(["'])""")
_SAME_AS_UTF8 = ("utf-8", "ascii")
_WRAPPER = b"fashion-enrich-item"
_SPECIAL = rb"|(<!--)|(<!\[CDATA\[)"
_CLOSES = {b"<!--": re.compile(rb"-->"), b"<![CDATA[": re.compile(rb"\]\]>")}
_TAG_END = re.compile(rb">")


class FeedError(Exception):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def _utf8_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The feed's bytes as UTF-8 (the XML declaration rewritten to say so where it was transcoded)."""
    first = stream.read(CHUNK_BYTES)
    if first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        encoding = "utf-32"
    elif first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        first = first.removeprefix(codecs.BOM_UTF8)
        declared = _DECLARED.match(first)
        encoding = declared.group(2).decode("ascii") if declared else "utf-8"
    try:
        if codecs.lookup(encoding).name in _SAME_AS_UTF8:
            yield first
            yield from iter(lambda: stream.read(CHUNK_BYTES), b"")
            return
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError as exc:
        raise FeedError(Reason.INVALID_ENCODING, f"cannot decode the feed: {exc} (re-encode it as UTF-8)") from exc
    chunk = first
    try:
        text = decoder.decode(chunk).encode("utf-8")
        yield _DECLARED.sub(rb"\1utf-8\3", text, count=1)
        while chunk:
            chunk = stream.read(CHUNK_BYTES)
            yield decoder.decode(chunk, final=not chunk).encode("utf-8")
    except UnicodeError as exc:
        raise FeedError(Reason.INVALID_ENCODING, f"the feed is not valid {encoding}: {exc}") from exc


class _Buffer:
    """The unread part of the feed, refilled chunk by chunk, with the line number of its start."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self.data, self.line, self.eof = chunks, b"", 1, False

    def more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            self.eof = True
            return False
        self.data += chunk
        return True

    def take(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        self.line += out.count(b"\n")
        return out

    def search(self, pattern: re.Pattern, at: int = 0, limit: int | None = None) -> re.Match | None:
        """The first match at or after ``at``, reading on until found, end of file or ``limit`` bytes."""
        while True:
            found = pattern.search(self.data, at)
            if found or (limit is not None and len(self.data) > limit) or not self.more():
                return found


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


def _parse_item(chunk: bytes, namespaces: dict[str, str]) -> ET.Element:
    declared = "".join(f" xmlns:{p}={quoteattr(u)}" if p else f" xmlns={quoteattr(u)}" for p, u in namespaces.items())
    root = ET.fromstring(b"<" + _WRAPPER + declared.encode("utf-8") + b">" + chunk + b"</" + _WRAPPER + b">")
    return root[0]


def _text(raw: bytes) -> str:
    return raw[:500].decode("utf-8", "replace")


def frame_xml(stream: BinaryIO, item_tags: tuple[str, ...] = ("item", "entry")) -> Frame:
    """One :class:`RawUnit` per item (namespaces stripped from its field names), one
    :class:`UnitError` per malformed item; see the module docstring."""
    names = b"|".join(re.escape(t.encode()) for t in item_tags)
    start = rb"<(?:[A-Za-z_][\w.-]*:)?(?:" + names + rb")(?=[\s/>])"
    outside = re.compile(rb"(" + start + rb")" + _SPECIAL + rb"|(<!ENTITY)")
    inside = re.compile(rb"(</(?:[A-Za-z_][\w.-]*:)?(?:" + names + rb")\s*>)|(" + start + rb")" + _SPECIAL)
    skeleton = ET.XMLPullParser(events=("start-ns",))
    namespaces: dict[str, str] = {}
    buf, items, fed_line = _Buffer(_utf8_chunks(stream)), 0, 1

    def feed_skeleton(n: int) -> None:
        nonlocal fed_line
        fed_line = buf.line
        skeleton.feed(buf.take(n))
        for _, (prefix, uri) in skeleton.read_events():
            namespaces[prefix] = uri

    try:
        while True:
            found = buf.search(outside, limit=CHUNK_BYTES)
            if found is None:  # skeleton up to here; a tag cut by the chunk boundary waits for the rest
                held = buf.data.rfind(b"<")
                keep = held if not buf.eof and held >= 0 and b">" not in buf.data[held:] else len(buf.data)
                feed_skeleton(keep)
                if buf.eof and not buf.data:
                    fed_line = max(1, buf.line - 1)
                    skeleton.close()  # the skeleton must close the root element: not truncated
                    break
                if not keep:
                    buf.more()
                continue
            if found.group(4):
                buf.take(found.start())  # the line of the declaration
                raise FeedError(Reason.MALFORMED_XML, "entity declarations are refused in feeds")
            if found.group(2) or found.group(3):  # a comment or CDATA section outside the items
                feed_skeleton(_section_end(buf, found))
                continue
            feed_skeleton(found.start())
            items += 1
            if (yield from _read_item(buf, inside, namespaces)):
                return
    except ET.ParseError as exc:
        yield UnitError(fed_line, None, Reason.MALFORMED_XML,
                        f"XML is not well-formed outside the items: {exc} (the rest of the file is skipped)",
                        _text(buf.data), fatal=True)
        return
    except FeedError as exc:
        yield UnitError(buf.line, None, exc.reason, f"{exc} (the rest of the file is skipped)", _text(buf.data),
                        fatal=True)
        return
    if not items:  # well-formed, but nothing a product could come from: say so
        yield UnitError(None, None, Reason.MALFORMED_XML,
                        f"no <{'> or <'.join(item_tags)}> element in the feed: an empty feed, or not "
                        "RSS 2.0 / Atom", fatal=True)


def _section_end(buf: _Buffer, opener: re.Match) -> int:
    """Where the comment or CDATA section ``opener`` starts ends in ``buf`` (after its closing
    ``-->`` / ``]]>``), or the buffer's end when it does not close within the item size limit."""
    closing = buf.search(_CLOSES[opener.group(0)], opener.end(), limit=framing.MAX_LINE_BYTES)
    return closing.end() if closing else len(buf.data)


def _read_item(buf: _Buffer, inside: re.Pattern, namespaces: dict[str, str]) -> Generator[Unit, None, bool]:
    """The item at the start of ``buf``: a unit, or an error after which reading resumes at the
    next item. Returns True when the file ended inside the item."""
    line = buf.line
    buf.search(_TAG_END, limit=framing.MAX_LINE_BYTES)  # the whole start tag in the buffer
    tag = re.match(rb"<[^<>]*>", buf.data)
    end, at = (tag.end(), None) if tag and tag.group(0).endswith(b"/>") else (None, tag.end() if tag else 1)
    while end is None:
        found = buf.search(inside, at, limit=framing.MAX_LINE_BYTES)
        if found is None and len(buf.data) > framing.MAX_LINE_BYTES:
            yield UnitError(line, None, Reason.LINE_TOO_LONG, f"item is longer than the limit of "
                            f"{framing.MAX_LINE_BYTES} bytes (skipped up to the next item)", _text(buf.data))
            return _skip_item(buf, inside)
        if found is None:
            yield UnitError(line, None, Reason.MALFORMED_XML, "the feed ends inside this item (truncated?)",
                            _text(buf.take(len(buf.data))), fatal=True)
            return True
        if found.group(2):
            yield UnitError(line, None, Reason.MALFORMED_XML, "item is not closed before the next item starts "
                            "(the item is skipped; the feed goes on)", _text(buf.take(found.start())))
            return False
        if found.group(1):
            end = found.end()
        else:  # a comment or CDATA section: its content is not markup
            at = _section_end(buf, found)
    raw = buf.take(end)
    try:
        elem = _parse_item(raw, namespaces)
    except ET.ParseError as exc:
        yield UnitError(line, None, Reason.MALFORMED_XML, f"item is not well-formed XML: {exc} (the item is "
                        "skipped; the feed goes on)", _text(raw))
        return False
    yield RawUnit(line, None, _item_payload(elem), ET.tostring(elem, encoding="unicode"))
    return False


def _skip_item(buf: _Buffer, inside: re.Pattern) -> bool:
    """Drop an over-long item up to its end tag or the next item, holding little in memory;
    True when the file ends first."""
    buf.take(1)  # past the item's own start tag
    while True:
        found = buf.search(inside, limit=CHUNK_BYTES)
        if found and found.group(1):
            buf.take(found.end())
            return False
        if found and found.group(2):
            buf.take(found.start())
            return False
        if found is None and buf.eof:
            buf.take(len(buf.data))
            return True
        buf.take(found.end() if found else max(0, len(buf.data) - 256))  # keep a tag cut at the boundary
