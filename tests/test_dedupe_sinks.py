"""DeduplicateImages and the Parquet sink (WriteTable) on real pipelines and files."""

from __future__ import annotations

import random

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dedupe import DUPLICATES, DeduplicateImages, _FirstAndCount
from pipeline.records import ImageRecord
from pipeline.sinks import WriteTable
from schemas.tables import IMAGES
from tests.combine import combine_in_parts


def rec(product: str, uri: str, line: int, retailer: str = "shop", source: str = "a.jsonl") -> ImageRecord:
    return ImageRecord(retailer=retailer, product_id=product, image_position=1, image_uri=uri,
                       source_file=source, source_line=line)


def test_first_occurrence_in_source_order_is_kept_and_the_rest_counted():
    records = [rec("p1", "u1", 5), rec("p1", "u1", 2), rec("p1", "u1", 9), rec("p1", "u2", 3),
               rec("p2", "u1", 4), rec("p1", "u1", 1, retailer="other")]
    with TestPipeline() as p:
        out = p | beam.Create(records) | DeduplicateImages()
        assert_that(out.unique | "U" >> beam.Map(lambda r: (r.retailer, r.product_id, r.image_uri, r.source_line)),
                    equal_to([("shop", "p1", "u1", 2), ("shop", "p1", "u2", 3), ("shop", "p2", "u1", 4),
                              ("other", "p1", "u1", 1)]), label="unique")
        assert_that(out[DUPLICATES] | "D" >> beam.Map(lambda d: (d.source_line, d.kept_source_line)),
                    equal_to([(5, 2), (9, 2)]), label="duplicates")


def test_combine_fn_matches_a_plain_python_reference_under_any_merge_order():
    rng = random.Random(7)
    fn = _FirstAndCount()
    for _ in range(50):
        records = [rec("p", "u", rng.randint(1, 30), source=rng.choice(["a", "b"])) for _ in range(rng.randint(1, 12))]
        expected = min(records, key=lambda r: r.order_key())
        rng.shuffle(records)
        cut = rng.randint(0, len(records))
        kept, dropped = fn.extract_output(combine_in_parts(fn, [records[:cut], records[cut:]]))
        assert kept.order_key() == expected.order_key()
        assert len(dropped) == len(records) - 1


def test_write_table_partitions_and_shards(tmp_path):
    records = [rec(f"p{i}", f"u{i}", i, retailer=("a" if i % 3 else "b")) for i in range(200)]
    with TestPipeline() as p:
        written = p | beam.Create(records) | WriteTable(IMAGES, run_date="2026-05-06", staging=str(tmp_path), shards=4)
        assert_that(written | beam.Map(lambda w: w.rows) | beam.CombineGlobally(sum), equal_to([200]), label="rows")
    files = sorted(tmp_path.rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"retailer=a", "retailer=b"}
    assert all(f.parent.parent.name == "run_date=2026-05-06" for f in files)
    assert 2 < len(files) <= 8
    tables = [pq.read_table(f) for f in files]
    assert sum(t.num_rows for t in tables) == 200
    assert all(t.schema.equals(IMAGES.schema, check_metadata=False) for t in tables)
    assert "retailer" not in tables[0].schema.names  # partition column lives in the path
    ids = [pid for t in tables for pid in t.column("product_id").to_pylist()]
    assert sorted(ids) == sorted(f"p{i}" for i in range(200))
