"""Sharded runs (pipeline/sharded.py, pipeline/shardfiles.py, build_pipeline's parts): real Beam
passes on real files, Parquet read back.

A run split into hash shards of its products writes the same images, products, dead letters and
review rows, and the same manifest counts, as one pipeline; near-duplicates in different shards
are grouped; incremental reruns reuse and replace their partitions; reconciliation holds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.duplicates import GroupNearDuplicates
from pipeline.grouping import UnionFind, near_duplicate_pairs
from pipeline.job import run_job
from pipeline.machine import local_runner
from pipeline.options import RunConfig
from pipeline.records import ImageRecord
from pipeline.sharded import (
    band_parts,
    finish_parts,
    in_process_config,
    may_need_shards,
    run_sharded,
    shard_count,
    shards_in_process,
)
from pipeline.shardfiles import BUCKETS, ReadBuckets, WriteBuckets, bucket_of, shard_buckets

NO_MODELS = ["--models", "none"]
COMMON = ["--direct_running_mode", "in_memory", "--progress-interval", "0"]
MAPPING = ("retailer: shop\nsource: {format: jsonl, product_id: sku, image_uri: url, category: [kind]}\n"
           "category: {exact: {dresses: DRESSES}}\n")
IGNORED = ("fetch_ms",)  # timing
FLOATS = ("person_score", "category_scores", "gender_scores", "category_score", "gender_score")


def image(product_id: str, uri: str, **fields) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=product_id, image_uri=uri, image_position=0,
                       source_file="shop.jsonl", source_line=1, **fields)


def tables(out: Path) -> dict[str, pd.DataFrame]:
    found = {}
    for table, keys in (("images", ["retailer", "product_id", "image_uri"]), ("products", ["retailer", "product_id"]),
                        ("dead_letter", ["retailer", "source_file", "source_line"]),
                        ("review", ["retailer", "product_id"])):
        if (out / table).exists():
            frame = pd.read_parquet(out / table).drop(columns=list(IGNORED), errors="ignore")
            found[table] = frame.sort_values(keys).reset_index(drop=True)
    return found


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal rows; model scores equal to float32 rounding (batches differ between the passes)."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if column in FLOATS or column.endswith(("_score", "_scores")):  # every head's scores
            left = a[column].map(lambda v: np.asarray(v if v is not None else [], dtype=float).ravel())
            right = b[column].map(lambda v: np.asarray(v if v is not None else [], dtype=float).ravel())
            assert all(np.allclose(x, y, atol=1e-5, equal_nan=True) for x, y in zip(left, right)), column
        else:
            assert a[column].astype(str).tolist() == b[column].astype(str).tolist(), column


def shop_dump(folder: Path, rows: list[tuple[str, str]], *, padding: int = 0) -> str:
    """A generic JSONL dump of (sku, url) rows with its mapping; ``padding`` bytes of title per row."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.jsonl").write_text("".join(
        json.dumps({"sku": sku, "url": url, "kind": "dresses", "title": "x" * padding}) + "\n" for sku, url in rows))
    (folder / "shop.yaml").write_text(MAPPING)
    return f"shop={folder / 'shop.jsonl'}:{folder / 'shop.yaml'}"


def photo_dump(tmp_path: Path, samples: Path, count: int) -> Path:
    """A dump folder with ``images/0.jpg`` ... copies of the first ``count`` sample photos."""
    folder = tmp_path / "dump"
    (folder / "images").mkdir(parents=True)
    for n, photo in enumerate(sorted((samples / "images").glob("*.jpg"))[:count]):
        shutil.copy(photo, folder / "images" / f"{n}.jpg")
    return folder


# -- plain functions and the work files ----------------------------------------------------------


def test_shards_cover_every_bucket_once_and_counts_follow_the_target():
    for shards in (1, 2, 5, BUCKETS):
        covered = sorted(b for s in range(shards) for b in shard_buckets(s, shards))
        assert covered == list(range(BUCKETS))
    assert shard_count(10, 0) == 1 and shard_count(25_000, 25_000) == 1
    assert shard_count(25_001, 25_000) == 2 and shard_count(1_000_000, 25_000) == 40
    assert shard_count(10**9, 25_000) == BUCKETS
    assert band_parts(1) == 1 and band_parts(8) == 1 and band_parts(40) == 5
    assert finish_parts(1) == 1 and finish_parts(4) == 1 and finish_parts(10) == 3 and finish_parts(100) == 25
    with pytest.raises(ValueError):
        shard_buckets(2, 2)


def test_shard_passes_run_in_process_only_when_an_incremental_run_may_reuse_most_images():
    assert shards_in_process(10_000, 9_900, previous=True)  # a nightly rerun: 1 % may need loading
    assert shards_in_process(10_000, 8_000, previous=True)
    assert not shards_in_process(10_000, 7_999, previous=True)  # more than 20 %: the worker processes
    assert not shards_in_process(10_000, 10_000, previous=False)  # a full run
    assert not shards_in_process(10_000, 0, previous=True)  # another model: nothing may be reused


def test_in_process_passes_get_every_core_unless_threads_were_given(tmp_path):
    from pipeline.machine import available_cores

    config = RunConfig.from_options(PipelineOptions(["--direct_running_mode", "multi_processing",
                                                     "--direct_num_workers", str(2 * available_cores()),
                                                     "--output", str(tmp_path)]))
    assert config.threads_auto and config.decode_threads == 1 and config.inference.intra_op_threads == 1
    whole = in_process_config(config)
    assert whole.decode_threads == available_cores() and whole.inference.intra_op_threads == 0  # TF's default
    given = RunConfig.from_options(PipelineOptions(["--direct_running_mode", "multi_processing", "--tf-threads", "1",
                                                    "--output", str(tmp_path)]))
    assert not given.threads_auto and in_process_config(given) == given


def test_only_direct_runs_of_large_enough_dumps_are_split(tmp_path):
    source = shop_dump(tmp_path, [(f"P{n}", "x.jpg") for n in range(10)])  # ~60 bytes a row
    config = RunConfig.from_options(PipelineOptions(["--source", source, "--records-per-shard", "5"]))
    assert may_need_shards(config, None) and may_need_shards(config, "DirectRunner")
    assert not may_need_shards(config, "DataflowRunner")
    assert not may_need_shards(dataclasses.replace(config, records_per_shard=0), None)  # sharding off
    assert not may_need_shards(dataclasses.replace(config, records_per_shard=1000), None)  # too small a dump


def test_work_files_round_trip_by_bucket(tmp_path):
    records = [image(f"P{i}", f"u{i}") for i in range(40)]
    with TestPipeline() as p:
        _ = p | beam.Create(records) | WriteBuckets(str(tmp_path), lambda r: f"{r.retailer}/{r.product_id}")
    for shard in range(3):
        with TestPipeline() as p:
            read = p | ReadBuckets(str(tmp_path), shard_buckets(shard, 3))
            expected = [r for r in records if bucket_of(f"shop/{r.product_id}") % 3 == shard]
            assert_that(read, equal_to(expected))


def test_spanning_edges_give_the_groups_of_all_pairs():
    rng = random.Random(7)
    bases = [rng.getrandbits(144) for _ in range(30)]
    phashes, keys = [], []
    for n in range(200):  # near copies (a few bits flipped) of 30 images, over 120 products
        value = bases[n % 30] ^ (1 << rng.randrange(144)) ^ (1 << rng.randrange(144))
        phashes.append(f"{value:036x}")
        keys.append(f"shop/P{rng.randrange(120):03d}")
    sets = UnionFind()
    for i, j in near_duplicate_pairs(phashes):
        if keys[i] != keys[j]:
            root_i, root_j = sets.find(keys[i]), sets.find(keys[j])
            sets.union(min(root_i, root_j), max(root_i, root_j))
    groups = sets.groups()
    expected = {k: (g, list(groups.values()).count(g)) for k, g in groups.items()}
    images = [image(k.split("/")[1], f"u{n}", image_phash=h) for n, (k, h) in enumerate(zip(keys, phashes))]
    with TestPipeline() as p:
        found = p | beam.Create(images) | GroupNearDuplicates()
        assert_that(found, equal_to([expected]))


# -- whole runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("models", [[], NO_MODELS], ids=["default-models", "no-models"])
def test_a_sharded_run_writes_what_one_pipeline_writes(tmp_path, models):
    args = [*COMMON, *models, "--run-date", "2026-01-02"]
    whole = run_job([*args, "--output", str(tmp_path / "whole"), "--records-per-shard", "0"])
    sharded = run_job([*args, "--output", str(tmp_path / "sharded"), "--records-per-shard", "30"])
    assert len(sharded.manifest["tables"]["images"]["files"]) > 3  # several passes wrote each partition
    assert sharded.manifest["reconciled"] and whole.manifest["reconciled"]
    assert sharded.manifest["counts"] == whole.manifest["counts"]
    assert sharded.manifest["reconciliation"] == whole.manifest["reconciliation"]
    a, b = tables(tmp_path / "whole"), tables(tmp_path / "sharded")
    assert a.keys() == b.keys() and {"images", "products", "dead_letter"} <= set(a)
    for table in a:
        assert_same_rows(a[table], b[table])
    assert not (tmp_path / "sharded" / "_staging").exists()  # work files removed at commit


def test_near_duplicates_in_different_shards_are_grouped(tmp_path, samples):
    folder = photo_dump(tmp_path, samples, 6)
    # P0 and P7 show the same photo; the other products one photo each.
    rows = [(f"P{n}", f"images/{n}.jpg") for n in range(6)] + [("P7", "images/0.jpg")]
    source = shop_dump(folder, rows)
    result = run_job([*COMMON, *NO_MODELS, "--source", source, "--output", str(tmp_path / "out"),
                      "--records-per-shard", "2"])
    shards = shard_count(7, 2)
    assert shards == 4 and bucket_of("shop/P0") % shards != bucket_of("shop/P7") % shards  # different shards
    manifest = result.manifest
    assert manifest["reconciled"] and manifest["counts"]["near_duplicate_products"] == {"shop": 2}
    products = pd.read_parquet(tmp_path / "out" / "products").set_index("product_id")
    assert products.loc["P0", "duplicate_group"] == products.loc["P7", "duplicate_group"] == "shop/P0"
    assert products.loc["P0", "duplicate_group_size"] == 2
    assert products.drop(index=["P0", "P7"])["duplicate_group"].isna().all()


def test_sharded_reruns_reuse_replace_their_partitions_and_count_vanished(tmp_path, samples):
    from runners.cli import main

    folder = photo_dump(tmp_path, samples, 8)
    rows = [(f"P{n}", f"images/{n}.jpg") for n in range(8)]
    source = shop_dump(folder, rows)
    out = tmp_path / "out"
    common = [*COMMON, *NO_MODELS, "--source", source, "--output", str(out), "--records-per-shard", "3",
              "--run-date", "2026-08-01"]
    assert main(["nightly", *common]) == 0  # first night: nothing to reuse
    assert main(["nightly", *common]) == 0  # the same date again: its own rows are the previous run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reconciled"] and manifest["counts"]["images_reused"] == {"shop": 8}
    shop_dump(folder, rows[:6])  # two products gone from the dump
    assert main(["nightly", *common]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reconciled"] and manifest["counts"]["images_reused"] == {"shop": 6}
    assert manifest["counts"]["vanished_products"] == {"shop": 2}
    images = pd.read_parquet(out / "images")
    assert len(images) == 6 and set(images["reuse_status"]) == {"REUSED"}  # the partition was replaced


def test_a_rerun_that_may_reuse_most_images_runs_its_shard_passes_in_this_process(tmp_path, samples):
    from pipeline.job import check_writable

    folder = photo_dump(tmp_path, samples, 6)
    source = shop_dump(folder, [(f"P{n}", f"images/{n}.jpg") for n in range(6)])
    out = tmp_path / "out"
    args = [*COMMON, *NO_MODELS, "--source", source, "--output", str(out), "--records-per-shard", "2",
            "--run-date", "2026-08-01"]

    def sharded(argv: list[str]) -> list[bool]:
        """The real passes, in order, on the in-process DirectRunner; returns each pass's ``heavy``."""
        options = PipelineOptions(argv)
        config = RunConfig.from_options(options)
        check_writable(config.output)
        flags = []

        def run(build, *, heavy: bool) -> None:
            flags.append(heavy)
            p = beam.Pipeline(options=options)
            build(p)
            p.run().wait_until_finish()

        assert run_sharded(config, run)
        return flags

    first = sharded(args)  # split, 3 shards, 1 band pass, groups, 1 finish pass, commit
    assert first == [False, True, True, True, True, False, False, False]
    (folder / "images" / "0.jpg").write_bytes((folder / "images" / "1.jpg").read_bytes())  # one image changed
    again = sharded([*args, "--previous", str(out)])
    # shards in process, and fewer of them (REUSED_SHARD_FACTOR): split, 1 shard, 1 band pass, groups, finish, commit
    assert again == [False, False, True, False, False, False]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reconciled"] and manifest["counts"]["images_reused"] == {"shop": 5}
    assert manifest["counts"]["images_rescored"] == {"shop": 1}


def test_local_runs_use_the_fn_api_runner_and_other_runners_their_own():
    for runner in ([], ["--runner", "DirectRunner"], ["--runner", "FnApiRunner"]):
        chosen = local_runner(PipelineOptions([*runner, "--direct_num_workers", "2"]))
        assert isinstance(chosen, FnApiRunner)
    for runner in ("BundleBasedDirectRunner", "DataflowRunner"):
        assert local_runner(PipelineOptions(["--runner", runner])) is None


def test_no_pass_of_a_local_run_tries_beams_prism_runner(tmp_path, samples, caplog):
    """Beam's DirectRunner would first try Prism, downloading its binary from GitHub at run time."""
    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    folder = photo_dump(tmp_path, samples, 3)
    source = shop_dump(folder, [(f"P{n}", f"images/{n}.jpg") for n in range(3)])
    result = run_job([*COMMON, *NO_MODELS, "--source", source, "--output", str(tmp_path / "out"),
                      "--records-per-shard", "2"])  # every kind of pass: split, shards, bands, groups, finish, commit
    assert result.manifest["reconciled"] and result.manifest["counts"]["images"] == {"shop": 3}
    assert not [r.getMessage() for r in caplog.records if "prism" in r.getMessage().lower()]


def test_a_split_that_finds_one_shard_runs_one_pipeline(tmp_path, samples):
    folder = photo_dump(tmp_path, samples, 1)
    source = shop_dump(folder, [("P0", "images/0.jpg"), ("P1", "images/0.jpg")], padding=400)  # big lines
    result = run_job([*COMMON, *NO_MODELS, "--source", source, "--output", str(tmp_path / "out"),
                      "--records-per-shard", "5"])
    assert result.manifest["reconciled"] and result.manifest["counts"]["images"] == {"shop": 2}
    assert len(result.manifest["tables"]["images"]["files"]) == 1
    assert not (tmp_path / "out" / "_staging").exists()
