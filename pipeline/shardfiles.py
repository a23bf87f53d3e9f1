"""Work files of a sharded run: elements spilled to disk between its Beam passes, by product hash.

A sharded run (:mod:`pipeline.sharded`) hands elements from one Beam pipeline to the next through
files under its staging folder, so that no pipeline holds more than one shard's records.
``WriteBuckets`` streams each element, pickled, into the file of its bucket (``BUCKETS`` fine
buckets by a hash of ``retailer/product_id``, so everything about one product lands in one
bucket); each bundle writes its own files, so nothing is grouped or buffered on the way.
``ReadBuckets`` reads back the buckets of one shard (``bucket % shards == shard``). All file
access goes through Beam ``FileSystems`` (local folders and ``gs://`` alike).
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections.abc import Callable, Iterable

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


def shard_buckets(shard: int, shards: int) -> tuple[int, ...]:
    """The buckets one shard of ``shards`` reads."""
    if not 0 <= shard < shards <= BUCKETS:
        raise ValueError(f"shard {shard} of {shards}: need 0 <= shard < shards <= {BUCKETS}")
    return tuple(b for b in range(BUCKETS) if b % shards == shard)


class BucketWriter:
    """Pickles elements into ``folder/bucket=B/<name>.pkl``, one open file per bucket written to
    (``name``: unique per writer, e.g. per bundle, so writers never share a file)."""

    def __init__(self, folder: str, name: str | None = None):
        self._folder, self._name = folder, name or uuid.uuid4().hex
        self._files: dict[int, object] = {}
        self.written = 0

    def write(self, bucket: int, element) -> None:
        fh = self._files.get(bucket)
        if fh is None:
            path = FileSystems.join(self._folder, f"bucket={bucket:03d}", f"{self._name}.pkl")
            fh = self._files[bucket] = FileSystems.create(path)
        pickle.dump(element, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.written += 1

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}


class _WriteBucketsFn(beam.DoFn):
    """Each element into the work file of its bucket; one writer per bundle."""

    def __init__(self, folder: str, key: Callable[[object], str]):
        self._folder, self._key = folder, key
        self._writer: BucketWriter | None = None

    def start_bundle(self):
        self._writer = BucketWriter(self._folder)

    def process(self, element):
        self._writer.write(bucket_of(self._key(element)), element)

    def finish_bundle(self):
        if self._writer.written:  # one metric update per bundle, not per element
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "spilled").inc(self._writer.written)
        self._writer.close()


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
