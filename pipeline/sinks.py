"""Parquet sinks and the run commit.

``WriteTable`` writes one table as Hive-partitioned Parquet into a per-run staging folder
(``<output>/_staging/<run_id>/``): records are keyed by (partition, shard), grouped, and each
group is streamed into one file in row groups. ``CommitRun`` runs once, after every file is
written (it takes them as side inputs): it replaces the ``run_date=D/retailer=R`` partitions
of this run's retailers with the staged files (so a rerun of the same date replaces rather than
duplicates; :mod:`pipeline.commit`, which may run twice or be killed), removes the staging
folder and writes the run manifest, last. All file access
goes through Beam ``FileSystems``, so local paths and ``gs://`` behave alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import zlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from pipeline.commit import commit_partitions, write_json
from pipeline.manifest import build_manifest
from pipeline.records import WrittenFile
from schemas.tables import TableSpec

_LOG = logging.getLogger(__name__)
ROW_GROUP_ROWS = 10_000
STAGING = "_staging"


def staging_root(output: str, run_id: str) -> str:
    return FileSystems.join(output, STAGING, run_id)


def manifest_paths(output: str, run_date: str, run_id: str) -> list[str]:
    return [FileSystems.join(output, "manifest.json"),
            FileSystems.join(output, "manifests", f"run_date={run_date}", f"{run_id}.json")]


def _shard(product_id: str, shards: int) -> int:
    return zlib.crc32(product_id.encode("utf-8")) % shards if shards > 1 else 0


def file_of(record, run_date: str, shards: int) -> tuple[str, int]:
    """(partition, shard): the staged file of its table that ``record`` is written to."""
    return TableSpec.partition(run_date, record.retailer), _shard(record.product_id or "", shards)


class _WriteParquetFn(beam.DoFn):
    def __init__(self, table: TableSpec, staging: str, metadata: dict[str, str] | None = None, first_shard: int = 0):
        self._table, self._staging, self._metadata, self._first = table, staging, metadata or {}, first_shard

    def process(self, element):
        (partition, shard), records = element
        shard += self._first
        path = FileSystems.join(self._staging, self._table.name, partition, f"part-{shard:05d}.parquet")
        rows = 0
        batch: list = []
        schema = self._table.schema.with_metadata({**(self._table.schema.metadata or {}), **{
            k.encode(): v.encode() for k, v in self._metadata.items()}})
        if self._table.sort_key:  # small tables read top-down (the review queue): sorted in the file
            records = sorted(records, key=self._table.sort_key)
        with FileSystems.create(path) as fh:
            writer = pq.ParquetWriter(fh, schema, compression="snappy")
            for record in records:
                if isinstance(record, pa.Table):  # rows converted already (carried products: pipeline/carry.py)
                    writer.write_table(record)
                    rows += record.num_rows
                    continue
                batch.append(record)
                if len(batch) >= ROW_GROUP_ROWS:
                    writer.write_table(self._table.to_table(batch, schema))
                    rows += len(batch)
                    batch = []
            if batch or rows == 0:
                writer.write_table(self._table.to_table(batch, schema))
                rows += len(batch)
            writer.close()
        beam.metrics.Metrics.counter("fashion_enrich.sinks", f"{self._table.name}_rows").inc(rows)
        yield WrittenFile(table=self._table.name, partition=partition, path=path, rows=rows, shard=shard)


class WriteTable(beam.PTransform):
    """A PCollection of one table's records -> staged Parquet files; returns a PCollection of
    WrittenFile. ``converted``: a PCollection of ``((partition, shard), pyarrow Table)`` rows
    converted already (a rerun's carried image rows, :mod:`pipeline.carry`), written into the
    same files (tables without ``sort_key`` only). ``first_shard``: added to each file's shard
    number (a sharded run's passes stage their files side by side)."""

    def __init__(self, table: TableSpec, *, run_date: str, staging: str, shards: int = 1,
                 metadata: dict[str, str] | None = None, converted: beam.PCollection | None = None,
                 first_shard: int = 0):
        super().__init__()
        if converted is not None and table.sort_key:
            raise ValueError(f"table {table.name} is sorted within files: give it records only")
        self._table, self._run_date, self._staging, self._shards = table, run_date, staging, shards
        self._metadata, self._converted, self._first = metadata, converted, first_shard

    def expand(self, records):
        run_date, shards = self._run_date, self._shards
        keyed = records | "KeyByPartition" >> beam.Map(lambda r: (file_of(r, run_date, shards), r))
        if self._converted is not None:
            keyed = (keyed, self._converted) | "WithConverted" >> beam.Flatten()
        return (
            keyed
            | "GroupByFile" >> beam.GroupByKey()
            | "WriteParquet" >> beam.ParDo(_WriteParquetFn(self._table, self._staging, self._metadata, self._first))
        )


def delete_tree(path: str) -> None:
    """Delete a folder (local) or every object under a prefix (gs://), if there is one."""
    remote = "://" in path
    if not remote and not FileSystems.exists(path):
        return
    try:  # object stores delete a prefix recursively when it ends in '/'; local paths must not
        FileSystems.delete([path.rstrip("/") + "/" if remote else path.rstrip("/")])
    except BeamIOError as exc:
        _LOG.debug("nothing deleted at %s: %s", path, exc)


class _CommitFn(beam.DoFn):
    def __init__(self, config, versions: dict[str, str]):
        self._config, self._versions = config, versions

    def process(self, _, written, counts, file_stats):
        cfg, counts = self._config, [pair for pairs in counts for pair in pairs]
        final_files = commit_partitions(cfg.output, cfg.run_date, cfg.run_id, cfg.retailers, written)
        delete_tree(staging_root(cfg.output, cfg.run_id))
        parent = FileSystems.join(cfg.output, STAGING)
        if "://" not in parent:
            try:  # leave no empty _staging folder behind; another run may be using it, then it stays
                os.rmdir(parent)
            except OSError:
                pass
        manifest = build_manifest(
            config=cfg, counts=counts, file_stats=file_stats, written=final_files,
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), versions=self._versions)
        for path in reversed(manifest_paths(cfg.output, cfg.run_date, cfg.run_id)):  # the run's own, then latest
            write_json(path, manifest)  # local folders made there; object stores have none
        yield manifest


class CommitRun(beam.PTransform):
    """After all writes: this run's partitions replaced by its staged files, then the manifest
    (:mod:`pipeline.commit`: it can run twice and be killed at any point). ``counts``: lists of
    (event key, count), summed (one per pass of a sharded run)."""

    def __init__(self, config, *, written, counts, file_stats, versions: dict[str, str]):
        super().__init__()
        self._config, self._versions = config, versions
        self._written, self._counts, self._file_stats = written, counts, file_stats

    def expand(self, pbegin):
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Commit" >> beam.ParDo(
                _CommitFn(self._config, self._versions),
                written=beam.pvalue.AsList(self._written),
                counts=beam.pvalue.AsList(self._counts),
                file_stats=beam.pvalue.AsList(self._file_stats))
        )
