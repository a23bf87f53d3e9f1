"""Which stretch of the graph one Beam pipeline builds (:class:`Part`), and the work files that
hand collections from one pass of a sharded run to the next.

One pipeline builds every stage of :func:`pipeline.build.build_pipeline`; a sharded run
(:mod:`pipeline.sharded`) builds the same function once per pass, each time with a ``Part``
naming its stages and the buckets of the products it handles. A collection one stage hands to
another stage of another pass is spilled (``WriteBuckets``: each element, pickled, into the file
of its bucket, ``BUCKETS`` fine buckets by a hash of ``retailer/product_id``, so everything about
one product lands in one bucket; nothing grouped or buffered on the way) and read back by the
pass that takes it (``ReadBuckets``: the buckets of one shard, ``bucket % shards == shard``).
What a pass wrote and counted is handed to the commit pass the same way. All file access
goes through Beam ``FileSystems`` (local folders and ``gs://`` alike).
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

BUCKETS = 128  # the most shards a run can have; a shard reads every bucket b with b % shards == shard
METRICS_NAMESPACE = "fashion_enrich.shards"


def bucket_of(product_key: str) -> int:
    """The bucket of ``"retailer/product_id"`` (stable across processes and runs)."""
    return zlib.crc32(product_key.encode("utf-8")) % BUCKETS


def product_key(retailer: str, product_id: str | None) -> str:
    """``"retailer/product_id"``: how products are named across passes (and near-duplicate groups)."""
    return f"{retailer}/{product_id or ''}"


def record_product(record) -> str:
    return product_key(record.retailer, record.product_id)


def stored_product(element) -> str:
    return record_product(element[1])


def first_key(element) -> str:
    return element[0]


def one_bucket(_) -> str:
    return ""


# The graph's stages, in order (:func:`pipeline.build.build_pipeline`), and the collections one
# hands to a later one: name -> (the stage that takes it, the product key of an element).
READ, SCORE, EDGES, GROUPS, FINISH, COMMIT = STAGES = ("read", "score", "edges", "groups", "finish", "commit")
HANDED = {"records": (SCORE, record_product), "previous": (SCORE, stored_product),
          "products": (FINISH, record_product), "members": (EDGES, first_key),
          "edges": (GROUPS, first_key), "groups": (FINISH, first_key),
          "written": (COMMIT, one_bucket), "counts": (COMMIT, one_bucket), "file_stats": (COMMIT, one_bucket)}


@dataclass(frozen=True)
class Part:
    """The stretch of a run's graph one Beam pipeline builds: every stage by default (one
    pipeline, nothing spilled); for a pass of a sharded run, its ``stages``, with the collections
    between them and the other passes' stages handed through the work files under ``work``."""

    stages: tuple[str, ...] = STAGES
    work: str | None = None  # the run's work folder; None: the whole run in one pipeline
    number: int = 0  # the pass's number: its staged files' shard numbers start at number * shards per partition
    buckets: tuple[int, ...] | None = None  # the products whose handed collections it reads (None: all)
    band: tuple[int, int] = (0, 1)  # EDGES: this part of the near-duplicate bands, of so many
    kept_groups: tuple[str, ...] | None = None  # GROUPS: the previous run's product files, not the edges
    previous_files: tuple[str, ...] | None = None  # READ: the previous rows' files, listed by the caller

    def has(self, stage: str) -> bool:
        return stage in self.stages

    def hand(self, p: beam.Pipeline, name: str, pcoll: beam.PCollection | None) -> beam.PCollection | None:
        """``pcoll`` on its way to the stage that takes it: as is in the same pipeline, spilled
        when that stage is another pass's (None returned), read back from the spill when ``pcoll``
        was made by another pass (None given)."""
        taker, key = HANDED[name]
        if self.work is None or (pcoll is not None and self.has(taker)):
            return pcoll
        folder = FileSystems.join(self.work, name)
        if pcoll is not None:
            _ = pcoll | f"Spill[{name}]" >> WriteBuckets(folder, key)
            return None
        return p | f"Read[{name}]" >> ReadBuckets(folder, self.buckets) if self.has(taker) else None


def shard_buckets(shard: int, shards: int) -> tuple[int, ...]:
    """The buckets one shard of ``shards`` reads."""
    if not 0 <= shard < shards <= BUCKETS:
        raise ValueError(f"shard {shard} of {shards}: need 0 <= shard < shards <= {BUCKETS}")
    return tuple(b for b in range(BUCKETS) if b % shards == shard)


class _WriteBucketsFn(beam.DoFn):
    """Each element, pickled, into ``folder/bucket=B/<bundle>.pkl``: one file per bucket and bundle
    (no two bundles share a file)."""

    def __init__(self, folder: str, key: Callable[[object], str]):
        self._folder, self._key = folder, key
        self._files: dict[int, object] = {}
        self._bundle, self._written = "", 0

    def start_bundle(self):
        self._files, self._bundle, self._written = {}, uuid.uuid4().hex, 0

    def process(self, element):
        bucket = bucket_of(self._key(element))
        fh = self._files.get(bucket)
        if fh is None:
            path = FileSystems.join(self._folder, f"bucket={bucket:03d}", f"{self._bundle}.pkl")
            fh = self._files[bucket] = FileSystems.create(path)
        pickle.dump(element, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._written += 1

    def finish_bundle(self):
        for fh in self._files.values():
            fh.close()
        if self._written:  # one metric update per bundle, not per element
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "spilled").inc(self._written)


class WriteBuckets(beam.PTransform):
    """Elements -> pickled work files under ``folder``, by ``bucket_of(key(element))``. Returns nothing
    to wait on: the next pass (another pipeline) reads the files after this one has finished."""

    def __init__(self, folder: str, key: Callable[[object], str]):
        super().__init__()
        self._folder, self._key = folder, key

    def expand(self, pcoll):
        return pcoll | "Spill" >> beam.ParDo(_WriteBucketsFn(self._folder, self._key))


def files_by_bucket(folder: str, buckets: Iterable[int]) -> dict[int, list[str]]:
    """The work files of each of these buckets (an empty list where nothing was spilled), listed
    with one ``FileSystems.match`` call."""
    buckets = tuple(buckets)
    patterns = [FileSystems.join(folder, f"bucket={b:03d}", "*.pkl") for b in buckets]
    return {b: sorted(m.path for m in result.metadata_list)
            for b, result in zip(buckets, FileSystems.match(patterns), strict=True)}


def bucket_files(folder: str, buckets: Iterable[int]) -> list[str]:
    """The work files of these buckets (none when nothing was spilled there)."""
    return sorted(path for paths in files_by_bucket(folder, buckets).values() for path in paths)


def read_file(path: str):
    """Every element pickled into one work file, in order."""
    with FileSystems.open(path) as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


class ReadBuckets(beam.PTransform):
    """pbegin -> the elements spilled into ``folder``'s buckets ``buckets`` (all of them by default).
    The files are listed when the graph is built (an earlier pass wrote them); the list is
    reshuffled, so the files are read in parallel by the runner's workers."""

    def __init__(self, folder: str, buckets: Iterable[int] | None = None):
        super().__init__()
        self._folder, self._buckets = folder, tuple(range(BUCKETS) if buckets is None else buckets)

    def expand(self, pbegin):
        files = bucket_files(self._folder, self._buckets)
        return (
            pbegin
            | "Files" >> beam.Create(files, reshuffle=len(files) > 1)
            | "Read" >> beam.FlatMap(read_file)
        )



def spilled_counts(work: str) -> Counter:
    """The event counts every pass so far has handed to the commit, summed."""
    found = Counter()
    for path in bucket_files(FileSystems.join(work, "counts"), range(BUCKETS)):
        for pairs in read_file(path):
            for key, n in pairs:
                found[tuple(key)] += n
    return found
