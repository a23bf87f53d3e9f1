"""Shared machinery for retailer sources: the ReadDump PTransform and record building (which
image URIs a record may carry: :mod:`pipeline.sources.image_uris`).

``ReadDump`` matches a file pattern through Beam file IO (local paths, ``gs://``, globs,
``.gz``), opens each file and hands its stream to a :class:`Decoder`: a framer (JSON lines,
CSV rows, XML items) plus the retailer's parser from one unit to image records. Every unit
ends as image records or a dead-letter row; per-file statistics go to a third output so the
run manifest can account for every line.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from pipeline.records import DeadLetter, FileStats, ImageRecord, Reason, Stage
from pipeline.sources.framing import Frame, PeekStream, RawUnit, UnitError
from pipeline.sources.image_uris import ForbiddenUri, dump_folder, resolve_image_uri

METRICS_NAMESPACE = "fashion_enrich.sources"
DEAD_LETTER = "dead_letter"
FILE_STATS = "file_stats"
class RecordError(ValueError):
    """A unit that cannot become image records (the whole unit goes to dead-letter)."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class UnitContext:
    """Where a unit came from; builds image records and dead letters stamped with it."""

    retailer: str
    source_file: str
    dump_dir: str
    line: int
    offset: int | None
    raw: str = ""
    extra_roots: tuple[str, ...] = ()

    def dead_letter(self, reason: Reason, message: str, **kw) -> DeadLetter:
        return DeadLetter.make(retailer=self.retailer, stage=Stage.READ, reason=reason, message=message,
                               source_file=self.source_file, source_line=self.line,
                               source_offset=self.offset, raw=self.raw, **kw)

    def image(self, *, product_id: str, position: int, uri: str, schemeless_is_https: bool = False,
              **fields) -> ImageRecord | DeadLetter:
        try:
            resolved = resolve_image_uri(uri, self.dump_dir, schemeless_is_https=schemeless_is_https,
                                         extra_roots=self.extra_roots)
        except ForbiddenUri as exc:
            return self.dead_letter(Reason.FORBIDDEN_URI, str(exc), product_id=product_id, image_uri=uri)
        return ImageRecord(retailer=self.retailer, product_id=product_id, image_position=position,
                           image_uri=resolved, source_file=self.source_file, source_line=self.line,
                           source_offset=self.offset, **fields)


class Decoder:
    """A dump format: how to frame a file, and how to turn one unit into image records."""

    def frame(self, stream: PeekStream, path: str) -> Frame:
        raise NotImplementedError

    def parse(self, payload: dict, ctx: UnitContext) -> list[ImageRecord | DeadLetter]:
        raise NotImplementedError


def text(value) -> str | None:
    """A stripped string, or None for missing / blank / non-scalar values."""
    if value is None or isinstance(value, (dict, list)):
        return None
    out = str(value).strip()
    return out or None


def values(value) -> tuple[str, ...]:
    """A tuple of non-blank strings from a scalar or a list."""
    items = value if isinstance(value, list) else [value]
    return tuple(t for t in (text(v) for v in items) if t)


def require(payload: dict, key: str) -> str:
    value = text(payload.get(key))
    if value is None:
        raise RecordError(Reason.MISSING_FIELD, f"missing required field {key!r}")
    return value


def strip_compression(path: str) -> str:
    return path[:-3] if path.lower().endswith(".gz") else path


def _open_decompressed(readable: fileio.ReadableFile):
    """The file's bytes, gunzipped for .gz. Python's gzip (not Beam's CompressedFile) so that a
    truncated stream raises EOFError instead of ending quietly."""
    raw = readable.open(compression_type=CompressionTypes.UNCOMPRESSED)
    return gzip.GzipFile(fileobj=raw, mode="rb") if readable.metadata.path.lower().endswith(".gz") else raw


class _ReadDumpFn(beam.DoFn):
    def __init__(self, retailer: str, decoder: Decoder, extra_roots: tuple[str, ...]):
        self._retailer = retailer
        self._decoder = decoder
        self._roots = extra_roots

    def process(self, readable: fileio.ReadableFile) -> Iterable:
        path = readable.metadata.path
        stats = dict(units=0, blank=0, products=0, records=0, errors=0, aborted=False)
        counter = beam.metrics.Metrics.counter

        def error(ctx: UnitContext, reason: Reason, message: str):
            stats["errors"] += 1
            counter(METRICS_NAMESPACE, f"dead_letter_{reason.value}").inc()
            return beam.pvalue.TaggedOutput(DEAD_LETTER, ctx.dead_letter(reason, message))

        file_ctx = UnitContext(self._retailer, path, dump_folder(path), line=0, offset=None, extra_roots=self._roots)
        for unit in self._frames(readable, path, stats):
            if isinstance(unit, tuple):  # the file itself failed: one dead letter for it
                reason, message = unit
                stats["aborted"] |= reason is not Reason.EMPTY_FILE
                yield error(file_ctx, reason, message)
            else:
                yield from self._unit(unit, path, stats)
        counter(METRICS_NAMESPACE, "files").inc()
        yield beam.pvalue.TaggedOutput(FILE_STATS, FileStats(retailer=self._retailer, source_file=path, **stats))

    def _frames(self, readable: fileio.ReadableFile, path: str, stats: dict) -> Iterable:
        """The file's units, then, if the file itself fails (empty, truncated, unreadable, or a
        fault the framer did not foresee), one (reason, message) pair, and nothing after it.

        Only opening and framing are guarded here: an exception raised downstream while a unit
        is being emitted (fused stages run inside ``yield``) is not this file's fault and is not
        caught."""
        def units():
            stream = PeekStream(_open_decompressed(readable))
            if not stream.first_char():
                yield Reason.EMPTY_FILE, "file is empty (no records)"
                return
            yield from self._decoder.frame(stream, path)

        frames = units()
        while True:
            try:
                unit = next(frames)
            except StopIteration:
                return
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                yield (Reason.TRUNCATED_FILE,
                       f"compressed file is truncated or corrupt after {stats['units']} units: {exc}")
                return
            except OSError as exc:
                yield Reason.UNREADABLE_FILE, f"cannot read file after {stats['units']} units: {exc}"
                return
            except Exception as exc:  # noqa: BLE001 - a framer fault ends this file, not the job
                yield (Reason.UNREADABLE_FILE, f"cannot read the rest of the file after {stats['units']} units: "
                                               f"{type(exc).__name__}: {exc}"[:500])
                return
            yield unit

    def _unit(self, unit: RawUnit | UnitError, path: str, stats: dict) -> Iterable:
        ctx = UnitContext(self._retailer, path, dump_folder(path), unit.line or 0, unit.offset, unit.raw,
                          self._roots)
        stats["units"] += 1
        if isinstance(unit, UnitError):
            stats["errors"] += 1
            stats["aborted"] |= unit.fatal
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, ctx.dead_letter(unit.reason, unit.message))
            return
        if unit.payload is None:
            stats["blank"] += 1
            return
        try:
            items = self._decoder.parse(unit.payload, ctx)
        except RecordError as exc:
            items = [ctx.dead_letter(exc.reason, str(exc))]
        except Exception as exc:  # noqa: BLE001 - one odd record must not fail the whole job
            items = [ctx.dead_letter(Reason.INVALID_RECORD, f"{type(exc).__name__}: {exc}"[:500])]
        records = [i for i in items if isinstance(i, ImageRecord)]
        if not items:
            items = [ctx.dead_letter(Reason.NO_IMAGES, "product has no images")]
        stats["products"] += bool(records)
        for item in items:
            if isinstance(item, ImageRecord):
                stats["records"] += 1
                yield item
            else:
                stats["errors"] += 1
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{item.reason}").inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)


class ReadDump(beam.PTransform):
    """Reads every file matching ``pattern`` with ``decoder``.

    Returns a tagged tuple: main output ``ImageRecord``; ``dead_letter``; ``file_stats``.
    """

    def __init__(self, *, retailer: str, pattern: str, decoder: Decoder, extra_roots: tuple[str, ...] = ()):
        super().__init__()
        self._retailer, self._pattern, self._decoder = retailer, pattern, decoder
        self._roots = tuple(extra_roots)

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "Open" >> fileio.ReadMatches()
            | "Decode" >> beam.ParDo(_ReadDumpFn(self._retailer, self._decoder, self._roots)).with_outputs(
                DEAD_LETTER, FILE_STATS, main="records")
        )
