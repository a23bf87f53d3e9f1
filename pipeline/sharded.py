"""Sharded runs: one catalog as a sequence of Beam pipelines, each over one hash shard of its products.

The DirectRunner holds every collection that crosses a fused stage boundary in memory, so one
pipeline over the whole catalog peaks at a size that grows with the catalog (benchmarks/README.md,
"Memory model"). A run whose dumps hold more than ``records_per_shard`` image records therefore
runs :func:`~pipeline.build.build_pipeline` as passes, each a :class:`~pipeline.shardfiles.Part`
of its stages, run to the end before the next is built:

    split         READ: the dumps (and previous rows) spilled by a hash of ``retailer/product_id``
                  (de-duplication, reuse and aggregation are per product: a shard needs no other
                  shard's records); read errors written
    shard x N     SCORE over one shard's buckets (of about ``records_per_shard`` records);
                  products and slim ``(product key, hash)`` members spilled
    bands x B     EDGES over one band part of every member (or, in an incremental run where no
    groups        member changed, GROUPS from the previous run's product files: pipeline/kept_groups.py)
    finish x F    FINISH over a few shards' products: groups attached, products and review written
    commit        COMMIT of every pass's files and counts: one manifest, reconciled as in one pipeline

Memory then depends on ``records_per_shard``, not on the catalog.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems

from pipeline.build import CHANGED, REUSABLE, build_pipeline
from pipeline.kept_groups import all_exist, previous_group_files, previous_run, unreadable
from pipeline.machine import DIRECT_RUNNERS, available_cores
from pipeline.reuse import previous_image_files
from pipeline.shardfiles import BUCKETS, COMMIT, EDGES, FINISH, GROUPS, READ, SCORE, Part, shard_buckets, spilled_counts
from pipeline.sinks import delete_tree, staging_root

_LOG = logging.getLogger(__name__)
SHARDS_PER_BAND_PART = 8  # a band pass holds ~12 slim members per image: far less than a shard pass per record
SHARDS_PER_FINISH_PART = 4  # a finish pass holds product rows and their groups (at most one product per image
# record, no arrays, no models): four shards' worth stays far below one shard pass (benchmarks/README.md); counted
# in the shards the run actually has (an in-process incremental run's larger shards: fewer finish passes)
MIN_BYTES_PER_RECORD = 40  # no dump format stores an image record in fewer
COMPRESSION_BOUND = 20  # compressed dumps: assume at most this ratio (an over-estimate only costs a split pass)
IN_PROCESS_RESCORE_SHARE = 0.2  # incremental runs: shard passes run in the launcher when at most this share of
# the records may need loading (no previous row that may be reused): no worker processes to start per pass,
# and the models, when an image needs scoring, load once for the whole run (benchmarks/README.md)
REUSED_SHARD_FACTOR = 4  # in-process incremental shard passes hold this many times ``records_per_shard`` records:
# the products carried forward cross them as pyarrow tables (a few KB per image row: pipeline/carry.py), and at
# most IN_PROCESS_RESCORE_SHARE of the records were expected to take the per-image stages
_COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")


def shard_count(records: int, records_per_shard: int) -> int:
    """Shards for ``records`` image records: 1 when ``records_per_shard`` is 0 (sharding off)."""
    if records_per_shard <= 0 or records <= records_per_shard:
        return 1
    return min(BUCKETS, math.ceil(records / records_per_shard))


def band_parts(shards: int) -> int:
    """Near-duplicate bucketing passes for ``shards`` shards."""
    return max(1, math.ceil(shards / SHARDS_PER_BAND_PART))


def finish_parts(shards: int) -> int:
    """Finish passes (products with their near-duplicate groups, written) for ``shards`` shards."""
    return max(1, math.ceil(shards / SHARDS_PER_FINISH_PART))


def may_need_shards(config, runner: str | None) -> bool:
    """Whether to run the split pass at all: a one-machine runner, sharding on, and dumps large
    enough to hold more than ``records_per_shard`` records (an upper bound from file sizes)."""
    if runner not in DIRECT_RUNNERS or config.records_per_shard <= 0:
        return False
    size = 0
    for source in config.sources:
        for result in FileSystems.match([source.pattern]):
            for meta in result.metadata_list:
                size += meta.size_in_bytes * (COMPRESSION_BOUND if meta.path.endswith(_COMPRESSED) else 1)
    return size // MIN_BYTES_PER_RECORD > config.records_per_shard


def shards_in_process(records: int, reusable: int, previous: bool) -> bool:
    """Whether an incremental run's shard passes run in the launcher process: at most
    ``IN_PROCESS_RESCORE_SHARE`` of its records lack a previous row that may be reused. An
    estimate: a record that de-duplication will drop counts as one to load (erring towards the
    worker processes); an image file changed since the previous run counts as reused (a nightly
    rerun's few changed images, scored in this process)."""
    return previous and records > 0 and records - reusable <= IN_PROCESS_RESCORE_SHARE * records


def in_process_config(config):
    """``config`` for shard passes run in the launcher process: when the run sized its threads
    per worker process, one process now has every core (TensorFlow's default pool, a decode
    thread per core)."""
    if not config.threads_auto:
        return config
    return dataclasses.replace(config, decode_threads=min(64, available_cores()),
                               inference=dataclasses.replace(config.inference, intra_op_threads=0))


def kept_group_files(candidate: list[str] | None, changes: int | None) -> list[str] | None:
    """``candidate`` (the previous run's product files, when its manifest matched the previous
    rows: :func:`~pipeline.kept_groups.previous_group_files`) when the shard passes found no
    near-duplicate member changed (``changes``: how many did; None: not compared) and the files
    are all still there and readable; else None: compute the groups."""
    if candidate is None:
        return None
    if changes is None or changes > 0:
        _LOG.info("sharded run: near-duplicate groups computed: %s member(s) changed", changes)
        return None
    if not all_exist(candidate):
        _LOG.warning("sharded run: near-duplicate groups computed: a product file of the previous run is missing")
        return None
    damaged = unreadable(candidate)
    if damaged:
        _LOG.warning("sharded run: near-duplicate groups computed: cannot read the previous run's %s", damaged)
        return None
    _LOG.info("sharded run: no near-duplicate member changed; the previous run's groups are kept")
    return candidate


def run_sharded(config, run: Callable[..., None]) -> bool:
    """Run ``config`` as passes; ``run(build, heavy=...)`` runs one Beam pipeline that ``build(p)``
    builds (``heavy``: it runs on the run's worker processes: the shard passes, which load and
    score images, unless an incremental run expects to reuse most of them
    (:func:`shards_in_process`), and the band passes, the largest of the others; the rest may run
    in one process).
    False (nothing committed, work files removed) when the split pass finds that one shard is
    enough: the caller then runs the ordinary single pipeline."""
    started, root, passes = time.monotonic(), staging_root(config.output, config.run_id), []
    work = FileSystems.join(root, "work")

    def run_part(name: str, *stages: str, heavy: bool = False, cfg=config, **fields) -> None:
        part = Part(stages, work=work, number=len(passes), **fields)
        passes.append(name)
        began = time.monotonic()
        run(lambda p: build_pipeline(p, cfg, part), heavy=heavy)
        _LOG.info("sharded run: pass %s in %.1f s", name, time.monotonic() - began)

    previous_files = candidate = None
    if config.previous:  # the manifest first, then the files: a commit in between makes them differ
        last_run = previous_run(config.previous)
        previous_files = tuple(previous_image_files(config.previous, config.retailers))
        candidate = previous_group_files(config.previous, last_run, previous_files)
    run_part("split", READ, previous_files=previous_files)
    counts = spilled_counts(work)
    records = sum(n for key, n in counts.items() if key[0] == "records_in")
    shards = shard_count(records, config.records_per_shard)
    if shards == 1:
        delete_tree(root)
        return False
    parts = band_parts(shards)  # a band pass's size follows the catalog's members, not the shard size
    in_process = shards_in_process(records, counts[REUSABLE], bool(config.previous))
    if in_process:  # most products are carried forward (pipeline/carry.py): larger shards, fewer passes
        shards = shard_count(records, config.records_per_shard * REUSED_SHARD_FACTOR)
    finishing = finish_parts(shards)
    _LOG.warning("sharded run: %d image records in %d shards of ~%d%s, up to %d near-duplicate band pass(es)",
                 records, shards, math.ceil(records / shards),
                 " (in this process: most images may be reused)" if in_process else "", parts)
    shard_config = in_process_config(config) if in_process else config
    for shard in range(shards):
        run_part(f"shard {shard + 1}/{shards}", SCORE, heavy=not in_process, buckets=shard_buckets(shard, shards),
                 cfg=shard_config)
    kept = kept_group_files(candidate, spilled_counts(work).get(CHANGED))
    if kept is not None:
        run_part("kept groups", GROUPS, kept_groups=tuple(kept))
    else:
        for band in range(parts):
            run_part(f"bands {band + 1}/{parts}", EDGES, heavy=True, band=(band, parts))
        run_part("groups", GROUPS)
    for part in range(finishing):
        run_part(f"finish {part + 1}/{finishing}", FINISH, buckets=shard_buckets(part, finishing))
    run_part("commit", COMMIT)
    _LOG.info("sharded run: %d passes in %.0f s", len(passes), time.monotonic() - started)
    return True
