"""Carrying unchanged products forward in sharded incremental runs (pipeline/carry.py): real Beam
pipelines over real work files, local images and the loopback HTTP server, Parquet read back.

A product is carried (its stored rows reused without the per-image stages) only when it is
stored whole, reusable and unchanged; everything else goes through the per-image stages; and a
sharded rerun that carries writes what one pipeline writes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.aggregate import ProductCombineFn
from pipeline.carry import CarryForward, may_carry
from pipeline.images.config import FetchConfig
from pipeline.images.validators import file_validator
from pipeline.job import check_writable, run_job
from pipeline.options import RunConfig
from pipeline.records import ImageRecord
from pipeline.sharded import run_sharded
from pipeline.shardfiles import BUCKETS, WriteBuckets, record_product, stored_product
from pipeline.taxonomy import apply_mapping
from schemas.mapping import parse_mapping
from schemas.taxonomy import load_taxonomy
from tests.imageserver import ImageServer, jpeg
from tests.test_sharded import COMMON, assert_same_rows, photo_dump, shop_dump, tables

KEY = '{"models":{}}'


def record(product_id: str, uri: str, line: int = 1, **fields) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=product_id, image_uri=uri, image_position=0,
                       source_file="shop.jsonl", source_line=line, raw_category=("dresses",), **fields)


def stored(today: ImageRecord, validator: str | None, key: str = KEY) -> ImageRecord:
    """The previous run's row of ``today``'s image (made with ``key``), from a different dump line."""
    return today.__class__(**{**today.__dict__, "source_line": today.source_line + 100, "image_validator": validator,
                              "enriched_with": key, "image_phash": "ab" * 18, "image_width": 120,
                              "dominant_colour": "RED", "reuse_status": "NEW"})


def test_may_carry_only_products_stored_whole_and_reusable():
    a, b = record("P", "a.jpg"), record("P", "b.jpg")
    assert may_carry([a, b], [stored(b, "v"), stored(a, "v")], KEY)
    assert not may_carry([a, b], [stored(a, "v")], KEY)  # an image new today (or dead-lettered last time)
    assert not may_carry([a], [stored(a, "v"), stored(b, "v")], KEY)  # an image gone from the product
    assert not may_carry([a, a], [stored(a, "v")], KEY)  # a duplicate record to count and drop
    assert not may_carry([a], [stored(a, None)], KEY)  # no validator to check
    assert not may_carry([a], [stored(a, "v", key='{"models":{"category":"other@1"}}')], KEY)  # another model


def test_carry_forward_takes_unchanged_products_whole(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("same", "changed", "dup", "new", "gone"):
        (folder / f"{name}.jpg").write_bytes(jpeg())

    def validator(name: str) -> str:
        stat = (folder / f"{name}.jpg").stat()
        return file_validator(stat.st_size, stat.st_mtime_ns)

    with ImageServer() as server:
        server.versioned["/same.jpg"] = ('"a"', None, jpeg(color=(1, 2, 3)))
        web = server.url("/same.jpg")
        uri = {name: str(folder / f"{name}.jpg") for name in ("same", "changed", "dup", "new", "gone")}
        today = [record("SAME", uri["same"], 1, variant_id="S-1"), record("WEB", web, 2),
                 record("CHANGED", uri["changed"], 3), record("DUP", uri["dup"], 4), record("DUP", uri["dup"], 5),
                 record("NEW", uri["new"], 6)]
        previous = [stored(today[0], validator("same")), stored(today[1], 'etag:"a"'),
                    stored(today[2], validator("changed")), stored(today[3], validator("dup")),
                    stored(record("GONE", uri["gone"]), validator("gone"))]
        stat = (folder / "changed.jpg").stat()
        os.utime(folder / "changed.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # changed since
        work = tmp_path / "work"
        with TestPipeline() as p:
            _ = (p | "Records" >> beam.Create(today)
                 | "SpillRecords" >> WriteBuckets(str(work / "records"), record_product))
            _ = (p | "Previous" >> beam.Create([("2026-08-01", s) for s in previous])
                 | "SpillPrevious" >> WriteBuckets(str(work / "previous"), stored_product))

        mapping = parse_mapping({"retailer": "shop", "source": {"format": "jsonl", "product_id": "sku",
                                                                "image_uri": "url"},
                                 "category": {"exact": {"dresses": "DRESSES"}}})
        p = TestPipeline()
        out = p | CarryForward(str(work), tuple(range(BUCKETS)), mappings={"shop": mapping},
                               taxonomy_path=None, key=KEY,
                               fetch=FetchConfig(allowed_roots=(str(folder),), allow_private_addresses=True),
                               fn=ProductCombineFn((), ()), run_date="2026-08-02", shards_per_partition=1)
        expected_images = []
        for found, row in zip([today[0], today[1]], previous):
            mapped = apply_mapping(found, mapping, load_taxonomy(None))
            assert mapped.category == "DRESSES"
            expected_images.append((found.product_id, found.source_line, "DRESSES", row.image_phash, "REUSED"))
        assert_that(out["tables"] | beam.MapTuple(lambda file, table: [(file, row) for row in table.to_pylist()])
                    | beam.FlatMap(lambda pairs: pairs)
                    | beam.MapTuple(lambda file, r: (r["product_id"], r["source_line"], r["category"],
                                                      r["image_phash"], r["reuse_status"])),
                    equal_to(expected_images), label="CarriedImages")
        assert_that(out["tables"] | beam.MapTuple(lambda file, table: file) | beam.Distinct(),
                    equal_to([("run_date=2026-08-02/retailer=shop", 0)]), label="OneFile")  # a table per bucket
        assert_that(out["counts"] | beam.FlatMap(lambda pairs: pairs) | beam.CombinePerKey(sum)
                    | beam.Filter(lambda kv: kv[0][0] in ("images", "images_reused", "previous_rows")),
                    equal_to([(("images", "shop"), 2), (("images_reused", "shop"), 2),
                              (("previous_rows", "shop", "2026-08-01"), 2)]), label="Counts")
        assert_that(out["records"] | beam.Map(lambda r: (r.product_id, r.source_line)),
                    equal_to([("CHANGED", 3), ("DUP", 4), ("DUP", 5), ("NEW", 6)]), label="PassedOn")
        assert_that(out["previous"] | beam.MapTuple(lambda run_date, s: s.product_id),
                    equal_to(["CHANGED", "DUP", "GONE"]), label="PreviousPassedOn")
        assert_that(out["products"] | beam.Map(lambda r: (r.product_id, r.image_count, r.variant_ids, r.category)),
                    equal_to([("SAME", 1, ("S-1",), None), ("WEB", 1, (), None)]),  # no models: no predicted category
                    label="CarriedProducts")
        assert_that(out["members"], equal_to([("shop/SAME", "ab" * 18), ("shop/WEB", "ab" * 18)]), label="Members")
        result = p.run()
        result.wait_until_finish()
        assert server.bodies_sent["/same.jpg"] == 0  # the check was a conditional request: a 304, no body
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == "fashion_enrich.carry"}
    assert counters == {"carried_products": 2, "carried_images": 2, "passed_on_products": 3}


def _sharded_counters(argv: list[str]) -> Counter:
    """A sharded run on the in-process DirectRunner; Beam counters summed over its passes, how
    many passes ran (``passes``) and how many of them asked for the worker processes (``heavy_passes``)."""
    options = PipelineOptions(argv)
    config = RunConfig.from_options(options)
    check_writable(config.output)
    counters: Counter = Counter()

    def run(build, *, heavy: bool) -> None:
        counters["passes"] += 1
        counters["heavy_passes"] += heavy
        p = beam.Pipeline(options=options)
        build(p)
        result = p.run()
        result.wait_until_finish()
        for found in result.metrics().query()["counters"]:
            counters[found.key.metric.name] += found.committed or 0

    assert run_sharded(config, run)
    return counters


def _first_run(tmp_path, args: list[str]) -> None:
    """One pipeline's run, copied as the previous output of both reruns of :func:`_rerun_both`."""
    assert run_job([*args, "--output", str(tmp_path / "first"), "--records-per-shard", "0"]).manifest["reconciled"]
    for name in ("whole", "sharded"):
        shutil.copytree(tmp_path / "first", tmp_path / name)


def _rerun_both(tmp_path, args: list[str]):
    """The rerun as one pipeline and sharded (2 records per shard), each on its copy of the first
    run: (one pipeline's manifest, the sharded run's counters, its manifest, both outputs' tables)."""
    whole = run_job([*args, "--output", str(tmp_path / "whole"), "--previous", str(tmp_path / "whole"),
                     "--records-per-shard", "0"]).manifest
    counters = _sharded_counters([*args, "--output", str(tmp_path / "sharded"), "--previous",
                                  str(tmp_path / "sharded"), "--records-per-shard", "2"])
    sharded = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    return whole, counters, sharded, tables(tmp_path / "whole"), tables(tmp_path / "sharded")


def _assert_same_tables(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for table in a:
        assert_same_rows(a[table], b[table])


@pytest.mark.parametrize("models", [[], ["--models", "none"]], ids=["default-models", "no-models"])
def test_a_sharded_rerun_that_carries_writes_what_one_pipeline_writes(tmp_path, samples, models):
    folder = photo_dump(tmp_path, samples, 8)
    # P3 leaves the dump (first line: every other line moves up), P4 has a duplicate record, P5's
    # image is missing (a dead letter both nights), P6's file changes, P7 is new.
    day1 = [("P3", "images/4.jpg"), ("P0", "images/0.jpg"), ("P1", "images/1.jpg"), ("P1", "images/2.jpg"),
            ("P2", "images/3.jpg"), ("P4", "images/5.jpg"), ("P4", "images/5.jpg"), ("P5", "images/missing.jpg"),
            ("P6", "images/6.jpg")]
    source = shop_dump(folder, day1)
    args = [*COMMON, *models, "--source", source, "--run-date", "2026-08-02"]
    _first_run(tmp_path, args)
    (folder / "images" / "6.jpg").write_bytes((folder / "images" / "7.jpg").read_bytes())
    shop_dump(folder, day1[1:] + [("P7", "images/7.jpg")])

    whole, counters, sharded, a, b = _rerun_both(tmp_path, args)
    assert counters["carried_products"] == 3 and counters["carried_images"] == 4  # P0, P1 (two images), P2
    assert counters["passed_on_products"] == 4  # P4, P5, P6, P7 (P3 had only previous rows)
    assert whole["reconciled"] and sharded["reconciled"]
    assert whole["counts"]["images_reused"] == {"shop": 5}  # P4 too, through the per-image stages
    assert whole["counts"]["vanished_products"] == {"shop": 1}
    assert sharded["counts"] == whole["counts"] and sharded["reconciliation"] == whole["reconciliation"]
    assert sharded["previous"]["partitions"] == whole["previous"]["partitions"] == {"shop": {"2026-08-02": 7}}
    assert {"images", "products", "dead_letter"} <= set(a)
    _assert_same_tables(a, b)
    grouped = b["products"].set_index("product_id").loc[["P6", "P7"]]  # P6's new photo is P7's: computed today
    assert grouped["duplicate_group"].tolist() == ["shop/P6"] * 2 and counters["kept_group_products"] == 0
    carried = b["images"].set_index("product_id").loc[["P0", "P2"]]
    assert carried["source_line"].tolist() == [1, 4]  # today's lines, not the stored ones (2, 5)


def test_a_sharded_rerun_where_every_photo_changed_writes_what_one_pipeline_writes(tmp_path, samples):
    folder = photo_dump(tmp_path, samples, 8)
    args = [*COMMON, "--models", "none", "--run-date", "2026-08-02",
            "--source", shop_dump(folder, [(f"P{n}", f"images/{n}.jpg") for n in range(8)])]
    _first_run(tmp_path, args)
    for photo in (folder / "images").glob("*.jpg"):  # every file replaced since (same bytes, a later mtime)
        stat = photo.stat()
        os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    whole, counters, sharded, a, b = _rerun_both(tmp_path, args)
    # every record has a reusable previous row, so the shard passes run in this process (the split pass
    # does not check files; no band pass either: the same pixels keep the groups); every image then fails
    # its check and takes the per-image stages (benchmarks/README.md: 113.6 % of a full run at 100,000)
    assert counters["carried_products"] == 0 and counters["passed_on_products"] == 8
    assert counters["heavy_passes"] == 0
    assert whole["counts"]["images_rescored"] == {"shop": 8} and not any(whole["counts"]["images_reused"].values())
    assert sharded["reconciled"] and sharded["counts"] == whole["counts"]
    _assert_same_tables(a, b)
