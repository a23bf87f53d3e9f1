"""build_pipeline(p, config[, part]): chains the labelled stages of a run, nothing else.

    READ    sources (one ReadDump per retailer) [+ the previous run's image rows: incremental runs]
    SCORE   -> MapTaxonomy -> DeduplicateImages [-> MatchPrevious] -> LoadImages -> ScoreImages
            -> image rows written; AggregateProducts (cumulative max); near-duplicate members
    EDGES   members -> near-duplicate bands -> spanning edges
    GROUPS  edges -> near-duplicate groups (union-find)
    FINISH  products + their groups -> products and review queue written
    COMMIT  CommitRun (partitions + manifest)

One pipeline builds every stage. A sharded run (:mod:`pipeline.sharded`) builds the same
function once per pass, each with a :class:`~pipeline.shardfiles.Part` naming its stages and
its products' buckets: the collections between stages of different passes go through work files
(:meth:`Part.hand <pipeline.shardfiles.Part.hand>`). The pipeline object comes from outside (the
CLI, a runner, or a TestPipeline in tests).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import apache_beam as beam

from pipeline import versions
from pipeline.aggregate import AggregateProducts, ProductCombineFn
from pipeline.carry import CarryForward
from pipeline.dedupe import DUPLICATES, DeduplicateImages
from pipeline.duplicates import AttachGroups, GroupsFromEdges, NearDuplicateEdges, slim_member
from pipeline.images import LoadImages
from pipeline.inference import ScoreImages
from pipeline.kept_groups import MemberChanges, ReadStoredGroups
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
from pipeline.reuse import UNREADABLE, MatchPrevious, ReadPrevious, enriched_with, reusable
from pipeline.shardfiles import COMMIT, EDGES, FINISH, GROUPS, READ, SCORE, Part
from pipeline.sinks import CommitRun, WriteTable, staging_root
from pipeline.sources import DEAD_LETTER, FILE_STATS, ReadDump, decoder_for
from pipeline.stored import ReuseStatus
from pipeline.taxonomy import MapTaxonomy
from schemas.tables import DEAD_LETTER as DEAD_LETTER_TABLE
from schemas.tables import IMAGES, PRODUCTS, REVIEW

REUSABLE, CHANGED = ("reusable_rows",), ("member_changes",)  # counts a sharded run steers by (pipeline/sharded.py)


@dataclass(frozen=True)
class RunOutputs:
    """Handles on the pipeline's main PCollections (tests assert on them); None: not in this part."""

    images: beam.PCollection | None
    products: beam.PCollection | None
    dead_letter: beam.PCollection | None
    duplicates: beam.PCollection | None
    manifest: beam.PCollection | None


@dataclass(frozen=True)
class LoadedCatalog:
    """Records mapped, de-duplicated [, matched with the previous rows] and their images loaded."""

    records: beam.PCollection  # every ImageRecord the sources emitted
    duplicates: beam.PCollection
    images: beam.PCollection  # (ImageRecord, uint8 array)
    image_dead_letter: beam.PCollection
    reused: beam.PCollection | None = None  # complete ImageRecords of unchanged images (MatchPrevious)
    vanished: beam.PCollection | None = None  # (retailer, product_id) of previous products not in the dump
    previous_read: beam.PCollection | None = None  # (retailer, run_date) per previous image row read
    read_dead_letter: beam.PCollection | None = None  # the sources' dead letters (load_catalog)


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
    """Records -> MapTaxonomy -> DeduplicateImages [-> MatchPrevious with the ``previous`` rows]
    -> LoadImages."""
    mapped = all_records | "MapTaxonomy" >> MapTaxonomy({s.retailer: s.mapping for s in sources},
                                                         taxonomy_path=taxonomy_path)
    deduped = mapped | "Deduplicate" >> DeduplicateImages()
    to_load, matched = deduped.unique, None
    if match_previous is not None:
        matched = {"unique": deduped.unique, "records": all_records, "previous": previous} | (
            "MatchPrevious" >> match_previous)
        to_load = matched["candidates"]
    loaded = to_load | "LoadImages" >> LoadImages(fetch, decode, decode_threads=decode_threads)
    return LoadedCatalog(
        records=all_records, duplicates=deduped[DUPLICATES], images=loaded["images"],
        image_dead_letter=loaded["dead_letter"], reused=loaded["reused"] if matched else None,
        vanished=matched["vanished"] if matched else None, previous_read=matched["read"] if matched else None)


def load_catalog(p: beam.Pipeline, sources, *, extra_roots: tuple[str, ...], taxonomy_path: str | None,
                 fetch, decode, decode_threads: int) -> LoadedCatalog:
    """ReadDump per retailer -> MapTaxonomy -> DeduplicateImages -> LoadImages (``fashion-enrich
    prepare``: training data goes through exactly these stages)."""
    records, read_dead, _ = read_sources(p, sources, extra_roots=extra_roots)
    catalog = load_records(records, sources, taxonomy_path=taxonomy_path, fetch=fetch, decode=decode,
                           decode_threads=decode_threads)
    return dataclasses.replace(catalog, read_dead_letter=read_dead)


def reuse_counted(catalog: LoadedCatalog) -> dict:
    """CountEvents inputs of an incremental run (vanished products, previous rows read); none otherwise."""
    if catalog.vanished is None:
        return {}
    return {"Vanished": (catalog.vanished, vanished_events), "Previous": (catalog.previous_read, previous_events)}


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


def enrich(catalog: LoadedCatalog, config: RunConfig, key: str):
    """A loaded catalog -> [ScoreImages] -> (finished image rows (+ reused rows), their products
    before near-duplicate groups (AggregateProducts), the image and scoring stages' dead letters).
    ``key``: the run's :func:`~pipeline.reuse.enriched_with`, stamped on every new row."""
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
    return images, products, dead | "ImageDeadLetters" >> beam.Flatten()


def vocabulary(config: RunConfig) -> dict[str, str]:
    """Parquet metadata of the images and products tables: each model's classes and id."""
    classes = {m.task: m.classes for m in config.models}
    found = {f"fashion_enrich.{m.task}_classes": json.dumps(list(m.classes)) for m in config.models}
    found.update({f"fashion_enrich.{m.task}_model": m.model_id for m in config.models})
    found["fashion_enrich.colour_source"] = colour_source(classes)
    return found


def build_pipeline(p: beam.Pipeline, config: RunConfig, part: Part = Part()) -> RunOutputs:
    """The run's stages, chained: all of them (one pipeline), or ``part``'s (a sharded run's pass)."""
    staging, metadata = staging_root(config.output, config.run_id), vocabulary(config)
    key = enriched_with(config)  # what a row is made with: decides reuse, stamped on new rows

    def write(pcoll, table, label, converted=None):
        return pcoll | label >> WriteTable(table, run_date=config.run_date, staging=staging, metadata=metadata,
                                           shards=config.shards_per_partition, converted=converted,
                                           first_shard=part.number * config.shards_per_partition)

    counted, dead, written, carried_counts = {}, [], [], []
    records = previous = stats = images = products = members = edges = groups = carried = duplicates = None
    if part.has(READ):
        records, read_dead, stats = read_sources(p, config.sources, extra_roots=config.extra_roots)
        counted.update(Source=(records, source_events), ReadErrors=(read_dead, source_events))
        dead.append(read_dead)
        if config.previous:
            read = p | "ReadPrevious" >> ReadPrevious(config.previous, config.retailers, part.previous_files)
            previous = read["rows"]
            counted["PreviousUnreadable"] = (read[UNREADABLE], unreadable_events)
            if part.work:  # how many may be reused: whether the shard passes need the worker processes
                counted["Reusable"] = (previous, lambda row: [REUSABLE] if reusable(row[1], key) else [])
    elif part.has(SCORE) and config.previous:  # a shard pass of a rerun: unchanged products carried whole
        carried = p | "CarryForward" >> CarryForward(
            part.work, part.buckets, mappings={s.retailer: s.mapping for s in config.sources},
            taxonomy_path=config.taxonomy_path, key=key, fetch=config.fetch, fn=product_fn(config),
            run_date=config.run_date, shards_per_partition=config.shards_per_partition)
        records, previous = carried["records"], carried["previous"]
    records = part.hand(p, "records", records)
    previous = part.hand(p, "previous", previous) if config.previous else None
    if part.has(SCORE):
        match = MatchPrevious(key) if config.previous else None
        catalog = load_records(records, config.sources, taxonomy_path=config.taxonomy_path, fetch=config.fetch,
                               decode=config.decode, decode_threads=config.decode_threads, match_previous=match,
                               previous=previous)
        images, products, image_dead = enrich(catalog, config, key)
        duplicates, members = catalog.duplicates, images | "Members" >> beam.FlatMap(slim_member)
        dead.append(image_dead)
        if carried is not None:  # whether the previous run's near-duplicate groups may be kept: kept_groups.py
            products = (products, carried["products"]) | "WithCarriedProducts" >> beam.Flatten()
            members = (members, carried["members"]) | "WithCarriedMembers" >> beam.Flatten()
            changes = {"today": images, "previous": previous} | "MemberChanges" >> MemberChanges()
            carried_counts = [carried["counts"], changes | "ChangesCounted" >> beam.Map(lambda n: [(CHANGED, n)])]
        written.append(write(images, IMAGES, "WriteImages", carried["tables"] if carried is not None else None))
        counted.update(Images=(images, image_events), Duplicates=(duplicates, duplicate_events),
                       **reuse_counted(catalog))
    products, members = part.hand(p, "products", products), part.hand(p, "members", members)
    if part.has(EDGES):
        edges = members | "NearDuplicateEdges" >> NearDuplicateEdges(part=part.band[0], parts=part.band[1])
    if part.kept_groups is not None:  # no near-duplicate member changed: the previous run's groups
        groups = p | "ReadStoredGroups" >> ReadStoredGroups(part.kept_groups)
    else:
        edges = part.hand(p, "edges", edges)
        if part.has(GROUPS):
            groups = (edges | "NearDuplicateGroups" >> GroupsFromEdges()
                      | "PerProduct" >> beam.FlatMap(lambda found: found.items()))
    groups = part.hand(p, "groups", groups)
    if part.has(FINISH):
        products = {"products": products, "groups": groups} | "AttachDuplicateGroups" >> AttachGroups()
        review = products | "NeedsReview" >> beam.Filter(lambda product: product.needs_review)
        written += [write(products, PRODUCTS, "WriteProducts"), write(review, REVIEW, "WriteReview")]
        counted["Products"] = (products, product_events)
    dead_letter = counts = manifest = None
    if dead:
        dead_letter = dead | "AllDeadLetters" >> beam.Flatten()
        written.append(write(dead_letter, DEAD_LETTER_TABLE, "WriteDeadLetter"))
        counted["DeadLetter"] = (dead_letter, dead_letter_events)
    if counted:  # every pass but the band, groups and commit passes
        extra = carried_counts | "AllCounted" >> beam.Flatten() if carried_counts else None
        counts = p | "CountEvents" >> CountEvents(counted, counted=extra)
        written = written | "AllWritten" >> beam.Flatten()
    written = part.hand(p, "written", written if counted else None)
    counts, stats = part.hand(p, "counts", counts), part.hand(p, "file_stats", stats)
    if part.has(COMMIT):
        manifest = p | "CommitRun" >> CommitRun(config, written=written, counts=counts, file_stats=stats,
                                                versions=versions.versions())
    return RunOutputs(images=images, products=products if part.has(FINISH) else None,
                      dead_letter=dead_letter, duplicates=duplicates, manifest=manifest)
