"""build_pipeline(p, config): chains the labelled stages of one run, nothing else.

    sources (one ReadDump per retailer) -> MapTaxonomy -> DeduplicateImages -> LoadImages
      -> WriteTable(images) / WriteTable(dead_letter) -> CommitRun (partitions + manifest)

The pipeline object comes from outside (the CLI, a runner, or a TestPipeline in tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from pipeline import versions
from pipeline.dedupe import DUPLICATES, DeduplicateImages
from pipeline.images import LoadImages
from pipeline.manifest import CountEvents, dead_letter_events, duplicate_events, image_events, source_events
from pipeline.options import RunConfig
from pipeline.sinks import CommitRun, WriteTable, staging_root
from pipeline.sources import DEAD_LETTER, FILE_STATS, ReadDump, decoder_for
from pipeline.taxonomy import MapTaxonomy
from schemas.tables import DEAD_LETTER as DEAD_LETTER_TABLE
from schemas.tables import IMAGES


@dataclass(frozen=True)
class RunOutputs:
    """Handles on the pipeline's main PCollections (tests assert on them)."""

    images: beam.PCollection
    dead_letter: beam.PCollection
    duplicates: beam.PCollection
    manifest: beam.PCollection


def build_pipeline(p: beam.Pipeline, config: RunConfig) -> RunOutputs:
    records, read_errors, file_stats = [], [], []
    for source in config.sources:
        out = p | f"Read[{source.retailer}]" >> ReadDump(
            retailer=source.retailer, pattern=source.pattern, decoder=decoder_for(source.mapping.source))
        records.append(out.records)
        read_errors.append(out[DEAD_LETTER])
        file_stats.append(out[FILE_STATS])

    all_records = records | "AllRecords" >> beam.Flatten()
    read_dead = read_errors | "AllReadErrors" >> beam.Flatten()
    stats = file_stats | "AllFileStats" >> beam.Flatten()

    mapped = all_records | "MapTaxonomy" >> MapTaxonomy(config.mappings, taxonomy_path=config.taxonomy_path)
    deduped = mapped | "Deduplicate" >> DeduplicateImages()
    duplicates = deduped[DUPLICATES]
    loaded = deduped.unique | "LoadImages" >> LoadImages(config.fetch, config.decode,
                                                                decode_threads=config.decode_threads)
    images = loaded["images"] | "DropArrays" >> beam.Map(lambda pair: pair[0])
    dead_letter = [read_dead, loaded["dead_letter"]] | "AllDeadLetters" >> beam.Flatten()

    staging = staging_root(config.output, config.run_id)
    written = (
        (images | "WriteImages" >> WriteTable(IMAGES, run_date=config.run_date, staging=staging,
                                             shards=config.shards_per_partition),
         dead_letter | "WriteDeadLetter" >> WriteTable(DEAD_LETTER_TABLE, run_date=config.run_date, staging=staging,
                                                       shards=config.shards_per_partition))
        | "AllWritten" >> beam.Flatten()
    )
    counts = p | "CountEvents" >> CountEvents({
        "Source": (all_records, source_events),
        "ReadErrors": (read_dead, source_events),
        "Images": (images, image_events),
        "DeadLetter": (dead_letter, dead_letter_events),
        "Duplicates": (duplicates, duplicate_events),
    })
    manifest = p | "CommitRun" >> CommitRun(config, written=written, counts=counts, file_stats=stats,
                                            versions=versions.versions())
    return RunOutputs(images=images, dead_letter=dead_letter, duplicates=duplicates, manifest=manifest)
