"""LoadImages: image records -> (record with image columns, model-ready array), or dead letter.

Records are batched (``BatchElements``); one DoFn fetches each batch's URIs with bounded
concurrency on a thread pool (the :class:`~pipeline.images.fetch.Fetcher`, one pooled
``requests.Session``, is created in ``setup()`` and closed in ``teardown()``), then decodes
the batch's distinct payloads with :func:`~pipeline.images.decode.decode_and_preprocess` on a
second, small pool. Identical bytes (same sha256) under different URIs are decoded once per
bundle. Failures are tagged with the stage that failed (``fetch`` or ``decode``).

Every failure leaves on the ``dead_letter`` output with a reason code and is counted with
Beam metrics (namespace ``fashion_enrich.images``).

Incremental runs (:mod:`pipeline.reuse`) hand in ``(record, stored record)`` pairs as well: the
fetch is then conditional on the stored row's validator (``If-None-Match`` /
``If-Modified-Since``, or size + mtime for files). An unchanged image leaves on the ``reused``
output as its stored row (:func:`~pipeline.stored.reuse_stored`), neither read nor decoded; a
changed one is decoded from the bytes that same request brought.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam

from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.images.decode import Decoded, ImageError, decode_and_preprocess
from pipeline.images.features import dominant_colours, perceptual_hash
from pipeline.images.fetch import Fetched, Fetcher, FetchError, is_remote
from pipeline.memory import tune_malloc
from pipeline.pickled import replaced
from pipeline.records import DeadLetter, ImageRecord, Reason, Stage
from pipeline.stored import reuse_stored

METRICS_NAMESPACE = "fashion_enrich.images"
DEAD_LETTER = "dead_letter"
REUSED = "reused"
_BUNDLE_MEMO = 256  # distinct images remembered per bundle, by content hash (bounds memory)


def image_dead_letter(record: ImageRecord, stage: Stage, reason: Reason, message: str, *,
                      status: int | None = None, attempts: int | None = None) -> DeadLetter:
    return DeadLetter.make(retailer=record.retailer, stage=stage, reason=reason, message=message,
                           source_file=record.source_file, source_line=record.source_line,
                           source_offset=record.source_offset, product_id=record.product_id,
                           image_uri=record.image_uri, http_status=status, attempts=attempts)


def with_features(decoded: Decoded) -> Decoded:
    """The decoded image with its perceptual hash and dominant colours (on the model-size array)."""
    colour, no_skin = dominant_colours(decoded.array)
    return dataclasses.replace(decoded, phash=perceptual_hash(decoded.array), colour=colour, colour_no_skin=no_skin)


def reused_row(record: ImageRecord, stored: ImageRecord, check: Fetched) -> ImageRecord:
    """The row of an unchanged image: its stored row with today's record fields and the statistics
    of this run's validator ``check`` (:func:`~pipeline.stored.reuse_stored`)."""
    return reuse_stored(record, stored, http_status=check.status, fetch_attempts=check.attempts,
                        fetch_ms=round(check.millis, 3), cache_hit=False)


def _done(value) -> Future:
    """A future that already holds ``value``."""
    future: Future = Future()
    future.set_result(value)
    return future


class _LoadFn(beam.DoFn):
    """Fetches a batch on a thread pool; each fetched payload goes straight to a small decode
    pool, so decoding overlaps the remaining downloads. Pillow releases the GIL while decoding
    and resizing, so decode threads use several cores even inside one SDK worker process.
    """

    def __init__(self, fetch: FetchConfig, decode: DecodeConfig, decode_threads: int):
        self._fetch_cfg, self._decode_cfg, self._decode_threads = fetch, decode, decode_threads
        self._fetcher: Fetcher | None = None
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._decode_pool: ThreadPoolExecutor | None = None
        self._memo: OrderedDict[str, Future] = OrderedDict()
        self._lock: threading.Lock | None = None  # created in setup(): nothing unpicklable before
        self._reused = 0

    def setup(self):
        tune_malloc()  # decoded images are large short-lived buffers: keep RSS flat (pipeline/memory.py)
        self._lock = threading.Lock()
        self._fetcher = Fetcher(self._fetch_cfg)
        self._fetch_pool = ThreadPoolExecutor(self._fetch_cfg.concurrency, thread_name_prefix="fetch")
        self._decode_pool = ThreadPoolExecutor(self._decode_threads, thread_name_prefix="decode")

    def teardown(self):
        for pool in (self._fetch_pool, self._decode_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._fetcher is not None:
            self._fetcher.close()

    def start_bundle(self):
        self._memo = OrderedDict()  # identical bytes are decoded once per bundle

    def _decode(self, data: bytes) -> Decoded | ImageError:
        try:
            return with_features(decode_and_preprocess(data, self._decode_cfg))
        except ImageError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one odd image must not fail the whole job
            return ImageError(Reason.DECODE_ERROR, f"{type(exc).__name__}: {exc}"[:500])

    def _fetch_then_decode(self, record: ImageRecord, validator: str | None, inline: bool = False,
                           fetched: Fetched | None = None):
        """(fetch result or error, sha256, decoded or a future of it) for one record; with a stored
        row's ``validator``, (not-modified result, None, None) when it still holds. ``fetched``:
        the bytes already read (a changed local file whose validator was checked inline).

        Remote URIs run on a fetch thread and hand decoding to the decode pool, so it overlaps the
        other downloads. Local files (``inline``) are read and decoded on a decode thread directly:
        a thread hand-off costs more than reading a small file.
        """
        fetched = fetched if fetched is not None else self._fetcher.fetch_or_error(record.image_uri, validator)
        if isinstance(fetched, FetchError) or fetched.not_modified:
            return fetched, None, None
        digest = hashlib.sha256(fetched.data).hexdigest()
        with self._lock:
            known = self._memo.get(digest)
            if known is None and not inline:
                known = self._memo[digest] = self._decode_pool.submit(self._decode, fetched.data)
                return fetched, digest, known
        if known is not None:
            with self._lock:
                self._reused += 1
            return fetched, digest, known
        decoded = self._decode(fetched.data)
        with self._lock:
            self._memo.setdefault(digest, _done(decoded))
        return fetched, digest, decoded

    def _submit(self, record: ImageRecord, stored: ImageRecord | None) -> Future:
        validator = stored.image_validator if stored is not None else None
        if is_remote(record.image_uri):
            return self._fetch_pool.submit(self._fetch_then_decode, record, validator)
        if validator is not None and self._decode_threads > 1:  # a local file that may be reused: its stat
            fetched = self._fetcher.fetch_or_error(record.image_uri, validator)  # costs less than a thread hand-off
            if isinstance(fetched, FetchError) or fetched.not_modified:
                return _done((fetched, None, None))
            return self._decode_pool.submit(self._fetch_then_decode, record, validator, True, fetched)  # changed
        if self._decode_threads == 1:  # one decode thread: no hand-off, decode right here
            return _done(self._fetch_then_decode(record, validator, True))
        return self._decode_pool.submit(self._fetch_then_decode, record, validator, True)

    def process(self, batch: list):
        """``batch``: ImageRecords, or (record, stored record or None) pairs (incremental runs)."""
        counts: Counter[str] = Counter()
        fetched_bytes = 0
        self._reused = 0
        pairs = [(e, None) if isinstance(e, ImageRecord) else e for e in batch]
        for (record, stored), pending in zip(pairs, [self._submit(r, s) for r, s in pairs]):
            result, digest, decoded = pending.result()
            if isinstance(result, FetchError):
                counts[f"dead_letter_{result.reason.value}"] += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, image_dead_letter(
                    record, Stage.FETCH, result.reason, str(result), status=result.status,
                    attempts=result.attempts or None))
                continue
            if result.not_modified:
                counts["reused"] += 1
                yield beam.pvalue.TaggedOutput(REUSED, reused_row(record, stored, result))
                continue
            counts["fetched"] += 1
            counts["cache_hits"] += result.cache_hit
            fetched_bytes += len(result.data)
            if isinstance(decoded, Future):
                decoded = decoded.result()
            fields = dict(http_status=result.status, fetch_attempts=result.attempts, fetch_ms=round(result.millis, 3),
                          cache_hit=result.cache_hit, image_bytes=len(result.data), image_sha256=digest,
                          image_validator=result.validator)
            if isinstance(decoded, ImageError):
                counts[f"dead_letter_{decoded.reason.value}"] += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, image_dead_letter(
                    replaced(record, **fields), Stage.DECODE, decoded.reason, str(decoded),
                    status=result.status, attempts=result.attempts))
                continue
            counts["decoded"] += 1
            yield replaced(record, image_width=decoded.width, image_height=decoded.height,
                           image_format=decoded.format, image_phash=decoded.phash,
                           dominant_colour=decoded.colour, dominant_colour_no_skin=decoded.colour_no_skin,
                           **fields), decoded.array
        counts["decode_reused"] += self._reused
        counts["fetched_bytes"] += fetched_bytes
        for name, n in counts.items():  # one metric update per batch, not per image
            if n:
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, name).inc(n)
        with self._lock:
            while len(self._memo) > _BUNDLE_MEMO:
                self._memo.popitem(last=False)


class LoadImages(beam.PTransform):
    """Fetch + decode. Returns ``{"images": (ImageRecord, uint8 array), "dead_letter": DeadLetter,
    "reused": ImageRecord}`` (``reused``: unchanged images of (record, stored record) inputs)."""

    def __init__(self, fetch: FetchConfig, decode: DecodeConfig, *, decode_threads: int = 2,
                 batch_size: int | None = None):
        super().__init__()
        if not 1 <= decode_threads <= 64:
            raise ValueError("decode_threads must be between 1 and 64")
        self._fetch, self._decode, self._decode_threads = fetch, decode, decode_threads
        self._batch = batch_size or 4 * fetch.concurrency

    def expand(self, records):
        loaded = (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=self._batch, max_batch_size=self._batch)
            | "FetchDecode" >> beam.ParDo(_LoadFn(self._fetch, self._decode, self._decode_threads)).with_outputs(
                DEAD_LETTER, REUSED, main="images")
        )
        return {"images": loaded.images, "dead_letter": loaded[DEAD_LETTER], "reused": loaded[REUSED]}
