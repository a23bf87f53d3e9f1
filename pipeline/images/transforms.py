"""LoadImages: image records -> (record with image columns, model-ready array), or dead letter.

Two DoFns behind one PTransform:

* ``Fetch`` takes batches (``BatchElements``) and fetches each batch's URIs with bounded
  concurrency on a thread pool; the :class:`~pipeline.images.fetch.Fetcher` (one pooled
  ``requests.Session``) is created in ``setup()`` and closed in ``teardown()``.
* ``Decode`` runs :func:`~pipeline.images.decode.decode_and_preprocess`; identical bytes
  (same sha256) under different URIs are decoded once per bundle.

Every failure leaves on the ``dead_letter`` output with a reason code and is counted with
Beam metrics (namespace ``fashion_enrich.images``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam

from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.images.decode import Decoded, ImageError, decode_and_preprocess
from pipeline.images.fetch import Fetched, Fetcher, FetchError
from pipeline.records import DeadLetter, ImageRecord, Reason, Stage

METRICS_NAMESPACE = "fashion_enrich.images"
DEAD_LETTER = "dead_letter"
_BUNDLE_MEMO = 256  # decoded images remembered per bundle, by content hash


def image_dead_letter(record: ImageRecord, stage: Stage, reason: Reason, message: str, *,
                      status: int | None = None, attempts: int | None = None) -> DeadLetter:
    return DeadLetter.make(retailer=record.retailer, stage=stage, reason=reason, message=message,
                           source_file=record.source_file, source_line=record.source_line,
                           source_offset=record.source_offset, product_id=record.product_id,
                           image_uri=record.image_uri, http_status=status, attempts=attempts)


class _FetchFn(beam.DoFn):
    def __init__(self, config: FetchConfig):
        self._config = config
        self._fetcher: Fetcher | None = None
        self._pool: ThreadPoolExecutor | None = None

    def setup(self):
        self._fetcher = Fetcher(self._config)
        self._pool = ThreadPoolExecutor(max_workers=self._config.concurrency, thread_name_prefix="fetch")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._fetcher is not None:
            self._fetcher.close()

    def _fetch(self, record: ImageRecord) -> Fetched | FetchError:
        try:
            return self._fetcher.fetch(record.image_uri)
        except FetchError as exc:
            return exc

    def process(self, batch: list[ImageRecord]):
        counter = beam.metrics.Metrics.counter
        for record, result in zip(batch, self._pool.map(self._fetch, batch)):
            if isinstance(result, FetchError):
                counter(METRICS_NAMESPACE, f"dead_letter_{result.reason.value}").inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, image_dead_letter(
                    record, Stage.FETCH, result.reason, str(result), status=result.status,
                    attempts=result.attempts or None))
                continue
            counter(METRICS_NAMESPACE, "fetched").inc()
            counter(METRICS_NAMESPACE, "fetched_bytes").inc(len(result.data))
            if result.cache_hit:
                counter(METRICS_NAMESPACE, "cache_hits").inc()
            beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "fetch_ms").update(int(result.millis))
            yield dataclasses.replace(record, http_status=result.status, fetch_attempts=result.attempts,
                                      fetch_ms=round(result.millis, 3), cache_hit=result.cache_hit,
                                      image_bytes=len(result.data)), result.data


class _DecodeFn(beam.DoFn):
    def __init__(self, config: DecodeConfig):
        self._config = config
        self._memo: OrderedDict[str, Decoded | ImageError] = OrderedDict()

    def start_bundle(self):
        self._memo = OrderedDict()

    def _decode(self, digest: str, data: bytes) -> Decoded | ImageError:
        if digest in self._memo:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "decode_reused").inc()
            self._memo.move_to_end(digest)
            return self._memo[digest]
        try:
            result: Decoded | ImageError = decode_and_preprocess(data, self._config)
        except ImageError as exc:
            result = exc
        self._memo[digest] = result
        if len(self._memo) > _BUNDLE_MEMO:
            self._memo.popitem(last=False)
        return result

    def process(self, element):
        record, data = element
        digest = hashlib.sha256(data).hexdigest()
        result = self._decode(digest, data)
        if isinstance(result, ImageError):
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"dead_letter_{result.reason.value}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, image_dead_letter(
                record, Stage.DECODE, result.reason, str(result), status=record.http_status,
                attempts=record.fetch_attempts))
            return
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "decoded").inc()
        yield dataclasses.replace(record, image_width=result.width, image_height=result.height,
                                  image_format=result.format, image_sha256=digest), result.array


class LoadImages(beam.PTransform):
    """Fetch + decode. Returns ``{"images": (ImageRecord, uint8 array), "dead_letter": DeadLetter}``."""

    def __init__(self, fetch: FetchConfig, decode: DecodeConfig, *, max_batch_size: int | None = None):
        super().__init__()
        self._fetch, self._decode = fetch, decode
        self._max_batch = max_batch_size or max(1, 2 * fetch.concurrency)

    def expand(self, records):
        fetched = (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
            | "Fetch" >> beam.ParDo(_FetchFn(self._fetch)).with_outputs(DEAD_LETTER, main="fetched")
        )
        decoded = fetched.fetched | "Decode" >> beam.ParDo(_DecodeFn(self._decode)).with_outputs(
            DEAD_LETTER, main="images")
        dead = (fetched[DEAD_LETTER], decoded[DEAD_LETTER]) | "ImageDeadLetters" >> beam.Flatten()
        return {"images": decoded.images, "dead_letter": dead}
