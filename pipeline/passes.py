"""The Beam graphs of a sharded run's passes: each adds labelled stages to a pipeline passed in.

A sharded run (:mod:`pipeline.sharded` runs the passes in order, each to the end) is the graph of
:func:`pipeline.build.build_pipeline` cut at its catalog-wide boundaries, with work files
(:mod:`pipeline.shardfiles`, under the run's staging folder) in between:

1. ``split``: ReadDump per retailer -> records spilled by product bucket; the previous run's
   image rows (incremental runs) likewise, and counted where they may be reused; read errors
   written to the dead-letter table.
2. ``shard`` (one per shard): its records -> MapTaxonomy -> DeduplicateImages [-> MatchPrevious
   against its previous rows] -> LoadImages -> ScoreImages -> images and dead letters written;
   products (before near-duplicate groups) and slim ``(product key, hash)`` members spilled.
3. ``bands`` (one per band part): every member -> the LSH buckets of this part -> spanning edges.
4. ``groups``: every edge -> union-find -> ``(product key, (group, size))`` spilled by bucket.
   An incremental run whose shard passes found no near-duplicate member changed reads the previous
   run's groups instead of passes 3 and 4 (``kept groups``, :mod:`pipeline.kept_groups`).
5. ``finish`` (one per few shards): their products joined with their groups -> products and review written.
6. ``commit``: :class:`~pipeline.sinks.CommitRun` over every pass's staged files and counts.

Passes 1, 2 and 5 save what they wrote and counted (:class:`SaveResult`) for the commit.
"""

from __future__ import annotations

import pickle

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import versions
from pipeline.build import (
    enrich,
    load_records,
    product_fn,
    read_sources,
    reuse_counted,
    to_review,
    vocabulary,
    write_table,
)
from pipeline.carry import CarryForward
from pipeline.duplicates import AttachGroups, GroupsFromEdges, NearDuplicateEdges, slim_member
from pipeline.kept_groups import MemberChanges, ReadStoredGroups
from pipeline.manifest import (
    CountEvents,
    dead_letter_events,
    duplicate_events,
    image_events,
    product_events,
    source_events,
    unreadable_events,
)
from pipeline.reuse import MatchPrevious, ReadPrevious, enriched_with, reusable
from pipeline.shardfiles import ReadBuckets, WriteBuckets, product_key, shard_buckets
from pipeline.sinks import CommitRun, staging_root
from schemas.tables import DEAD_LETTER as DEAD_LETTER_TABLE
from schemas.tables import IMAGES, PRODUCTS, REVIEW


def work_folder(config, name: str) -> str:
    """A folder of the run's work files (removed with the staging folder at commit)."""
    return FileSystems.join(staging_root(config.output, config.run_id), "work", name)


def pass_staging(config, number: int) -> str:
    """Where pass ``number`` stages its Parquet files."""
    return FileSystems.join(staging_root(config.output, config.run_id), f"pass-{number:04d}")


def result_path(config, number: int) -> str:
    return FileSystems.join(work_folder(config, "results"), f"pass-{number:04d}.pkl")


def record_product(record) -> str:
    return product_key(record.retailer, record.product_id)


def stored_product(element) -> str:
    return record_product(element[1])


def member_product(member) -> str:
    return member[0]


class _SaveResultFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, _, written, counts, file_stats, reusable, member_changes):
        result = {"written": list(written), "counts": list(counts), "file_stats": list(file_stats),
                  "reusable": sum(reusable)}
        if member_changes:
            result["member_changes"] = sum(member_changes)
        with FileSystems.create(self._path) as fh:
            pickle.dump(result, fh)
        yield self._path


class SaveResult(beam.PTransform):
    """pbegin -> one file holding a pass's WrittenFiles, event counts, file stats, (split pass
    of an incremental run) how many previous rows may be reused and (its shard passes) how many
    near-duplicate members changed (:class:`~pipeline.kept_groups.MemberChanges`)."""

    def __init__(self, path: str, *, written, counts, file_stats=None, reusable=None, member_changes=None):
        super().__init__()
        self._path, self._written, self._counts = path, written, counts
        self._optional = {"file_stats": file_stats, "reusable": reusable, "member_changes": member_changes}

    def expand(self, pbegin):
        optional = {name: beam.pvalue.AsList(pcoll if pcoll is not None else pbegin | f"No_{name}" >> beam.Create([]))
                    for name, pcoll in self._optional.items()}
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Save" >> beam.ParDo(_SaveResultFn(self._path), written=beam.pvalue.AsList(self._written),
                                   counts=beam.pvalue.AsSingleton(self._counts), **optional)
        )


def load_result(path: str) -> dict:
    with FileSystems.open(path) as fh:
        return pickle.load(fh)


def build_split(p: beam.Pipeline, config, number: int, previous_files: list[str] | None = None) -> None:
    """Pass 1: read the dumps (and the previous rows: ``previous_files``, listed by the caller,
    else each retailer's latest partition) once, spill them by product bucket."""
    records, read_dead, stats = read_sources(p, config.sources, extra_roots=config.extra_roots)
    _ = records | "SpillRecords" >> WriteBuckets(work_folder(config, "records"), record_product)
    reusable_rows = None
    if config.previous:
        read = p | "ReadPrevious" >> ReadPrevious(config.previous, config.retailers, previous_files)
        previous, unreadable = read["rows"], read["unreadable"]
        _ = previous | "SpillPrevious" >> WriteBuckets(work_folder(config, "previous"), stored_product)
        key = enriched_with(config)
        reusable_rows = (previous
                         | "ReusableRows" >> beam.Filter(lambda element: reusable(element[1], key))
                         | "CountReusable" >> beam.combiners.Count.Globally())
    written = write_table(read_dead, DEAD_LETTER_TABLE, "WriteReadErrors", config, pass_staging(config, number))
    counted = {"Source": (records, source_events), "ReadErrors": (read_dead, source_events),
               "DeadLetter": (read_dead, dead_letter_events)}
    if config.previous:
        counted["PreviousUnreadable"] = (unreadable, unreadable_events)
    counts = p | "CountEvents" >> CountEvents(counted)
    _ = p | "SaveResult" >> SaveResult(result_path(config, number), written=written, counts=counts, file_stats=stats,
                                       reusable=reusable_rows)


def build_shard(p: beam.Pipeline, config, number: int, shard: int, shards: int) -> None:
    """Pass 2: one shard's records through every per-image stage; products and members spilled."""
    buckets = shard_buckets(shard, shards)
    match = carried = previous = None
    if config.previous:  # unchanged products skip the per-image stages (pipeline/carry.py)
        key = enriched_with(config)
        carried = p | "CarryForward" >> CarryForward(
            lambda name: work_folder(config, name), buckets, mappings={s.retailer: s.mapping for s in config.sources},
            taxonomy_path=config.taxonomy_path, key=key, fetch=config.fetch, fn=product_fn(config),
            run_date=config.run_date, shards_per_partition=config.shards_per_partition)
        records, previous = carried["records"], carried["previous"]
        match = MatchPrevious(config.previous, config.retailers, key)
    else:
        records = p | "ReadRecords" >> ReadBuckets(work_folder(config, "records"), buckets)
    catalog = load_records(records, config.sources, taxonomy_path=config.taxonomy_path, fetch=config.fetch,
                           decode=config.decode, decode_threads=config.decode_threads, match_previous=match,
                           previous=previous)
    enriched = enrich(catalog, config)
    staging = pass_staging(config, number)
    converted = None if carried is None else carried["tables"]
    written = (
        (write_table(enriched.images, IMAGES, "WriteImages", config, staging, vocabulary(config), converted),
         write_table(enriched.dead_letter, DEAD_LETTER_TABLE, "WriteDeadLetter", config, staging))
        | "AllWritten" >> beam.Flatten()
    )
    _ = enriched.products | "SpillProducts" >> WriteBuckets(work_folder(config, "products"), record_product)
    _ = (enriched.images
         | "Members" >> beam.FlatMap(slim_member)
         | "SpillMembers" >> WriteBuckets(work_folder(config, "members"), member_product))
    counted = {"Images": (enriched.images, image_events), "DeadLetter": (enriched.dead_letter, dead_letter_events),
               "Duplicates": (catalog.duplicates, duplicate_events)}
    counted.update(reuse_counted(catalog))
    counts = p | "CountEvents" >> CountEvents(counted, counted=carried["counts"] if carried is not None else None)
    changes = None
    if carried is not None:  # whether the previous run's near-duplicate groups may be kept (pipeline/kept_groups.py)
        changes = {"today": enriched.images, "previous": previous} | "MemberChanges" >> MemberChanges()
    _ = p | "SaveResult" >> SaveResult(result_path(config, number), written=written, counts=counts,
                                       member_changes=changes)


def build_bands(p: beam.Pipeline, config, part: int, parts: int) -> None:
    """Pass 3: the near-duplicate buckets of one band part over every member -> spanning edges."""
    _ = (p
         | "ReadMembers" >> ReadBuckets(work_folder(config, "members"))
         | "Edges" >> NearDuplicateEdges(part=part, parts=parts)
         | "SpillEdges" >> WriteBuckets(work_folder(config, "edges"), member_product))


def build_groups(p: beam.Pipeline, config) -> None:
    """Pass 4: every edge -> near-duplicate groups, spilled by the bucket of each grouped product."""
    _ = (p
         | "ReadEdges" >> ReadBuckets(work_folder(config, "edges"))
         | "Groups" >> GroupsFromEdges()
         | "PerProduct" >> beam.FlatMap(lambda groups: groups.items())
         | "SpillGroups" >> WriteBuckets(work_folder(config, "groups"), member_product))


def build_kept_groups(p: beam.Pipeline, config, files: list[str]) -> None:
    """Passes 3 and 4 when no near-duplicate member changed: the previous run's groups
    (:func:`~pipeline.kept_groups.previous_group_files`), spilled by the bucket of each grouped product."""
    _ = (p
         | "ReadStoredGroups" >> ReadStoredGroups(files)
         | "SpillGroups" >> WriteBuckets(work_folder(config, "groups"), member_product))


def build_finish(p: beam.Pipeline, config, number: int, part: int, parts: int) -> None:
    """Pass 5: one part of the products (:func:`~pipeline.sharded.finish_parts`) with their
    near-duplicate groups -> products and review written."""
    buckets = shard_buckets(part, parts)
    products = {"products": p | "ReadProducts" >> ReadBuckets(work_folder(config, "products"), buckets),
                "groups": p | "ReadGroups" >> ReadBuckets(work_folder(config, "groups"), buckets)}
    products = products | "AttachDuplicateGroups" >> AttachGroups(keyed=True)
    staging = pass_staging(config, number)
    written = (
        (write_table(products, PRODUCTS, "WriteProducts", config, staging, vocabulary(config)),
         write_table(to_review(products), REVIEW, "WriteReview", config, staging))
        | "AllWritten" >> beam.Flatten()
    )
    counts = p | "CountEvents" >> CountEvents({"Products": (products, product_events)})
    _ = p | "SaveResult" >> SaveResult(result_path(config, number), written=written, counts=counts)


def build_commit(p: beam.Pipeline, config, *, written: list, counts: list, file_stats: list) -> beam.PCollection:
    """Pass 6: replace the run's partitions with every pass's files and write the manifest."""
    return p | "CommitRun" >> CommitRun(
        config, written=p | "Written" >> beam.Create(written), counts=p | "Counts" >> beam.Create([counts]),
        file_stats=p | "FileStats" >> beam.Create(file_stats), versions=versions.versions())
