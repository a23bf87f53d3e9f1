"""build_pipeline(p, config): chains the labelled stages of one run, nothing else.

    sources (one ReadDump per retailer) -> MapTaxonomy -> DeduplicateImages
      [-> MatchPrevious (incremental runs: join with the previous run's image rows)] -> LoadImages
      -> ScoreImages (RunInference per model) -> AggregateProducts (cumulative max)
         + GroupNearDuplicates (perceptual hashes) -> review queue
      -> WriteTable(images / products / dead_letter) -> CommitRun (partitions + manifest)

The pipeline object comes from outside (the CLI, a runner, or a TestPipeline in tests). A
sharded run (:mod:`pipeline.sharded`) runs the same stages in passes (:mod:`pipeline.passes`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import apache_beam as beam

from pipeline import versions
from pipeline.aggregate import AggregateProducts, ProductCombineFn
from pipeline.dedupe import DUPLICATES, DeduplicateImages
from pipeline.duplicates import AttachGroups, GroupNearDuplicates
from pipeline.images import LoadImages
from pipeline.inference import ScoreImages
from pipeline.manifest import (
    CountEvents,
    dead_letter_events,
    duplicate_events,
    image_events,
    previous_events,
    product_events,
    source_events,
    unreadable_events,
    vanished_events,
)
from pipeline.options import RunConfig
from pipeline.pickled import replaced
from pipeline.product_rules import colour_source
from pipeline.progress import LogProgress
from pipeline.reuse import MatchPrevious, enriched_with
from pipeline.sinks import CommitRun, WriteTable, staging_root
from pipeline.sources import DEAD_LETTER, FILE_STATS, ReadDump, decoder_for
from pipeline.stored import ReuseStatus
from pipeline.taxonomy import MapTaxonomy
from schemas.tables import DEAD_LETTER as DEAD_LETTER_TABLE
from schemas.tables import IMAGES, PRODUCTS, REVIEW


@dataclass(frozen=True)
class RunOutputs:
    """Handles on the pipeline's main PCollections (tests assert on them)."""

    images: beam.PCollection
    products: beam.PCollection
    dead_letter: beam.PCollection
    duplicates: beam.PCollection
    manifest: beam.PCollection


@dataclass(frozen=True)
class LoadedCatalog:
    """The shared front of every graph: dumps read, mapped, de-duplicated, images loaded."""

    records: beam.PCollection  # every ImageRecord the sources emitted
    read_dead_letter: beam.PCollection | None  # None: records read by an earlier pass (sharded runs)
    file_stats: beam.PCollection | None
    duplicates: beam.PCollection
    images: beam.PCollection  # (ImageRecord, uint8 array)
    image_dead_letter: beam.PCollection
    reused: beam.PCollection | None = None  # complete ImageRecords of unchanged images (MatchPrevious)
    vanished: beam.PCollection | None = None  # (retailer, product_id) of previous products not in the dump
    previous_read: beam.PCollection | None = None  # (retailer, run_date) per previous image row read
    previous_unreadable: beam.PCollection | None = None  # (retailer, path, reason) per previous file not read


def read_sources(p: beam.Pipeline, sources, *, extra_roots: tuple[str, ...]):
    """One ReadDump per retailer -> (every ImageRecord, read dead letters, file stats)."""
    records, read_errors, file_stats = [], [], []
    for source in sources:
        out = p | f"Read[{source.retailer}]" >> ReadDump(
            retailer=source.retailer, pattern=source.pattern, decoder=decoder_for(source.mapping.source),
            extra_roots=extra_roots)
        records.append(out.records)
        read_errors.append(out[DEAD_LETTER])
        file_stats.append(out[FILE_STATS])
    return (records | "AllRecords" >> beam.Flatten(), read_errors | "AllReadErrors" >> beam.Flatten(),
            file_stats | "AllFileStats" >> beam.Flatten())


def load_records(all_records: beam.PCollection, sources, *, taxonomy_path: str | None, fetch, decode,
                 decode_threads: int, match_previous: MatchPrevious | None = None,
                 previous: beam.PCollection | None = None) -> LoadedCatalog:
    """Records -> MapTaxonomy -> DeduplicateImages [-> MatchPrevious] -> LoadImages (no read
    dead letters or file stats: :func:`load_catalog` adds those). ``previous``: the stored rows
    MatchPrevious matches, when they are already read (a sharded run's shard pass)."""
    mapped = all_records | "MapTaxonomy" >> MapTaxonomy({s.retailer: s.mapping for s in sources},
                                                         taxonomy_path=taxonomy_path)
    deduped = mapped | "Deduplicate" >> DeduplicateImages()
    to_load, matched = deduped.unique, None
    if match_previous is not None:
        inputs = {"unique": deduped.unique, "records": all_records}
        if previous is not None:
            inputs["previous"] = previous
        matched = inputs | "MatchPrevious" >> match_previous
        to_load = matched["candidates"]
    loaded = to_load | "LoadImages" >> LoadImages(fetch, decode, decode_threads=decode_threads)
    return LoadedCatalog(
        records=all_records, read_dead_letter=None, file_stats=None, duplicates=deduped[DUPLICATES],
        images=loaded["images"], image_dead_letter=loaded["dead_letter"],
        reused=loaded["reused"] if matched else None, vanished=matched["vanished"] if matched else None,
        previous_read=matched["read"] if matched else None,
        previous_unreadable=matched["unreadable"] if matched else None)


def load_catalog(p: beam.Pipeline, sources, *, extra_roots: tuple[str, ...], taxonomy_path: str | None,
                 fetch, decode, decode_threads: int, match_previous: MatchPrevious | None = None) -> LoadedCatalog:
    """ReadDump per retailer -> MapTaxonomy -> DeduplicateImages [-> MatchPrevious] -> LoadImages (also
    used by ``fashion-enrich prepare``, so training data goes through exactly these stages)."""
    records, read_dead, stats = read_sources(p, sources, extra_roots=extra_roots)
    catalog = load_records(records, sources, taxonomy_path=taxonomy_path, fetch=fetch, decode=decode,
                           decode_threads=decode_threads, match_previous=match_previous)
    return dataclasses.replace(catalog, read_dead_letter=read_dead, file_stats=stats)


def reuse_counted(catalog: LoadedCatalog) -> dict:
    """CountEvents inputs of an incremental run (vanished products, previous rows read); none otherwise."""
    if catalog.vanished is None:
        return {}
    return {"Vanished": (catalog.vanished, vanished_events), "Previous": (catalog.previous_read, previous_events),
            "PreviousUnreadable": (catalog.previous_unreadable, unreadable_events)}


def finish_image(pair, key: str):
    """(record, array) -> the record alone, stamped with what it was made with (``enriched_with``)."""
    record = pair[0]
    return replaced(record, enriched_with=key, reuse_status=record.reuse_status or ReuseStatus.NEW.value)


def product_fn(config: RunConfig) -> ProductCombineFn:
    """The run's product aggregation: its models' classes and its aggregate settings."""
    classes = {m.task: m.classes for m in config.models}
    return ProductCombineFn(classes.get("category", ()), classes.get("gender", ()), config.aggregate,
                            config.taxonomy_path, age_group_classes=classes.get("age_group", ()),
                            colour_classes=classes.get("colour", ()),
                            qualities={m.task: m.quality for m in config.models if m.quality})


@dataclass(frozen=True)
class Enriched:
    """The images of a catalog, scored (or reused), its products before near-duplicate groups,
    and the dead letters of the image and scoring stages."""

    images: beam.PCollection  # ImageRecords as written
    products: beam.PCollection  # ProductRecords without duplicate_group
    dead_letter: beam.PCollection


def enrich(catalog: LoadedCatalog, config: RunConfig) -> Enriched:
    """A loaded catalog -> [ScoreImages] -> finished image rows (+ reused rows) -> AggregateProducts."""
    key = enriched_with(config)
    arrays, dead = catalog.images, [catalog.image_dead_letter]
    if config.progress_interval_s:
        _ = arrays | "ProgressLoaded" >> LogProgress("images loaded", config.progress_interval_s)
    if config.models:
        score = ScoreImages(config.models, config.inference, config.decode.size)
        if config.inference_hints:  # e.g. a GPU for this step only (Dataflow right fitting)
            score = score.with_resource_hints(**dict(config.inference_hints))
        scored = arrays | "ScoreImages" >> score
        arrays = scored["images"]
        dead.append(scored["dead_letter"])
    images = arrays | "DropArrays" >> beam.Map(finish_image, key)
    if catalog.reused is not None:  # unchanged images: their stored rows, neither decoded nor scored
        images = (images, catalog.reused) | "WithReused" >> beam.Flatten()
    if config.progress_interval_s and config.models:
        _ = images | "ProgressScored" >> LogProgress("images scored", config.progress_interval_s)
    products = {"images": images, "records": catalog.records} | "AggregateProducts" >> AggregateProducts(
        fn=product_fn(config))
    return Enriched(images=images, products=products,
                    dead_letter=dead | "ImageDeadLetters" >> beam.Flatten())


def vocabulary(config: RunConfig) -> dict[str, str]:
    """Parquet metadata of the images and products tables: each model's classes and id."""
    classes = {m.task: m.classes for m in config.models}
    found = {f"fashion_enrich.{m.task}_classes": json.dumps(list(m.classes)) for m in config.models}
    found.update({f"fashion_enrich.{m.task}_model": m.model_id for m in config.models})
    found["fashion_enrich.colour_source"] = colour_source(classes)
    return found


def write_table(pcoll, table, label: str, config: RunConfig, staging: str, metadata=None,
                converted=None) -> beam.PCollection:
    """``pcoll`` -> staged Parquet files of ``table`` (WrittenFile records), labelled ``label``."""
    return pcoll | label >> WriteTable(table, run_date=config.run_date, staging=staging,
                                       shards=config.shards_per_partition, metadata=metadata, converted=converted)


def to_review(products: beam.PCollection) -> beam.PCollection:
    """The products in the review queue (written with the review table's columns)."""
    return products | "NeedsReview" >> beam.Filter(lambda product: product.needs_review)


def build_pipeline(p: beam.Pipeline, config: RunConfig) -> RunOutputs:
    """The whole run as one pipeline (a sharded run splits it into passes: :mod:`pipeline.sharded`)."""
    match = MatchPrevious(config.previous, config.retailers, enriched_with(config)) if config.previous else None
    catalog = load_catalog(p, config.sources, extra_roots=config.extra_roots, taxonomy_path=config.taxonomy_path,
                           fetch=config.fetch, decode=config.decode, decode_threads=config.decode_threads,
                           match_previous=match)
    all_records, read_dead, stats = catalog.records, catalog.read_dead_letter, catalog.file_stats
    duplicates = catalog.duplicates
    enriched = enrich(catalog, config)
    images = enriched.images
    dead_letter = (read_dead, enriched.dead_letter) | "AllDeadLetters" >> beam.Flatten()
    duplicate_groups = images | "NearDuplicates" >> GroupNearDuplicates()
    products = {"products": enriched.products, "groups": duplicate_groups} | "AttachDuplicateGroups" >> AttachGroups()
    review = to_review(products)

    staging = staging_root(config.output, config.run_id)
    metadata = vocabulary(config)
    written = (
        (write_table(images, IMAGES, "WriteImages", config, staging, metadata),
         write_table(products, PRODUCTS, "WriteProducts", config, staging, metadata),
         write_table(dead_letter, DEAD_LETTER_TABLE, "WriteDeadLetter", config, staging),
         write_table(review, REVIEW, "WriteReview", config, staging))
        | "AllWritten" >> beam.Flatten()
    )
    counted = {
        "Source": (all_records, source_events),
        "ReadErrors": (read_dead, source_events),
        "Images": (images, image_events),
        "DeadLetter": (dead_letter, dead_letter_events),
        "Duplicates": (duplicates, duplicate_events),
        "Products": (products, product_events),
    }
    counted.update(reuse_counted(catalog))
    counts = p | "CountEvents" >> CountEvents(counted)
    manifest = p | "CommitRun" >> CommitRun(config, written=written, counts=counts, file_stats=stats,
                                            versions=versions.versions())
    return RunOutputs(images=images, products=products, dead_letter=dead_letter, duplicates=duplicates,
                      manifest=manifest)
