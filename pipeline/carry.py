"""CarryForward: an incremental shard pass's unchanged products, without the per-image stages.

A sharded incremental run (:mod:`pipeline.sharded`) has today's records and the previous run's
image rows spilled by product bucket (:mod:`pipeline.shardfiles`). Most products of a nightly
dump are unchanged, so before the per-image stages of a shard pass (MapTaxonomy,
DeduplicateImages, MatchPrevious, LoadImages: :func:`~pipeline.build.build_pipeline`) see
them, one DoFn call per bucket reads both and takes each product as a whole. A product is **carried** when

* each of its records has its own image URI (nothing to de-duplicate),
* the previous run stored exactly one row per URI, each reusable (a validator, and made with
  this run's taxonomy version, image settings and models: :func:`~pipeline.reuse.reusable`),
* and every image passes its validator check (a stat of local files, a conditional request
  otherwise: the same :class:`~pipeline.images.fetch.Fetcher` call as LoadImages makes).

Its image rows are then made exactly as LoadImages makes a reused row (today's record, mapped
by :func:`~pipeline.taxonomy.apply_mapping`, over the stored row: :func:`reused_row`) and its
product row with the run's own :class:`~pipeline.aggregate.ProductCombineFn`, so they equal what
the per-image stages would write; only the shuffles and joins are skipped. From there on, the
carried rows join the others: the product rows and near-duplicate members are handed on with
the pass's own, the image rows written into the same files. Every other product
(new, changed, duplicated, partly dead-lettered last time, or an image that fails its check) and
every vanished one goes on, records and previous rows, through the per-image stages. A changed
remote image is thereby requested twice (the check, then LoadImages): a small share on a
nightly run, and it keeps one code path for everything that is not carried.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.duplicates import slim_member
from pipeline.images.fetch import Fetched, Fetcher, is_remote
from pipeline.images.transforms import reused_row
from pipeline.manifest import image_events, previous_events
from pipeline.reuse import reusable
from pipeline.shardfiles import files_by_bucket, read_file
from pipeline.sinks import file_of
from pipeline.taxonomy import apply_mapping
from schemas.tables import IMAGES
from schemas.taxonomy import load_taxonomy

METRICS_NAMESPACE = "fashion_enrich.carry"
PREVIOUS, TABLES, COUNTS, PRODUCTS, MEMBERS = OUTPUTS = "previous", "tables", "counts", "products", "members"


def may_carry(records: list, stored: list, key: str) -> bool:
    """Whether a product may be carried, before its images are checked: its ``records`` have
    distinct image URIs, and ``stored`` (its previous rows) holds one reusable row for each."""
    uris = {r.image_uri for r in records}
    return (len(uris) == len(records) == len(stored) and uris == {s.image_uri for s in stored}
            and all(reusable(s, key) for s in stored))


class _CarryFn(beam.DoFn):
    """bucket -> records and previous rows to pass on (main and ``previous``); for the carried
    products, their image rows as pyarrow tables by staged file (``tables``), the event counts
    of those rows and of the previous rows read (``counts``), their product rows (``products``)
    and near-duplicate members (``members``)."""

    def __init__(self, *, mappings: dict, taxonomy_path: str | None, key: str, fetch, fn, run_date: str,
                 shards_per_partition: int):
        self._mappings, self._taxonomy_path, self._key = mappings, taxonomy_path, key
        self._fetch_cfg, self._fn = fetch, fn
        self._run_date, self._shards = run_date, shards_per_partition
        self._taxonomy = self._fetcher = self._pool = None

    def setup(self):
        self._taxonomy = load_taxonomy(self._taxonomy_path)
        self._fetcher = Fetcher(self._fetch_cfg)
        self._pool = ThreadPoolExecutor(self._fetch_cfg.concurrency, thread_name_prefix="carry")
        self._fn.setup()

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._fetcher is not None:
            self._fetcher.close()

    def _unchanged(self, image_uri: str, validator: str) -> Fetched | None:
        """The check's result when the image is unchanged, else None: a changed file is not read,
        and a changed remote image's body (a 200 carries one) is dropped here, not held."""
        checked = self._fetcher.fetch_or_error(image_uri, validator, body=False)
        return checked if isinstance(checked, Fetched) and checked.not_modified else None

    def _check(self, image_uri: str, validator: str):
        """:meth:`_unchanged`, for remote images on the pool (bounded concurrency)."""
        if is_remote(image_uri):
            return self._pool.submit(self._unchanged, image_uri, validator)
        return self._unchanged(image_uri, validator)

    @staticmethod
    def _read(paths: list[str], previous: bool) -> dict:
        """The elements spilled into ``paths``, by product."""
        found = defaultdict(list)
        for path in paths:
            for element in read_file(path):
                stored = element[1] if previous else element
                found[stored.retailer, stored.product_id].append(element)
        return found

    def process(self, element: tuple[int, list[str], list[str]]):
        """``element``: (bucket, its records' work files, its previous rows' work files)."""
        _, record_files, previous_files = element
        records, previous = self._read(record_files, False), self._read(previous_files, True)
        candidates = []  # (records, {uri: (run_date, stored)}, a check per record)
        passed_on = 0
        for product, found in records.items():
            rows = previous.pop(product, [])
            if rows and may_carry(found, [s for _, s in rows], self._key):
                by_uri = {s.image_uri: (run_date, s) for run_date, s in rows}
                candidates.append((found, by_uri, [self._check(r.image_uri, by_uri[r.image_uri][1].image_validator)
                                                   for r in found]))
                continue
            passed_on += 1
            yield from self._pass_on(found, rows)
        for rows in previous.values():  # vanished from the dump: MatchPrevious counts them
            yield from self._pass_on([], rows)
        rows_by_file, counts = defaultdict(list), Counter()
        carried = carried_images = 0
        for found, by_uri, checks in candidates:
            checks = [c.result() if isinstance(c, Future) else c for c in checks]
            if not all(checks):
                passed_on += 1
                yield from self._pass_on(found, list(by_uri.values()))
                continue
            images = self._carried(found, by_uri, checks, counts)
            for image in images:
                rows_by_file[file_of(image, self._run_date, self._shards)].append(image)
                for member in slim_member(image):
                    yield beam.pvalue.TaggedOutput(MEMBERS, member)
            yield beam.pvalue.TaggedOutput(PRODUCTS, self._fn.product_of(images))
            carried += 1
            carried_images += len(images)
        for file, rows in rows_by_file.items():
            yield beam.pvalue.TaggedOutput(TABLES, (file, IMAGES.to_table(rows)))
        if counts:
            yield beam.pvalue.TaggedOutput(COUNTS, list(counts.items()))
        for name, n in (("carried_products", carried), ("carried_images", carried_images),
                        ("passed_on_products", passed_on)):
            if n:  # one metric update per bucket
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, name).inc(n)

    def _carried(self, found: list, by_uri: dict, checks: list, counts: Counter) -> list:
        """The image rows of a carried product, in dump order, counted into ``counts``."""
        mapping = self._mappings[found[0].retailer]
        images = []
        for record, check in sorted(zip(found, checks), key=lambda pair: pair[0].order_key()):
            run_date, stored = by_uri[record.image_uri]
            image = reused_row(apply_mapping(record, mapping, self._taxonomy), stored, check)
            images.append(image)
            counts.update(image_events(image))
            counts.update(previous_events((stored.retailer, run_date)))
        return images

    @staticmethod
    def _pass_on(records: list, rows: list):
        yield from records
        for row in rows:
            yield beam.pvalue.TaggedOutput(PREVIOUS, row)


class CarryForward(beam.PTransform):
    """pbegin -> ``{"records": ImageRecords to load, "previous": (run_date, stored ImageRecord) to
    match with them, "tables": ((partition, shard), pyarrow Table) of carried image rows for
    :class:`~pipeline.sinks.WriteTable`, "counts": lists of (event key, count) for
    :class:`~pipeline.manifest.CountEvents`, "products": carried ProductRecords (before
    near-duplicate groups), "members": their (product key, hash)}``, over the ``buckets`` spilled
    under the run's work folder ``work`` (``records/``, ``previous/``)."""

    def __init__(self, work: str, buckets: tuple[int, ...], *, mappings: dict, taxonomy_path: str | None, key: str,
                 fetch, fn, run_date: str, shards_per_partition: int):
        """``key``: the run's :func:`~pipeline.reuse.enriched_with`; ``fn``: its
        :class:`~pipeline.aggregate.ProductCombineFn`."""
        super().__init__()
        self._buckets = tuple(buckets)
        self._inputs = {name: FileSystems.join(work, name) for name in ("records", "previous")}
        self._fn = _CarryFn(mappings=mappings, taxonomy_path=taxonomy_path, key=key, fetch=fetch, fn=fn,
                            run_date=run_date, shards_per_partition=shards_per_partition)

    def expand(self, pbegin):
        # The work files are listed once, here (the split pass wrote them): one glob per bucket cost more.
        records, previous = (files_by_bucket(self._inputs[name], self._buckets) for name in ("records", "previous"))
        buckets = [(b, records[b], previous[b]) for b in self._buckets]
        out = (pbegin
               | "Buckets" >> beam.Create(buckets, reshuffle=len(buckets) > 1)
               | "Carry" >> beam.ParDo(self._fn).with_outputs(*OUTPUTS, main="records"))
        return {"records": out.records, **{name: out[name] for name in OUTPUTS}}
