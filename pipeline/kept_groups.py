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
  no other retailer's (:func:`previous_run`, :func:`previous_group_files`; the product files
  must still be there and readable: :func:`all_exist`, :func:`unreadable`),
* and that run grouped with this ``GROUPING_VERSION``.

Otherwise the groups are computed as in a full run. A changed image with a new hash, a new
product with a hashed image row, a vanished one: any of them makes the run compute them. A run
that is not sharded always computes them (one pipeline: no passes to skip).
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import Counter
from collections.abc import Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.duplicates import slim_member
from pipeline.grouping import GROUPING_VERSION
from pipeline.shardfiles import product_key
from pipeline.stored import fault, partition_of
from schemas.tables import IMAGES, PRODUCTS

_LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "fashion_enrich.carry"
_GROUP_COLUMNS = ("product_id", "duplicate_group", "duplicate_group_size")  # read by name, in this order


class _MemberDelta(beam.CombineFn):
    """(member, +1 today / -1 previous) -> how many distinct members have more copies on one side
    than on the other (0: the two multisets are equal)."""

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
    many distinct members (product key, perceptual hash) one side has more copies of (0: none
    changed; also for two empty inputs). Only the
    products that were not carried need comparing: a carried product's rows keep their stored hashes."""

    def expand(self, inputs):
        today = inputs["today"] | "TodayMembers" >> beam.FlatMap(lambda r: [(m, 1) for m in slim_member(r)])
        previous = inputs["previous"] | "PreviousMembers" >> beam.FlatMap(
            lambda element: [(m, -1) for m in slim_member(element[1])])
        return (today, previous) | "AllMembers" >> beam.Flatten() | "Compare" >> beam.CombineGlobally(_MemberDelta())


def _relative(partition: str, path: str) -> tuple[str, str]:
    return partition, posixpath.basename(path)


def previous_run(previous: str) -> tuple[set, list] | None:
    """What the output's ``manifest.json`` says its latest run wrote, when that run grouped with
    this ``GROUPING_VERSION``: (its image files, its product files), each as (partition, file
    name); else None (and why, logged)."""
    try:
        with FileSystems.open(FileSystems.join(previous, "manifest.json")) as fh:
            manifest = json.loads(fh.read())
        version = manifest.get("versions", {}).get("near_duplicates")
        tables = manifest["tables"]
        written = {_relative(f["partition"], f["path"]) for f in tables.get(IMAGES.name, {}).get("files", [])}
        products = [_relative(f["partition"], f["path"]) for f in tables.get(PRODUCTS.name, {}).get("files", [])]
    except Exception as exc:  # noqa: BLE001 - no manifest, an older layout: compute the groups
        _LOG.info("near-duplicate groups will be computed: no usable manifest under %s (%s)", previous, exc)
        return None
    if version != GROUPING_VERSION:
        _LOG.info("near-duplicate groups will be computed: the previous run grouped with version %s", version)
        return None
    return written, products


def previous_group_files(previous: str, run: tuple[set, list] | None, image_files: Sequence[str]) -> list[str] | None:
    """The previous run's product files when its groups may be kept, else None: ``run``
    (:func:`previous_run`, read before the files were listed) wrote exactly ``image_files``, the
    files this run reads as its previous rows (a run committed to ``previous`` in between makes
    them differ)."""
    if run is None:
        return None
    written, products = run
    read = set()
    for path in image_files:
        run_date, retailer = partition_of(path)
        read.add(_relative(f"run_date={run_date}/retailer={retailer}", path))
    if read != written:
        _LOG.info("near-duplicate groups will be computed: the previous rows are not the files the previous "
                  "run wrote (%d read, %d written, %d in common)", len(read), len(written), len(read & written))
        return None
    return [FileSystems.join(previous, PRODUCTS.name, *partition.split("/"), name) for partition, name in products]


def all_exist(paths: list[str]) -> bool:
    """Whether every one of ``paths`` is there (a retention job may have removed old product files)."""
    if not paths:
        return True
    try:
        found = {m.path for result in FileSystems.match(paths) for m in result.metadata_list}
    except Exception:  # noqa: BLE001 - a pattern that matches nothing raises on some file systems
        return False
    return all(path in found for path in paths)


def unreadable(paths: list[str]) -> str | None:
    """The first of ``paths`` whose Parquet footer cannot be read, with why; None when all can
    (a truncated product file would otherwise fail the groups pass)."""
    for path in paths:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                pq.read_metadata(fh)
        except Exception as exc:  # noqa: BLE001 - any fault: the groups are computed instead
            return f"{path} ({fault(exc, 200)})"
    return None


def stored_groups(path: str):
    """(product key, (group, size)) for each product of one products-table file that has a group."""
    _, retailer = partition_of(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        table = pq.read_table(fh, columns=list(_GROUP_COLUMNS))
    kept = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "kept_group_products")
    found = 0
    for product_id, group, size in zip(*(table.column(name).to_pylist() for name in _GROUP_COLUMNS)):
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
