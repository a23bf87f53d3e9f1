"""Near-duplicate groups kept from the previous run when no image hash changed.

The near-duplicate groups (:mod:`pipeline.duplicates`) are a function of the catalog's members,
the ``(product key, perceptual hash)`` of every image row, and of the grouping's parameters
(``GROUPING_VERSION``). A sharded incremental run (:mod:`pipeline.sharded`) therefore skips the
band and groups passes, and reads the groups from the previous run's product rows instead, when

* every shard pass found today's members equal to the previous rows' members (:class:`MemberChanges`:
  a carried product's members are its stored rows'; a product passed on compares its new rows,
  a vanished one counts as changed),
* the previous rows are exactly the image files the previous run wrote: the output's
  ``manifest.json`` lists them, so the previous run's groups were made from those members and
  no other retailer's (:func:`previous_group_files`),
* and that run grouped with this ``GROUPING_VERSION``.

Otherwise the groups are computed as in a full run. A changed image with a new hash, a new
product with an image, a vanished one: any of them makes the run compute them.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import Counter

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.duplicates import slim_member
from pipeline.grouping import GROUPING_VERSION
from pipeline.reuse import latest_partition_files
from pipeline.shardfiles import product_key
from pipeline.stored import partition_of

_LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "fashion_enrich.carry"


class _MemberDelta(beam.CombineFn):
    """(member, +1 today / -1 previous) -> how many members differ between the two multisets."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, delta, signed):
        delta[signed[0]] += signed[1]
        return delta

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for delta in accumulators:
            merged.update(delta)  # adds counts, negative ones too
        if len(merged) > 4096:  # drop the members that balanced out
            merged = Counter({member: n for member, n in merged.items() if n})
        return merged

    def extract_output(self, delta):
        return sum(1 for n in delta.values() if n)


class MemberChanges(beam.PTransform):
    """{"today": ImageRecords, "previous": (run_date, stored ImageRecord)} -> a singleton: how
    many members (product key, perceptual hash) one side has and the other lacks. Only the
    products that were not carried need comparing: a carried product's rows keep their stored hashes."""

    def expand(self, inputs):
        today = inputs["today"] | "TodayMembers" >> beam.FlatMap(lambda r: [(m, 1) for m in slim_member(r)])
        previous = inputs["previous"] | "PreviousMembers" >> beam.FlatMap(
            lambda element: [(m, -1) for m in slim_member(element[1])])
        return (today, previous) | "AllMembers" >> beam.Flatten() | "Compare" >> beam.CombineGlobally(_MemberDelta())


def _relative(partition: str, path: str) -> tuple[str, str]:
    return partition, posixpath.basename(path)


def previous_group_files(previous: str, retailers: tuple[str, ...]) -> list[str] | None:
    """The previous run's product files when its groups may be kept: its manifest says it grouped
    with this ``GROUPING_VERSION`` and wrote exactly the image files an incremental run reads as
    its previous rows (:func:`~pipeline.reuse.latest_partition_files` of ``retailers``); else None."""
    try:
        with FileSystems.open(FileSystems.join(previous, "manifest.json")) as fh:
            manifest = json.loads(fh.read())
        if manifest.get("versions", {}).get("near_duplicates") != GROUPING_VERSION:
            return None
        tables = manifest["tables"]
        written = {_relative(f["partition"], f["path"]) for f in tables.get("images", {}).get("files", [])}
        products = [_relative(f["partition"], f["path"]) for f in tables.get("products", {}).get("files", [])]
    except Exception as exc:  # noqa: BLE001 - no manifest, an older layout: compute the groups
        _LOG.info("near-duplicate groups not kept: the previous manifest under %s is unusable: %s", previous, exc)
        return None
    read = set()
    for retailer in retailers:
        for path in latest_partition_files(retailer, previous):
            run_date, _ = partition_of(path)
            read.add(_relative(f"run_date={run_date}/retailer={retailer}", path))
    if read != written:
        return None
    return [FileSystems.join(previous, "products", *partition.split("/"), name) for partition, name in products]


def stored_groups(path: str):
    """(product key, (group, size)) for each product of one products-table file that has a group."""
    _, retailer = partition_of(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        table = pq.read_table(fh, columns=["product_id", "duplicate_group", "duplicate_group_size"])
    kept = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "kept_group_products")
    found = 0
    for product_id, group, size in zip(*(table.column(name).to_pylist() for name in table.column_names)):
        if group is not None:
            found += 1
            yield product_key(retailer, product_id), (group, int(size))
    kept.inc(found)


class ReadStoredGroups(beam.PTransform):
    """pbegin -> (product key, (group, size)) from the previous run's product files: what
    :class:`~pipeline.duplicates.GroupsFromEdges` would give for the same members."""

    def __init__(self, files: list[str]):
        super().__init__()
        self._files = list(files)

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> beam.Create(self._files, reshuffle=len(self._files) > 1)
                | "Read" >> beam.FlatMap(stored_groups))
