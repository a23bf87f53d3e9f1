"""Near-duplicate groups kept from the previous run (pipeline/kept_groups.py): real Beam pipelines,
real runs on sample photos, Parquet read back.

A sharded incremental run keeps the previous run's groups only when no member (product key,
perceptual hash) changed and its previous rows are the image files the previous run wrote; it
then writes the same groups as a run that computes them, and computes them after any change.
"""

from __future__ import annotations

import json
import shutil

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.grouping import BANDS, GROUPING_VERSION, MAX_BUCKET
from pipeline.images.features import NEAR_DUPLICATE_BITS
from pipeline.job import run_job
from pipeline.kept_groups import MemberChanges, all_exist, previous_group_files, previous_run
from pipeline.records import ImageRecord
from pipeline.reuse import previous_image_files
from tests.test_carry import _sharded_counters
from tests.test_sharded import COMMON, assert_same_rows, photo_dump, shop_dump, tables


def row(product_id: str, phash: str | None) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=product_id, image_uri=f"{product_id}.jpg", image_position=0,
                       source_file="shop.jsonl", source_line=1, image_phash=phash)


def test_member_changes_count_the_members_one_side_lacks():
    same = [row("A", "ab" * 18), row("B", "cd" * 18), row("B", "cd" * 18), row("C", None)]
    cases = [
        (same, same, 0),
        (same, same[:2] + same[3:], 1),  # one copy of B's hash fewer (a multiset, not a set)
        (same, [row("A", "ef" * 18), *same[1:]], 2),  # A's image changed: its new hash and its old one
        (same, same + [row("D", "ab" * 18)], 1),  # D vanished
        (same, [*same[:3], row("C", "12" * 18)], 1),  # C has a hash now (no image row without one counts)
        ([], [], 0),
    ]
    for previous, today, expected in cases:
        with TestPipeline() as p:
            inputs = {"today": p | "Today" >> beam.Create(today),
                      "previous": p | "Previous" >> beam.Create([("2026-08-01", r) for r in previous])}
            assert_that(inputs | MemberChanges(), equal_to([expected]))


def test_groups_are_kept_only_from_the_run_that_wrote_the_previous_rows(tmp_path, samples):
    folder = photo_dump(tmp_path, samples, 2)
    source = shop_dump(folder, [("P0", "images/0.jpg"), ("P1", "images/0.jpg"), ("P2", "images/1.jpg")])
    out = tmp_path / "out"
    assert run_job([*COMMON, "--models", "none", "--source", source, "--run-date", "2026-08-02",
                    "--output", str(out)]).manifest["reconciled"]
    products = sorted(str(p) for p in (out / "products").rglob("*.parquet"))
    run, files = previous_run(str(out)), previous_image_files(str(out), ("shop",))
    assert products and files and previous_group_files(str(out), run, files) == products and all_exist(products)
    # no rows of "other" last time either: the same files
    assert previous_group_files(str(out), run, previous_image_files(str(out), ("shop", "other"))) == products

    extra = str(tmp_path / "images" / "run_date=2026-08-02" / "retailer=shop" / "part-99999-other.parquet")
    assert previous_group_files(str(out), run, [*files, extra]) is None  # rows the previous run did not write
    assert previous_group_files(str(out), run, []) is None  # files it wrote that are not read (a retailer left)
    newer = files[0].replace("run_date=2026-08-02", "run_date=2026-08-03")
    assert previous_group_files(str(out), run, [newer]) is None  # a newer partition, written by another run
    assert not all_exist([*products, products[0] + ".gone"]) and all_exist([])

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["near_duplicates"] == GROUPING_VERSION
    (out / "manifest.json").write_text(json.dumps({**manifest, "versions": {**manifest["versions"],
                                                                              "near_duplicates": "0"}}))
    assert previous_run(str(out)) is None  # grouped otherwise
    (out / "manifest.json").unlink()
    assert previous_run(str(out)) is None  # no manifest: nothing to trust


def test_the_grouping_version_names_the_grouping_parameters():
    # A change to any of these changes the groups made from the same members: raise GROUPING_VERSION
    # with it (stored groups made otherwise are then not kept), and update this line.
    assert (BANDS, MAX_BUCKET, NEAR_DUPLICATE_BITS, GROUPING_VERSION) == (12, 500, 11, "1")


def test_a_sharded_rerun_keeps_unchanged_groups_and_computes_changed_ones(tmp_path, samples):
    folder = photo_dump(tmp_path, samples, 5)
    # P0 and P2 show the same photo, as do P1 and P4 (beside its own second one).
    day = [("P0", "images/0.jpg"), ("P1", "images/1.jpg"), ("P2", "images/0.jpg"), ("P3", "images/2.jpg"),
           ("P4", "images/1.jpg"), ("P4", "images/3.jpg"), ("P5", "images/4.jpg")]
    source = shop_dump(folder, day)
    args = [*COMMON, "--models", "none", "--source", source, "--run-date", "2026-08-02"]
    assert run_job([*args, "--output", str(tmp_path / "first"), "--records-per-shard", "0"]).manifest["reconciled"]
    for name in ("whole", "sharded"):
        shutil.copytree(tmp_path / "first", tmp_path / name)

    def rerun() -> tuple[dict, dict]:
        whole = run_job([*args, "--output", str(tmp_path / "whole"), "--previous", str(tmp_path / "whole"),
                         "--records-per-shard", "0"]).manifest
        counters = _sharded_counters([*args, "--output", str(tmp_path / "sharded"), "--previous",
                                      str(tmp_path / "sharded"), "--records-per-shard", "1"])
        sharded = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
        assert whole["reconciled"] and sharded["reconciled"] and sharded["counts"] == whole["counts"]
        a, b = tables(tmp_path / "whole"), tables(tmp_path / "sharded")
        assert a.keys() == b.keys()
        for table in a:
            assert_same_rows(a[table], b[table])
        groups = b["products"].set_index("product_id")[["duplicate_group", "duplicate_group_size"]]
        return counters, {k: (g, n) for k, (g, n) in groups.iterrows() if isinstance(g, str)}

    counters, groups = rerun()  # nothing changed
    assert counters["carried_products"] == 6 and counters["kept_group_products"] == 4
    # split, 2 shards (4 x 1 record, in process), kept groups, 1 finish pass (counted in the 2 shards, not the
    # 7 of one record the full run had), commit
    assert counters["passes"] == 6
    assert groups == {"P0": ("shop/P0", 2), "P2": ("shop/P0", 2), "P1": ("shop/P1", 2), "P4": ("shop/P1", 2)}

    (folder / "images" / "2.jpg").write_bytes((folder / "images" / "0.jpg").read_bytes())  # P3 now shows P0's photo
    counters, groups = rerun()
    assert counters["kept_group_products"] == 0 and counters["passes"] == 7  # a member changed: band + groups passes
    assert groups["P3"] == ("shop/P0", 3) and groups["P0"] == groups["P2"] == ("shop/P0", 3)

    shop_dump(folder, [r for r in day if r[0] != "P2"])  # P2 leaves the dump
    counters, groups = rerun()
    assert counters["kept_group_products"] == 0  # a vanished product's members changed the groups
    assert groups["P0"] == groups["P3"] == ("shop/P0", 2) and "P2" not in groups

    counters, groups = rerun()  # and the next unchanged night keeps them again (from a run that computed them)
    assert counters["kept_group_products"] == 4 and groups["P0"] == ("shop/P0", 2)
    counters, again = rerun()  # and from a run that kept them
    assert counters["kept_group_products"] == 4 and again == groups
