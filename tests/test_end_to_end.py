"""The whole foundation pipeline on the shipped samples: Parquet read back, counts, categories."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.build import build_pipeline
from pipeline.options import RunConfig

# The category every retailer's sample vocabulary must land on, per the photo's real label.
EXPECTED_NODE = {
    "T-Shirt": "T_SHIRTS", "Longsleeve": "TOPS", "Pants": "TROUSERS", "Shoes": "SHOES", "Shirt": "SHIRTS",
    "Dress": "DRESSES", "Outwear": "OUTERWEAR", "Shorts": "SHORTS", "Hat": "HATS", "Skirt": "SKIRTS",
    "Polo": "POLO_SHIRTS", "Blazer": "BLAZERS", "Hoodie": "HOODIES_SWEATSHIRTS", "Blouse": "BLOUSES",
}


def run(output: Path, run_date: str = "2026-01-02", extra: list[str] = ()):
    options = PipelineOptions(["--output", str(output), "--run_date", run_date, *extra])
    config = RunConfig.from_options(options)
    with TestPipeline(options=options) as p:
        outputs = build_pipeline(p, config)
        assert_that(outputs.manifest | "Reconciled" >> beam.Map(lambda m: m["reconciled"]),
                    equal_to([True]), label="reconciled")
    return config


def labels_from_provenance(samples: Path) -> dict[str, str]:
    rows = re.findall(r"^\| (\S+\.jpg) \| ([^|]+) \| (\w+) \|$", (samples / "README.md").read_text(), re.M)
    return {name: label.strip() for name, label, _ in rows}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = run(out)
    return out, config


def test_images_table_reads_back_with_partition_columns(sample_run):
    out, _ = sample_run
    images = pd.read_parquet(out / "images")
    assert {"run_date", "retailer"} <= set(images.columns)
    assert set(images["retailer"].astype(str)) == {"zalando", "asos", "farfetch"}
    assert set(images["run_date"].astype(str)) == {"2026-01-02"}
    assert not images.duplicated(["retailer", "product_id", "image_uri"]).any()
    assert images["image_uri"].map(lambda u: Path(u).is_file()).all()


def test_images_were_fetched_and_decoded(sample_run):
    out, _ = sample_run
    images = pd.read_parquet(out / "images")
    assert (images["image_format"] == "JPEG").all()
    assert (images["image_width"] >= 256).all() and (images["image_height"] >= 256).all()  # short side 256
    sizes = images["image_uri"].map(lambda u: Path(u).stat().st_size)
    assert (images["image_bytes"] == sizes).all()
    assert images["image_sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert (images["fetch_attempts"] == 1).all() and images["http_status"].isna().all()  # local files
    assert (images["fetch_ms"] >= 0).all()


def test_counts_reconcile_with_the_manifest_and_the_files(sample_run, samples):
    out, config = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == config.run_id and manifest["reconciled"] is True
    assert manifest["engine"] == config.inference.engine == "onnxruntime"  # the shipped exports' model.onnx
    images = pd.read_parquet(out / "images")
    dead = pd.read_parquet(out / "dead_letter")
    counts = manifest["counts"]
    for retailer in ("zalando", "asos", "farfetch"):
        n_img = int((images["retailer"] == retailer).sum())
        n_dead = int((dead["retailer"] == retailer).sum())
        assert counts["images"][retailer] == n_img
        assert counts["dead_letter"][retailer] == n_dead
        assert counts["records_in"][retailer] == n_img + n_dead + counts["duplicates"][retailer]
    # Independent count of what the Zalando dump holds: images of well-formed articles.
    expected = 0
    for line in (samples / "zalando.jsonl").read_text().splitlines():
        try:
            expected += len(json.loads(line)["media"]["images"])
        except (json.JSONDecodeError, KeyError):
            pass
    assert counts["images"]["zalando"] == expected
    # Farfetch size variants share their images: every repeated (group, image) pair is a duplicate.
    pairs = []
    with open(samples / "farfetch.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row.get("image_link"):
                links = [row["image_link"]] + [x for x in (row["additional_image_link"] or "").split(",") if x]
                pairs += [(row["item_group_id"], link) for link in links]
    ns = {"g": "http://base.google.com/ns/1.0"}
    for item in ET.parse(samples / "farfetch.xml").getroot().iter("item"):
        links = [e.text for e in item.findall("g:image_link", ns) + item.findall("g:additional_image_link", ns)]
        pairs += [(item.findtext("g:item_group_id", namespaces=ns), link) for link in links]
    assert counts["duplicates"]["farfetch"] == len(pairs) - len(set(pairs)) > 0


def test_every_farfetch_variant_id_is_in_the_products_or_the_dead_letters(sample_run, samples):
    """Variants that share images are de-duplicated into their product; their ids stay findable."""
    out, _ = sample_run
    products = pd.read_parquet(out / "products")
    farfetch = products[products["retailer"] == "farfetch"]
    listed = {(row.product_id, v) for row in farfetch.itertuples() for v in row.variant_ids}
    expected = set()
    with open(samples / "farfetch.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row.get("id") and row.get("image_link"):
                expected.add((row["item_group_id"] or row["id"], row["id"]))
    ns = {"g": "http://base.google.com/ns/1.0"}
    for item in ET.parse(samples / "farfetch.xml").getroot().iter("item"):
        expected.add((item.findtext("g:item_group_id", namespaces=ns), item.findtext("g:id", namespaces=ns)))
    shared = {(g, v) for g, v in expected if sum(g == other for other, _ in expected) > 1}
    assert shared, "the samples hold variants that share a product"
    assert listed == expected
    # Each product's image rows are fewer than its variants' images: the de-duplicated ones are listed too.
    assert (farfetch["variant_ids"].map(len) > 1).any()


def test_mapped_categories_match_the_photos_real_labels(sample_run, samples):
    out, _ = sample_run
    labels = labels_from_provenance(samples)
    images = pd.read_parquet(out / "images")
    in_scope = images[images["category_rule"] != "OUT_OF_SCOPE"]
    assert len(in_scope) > 90
    for row in in_scope.itertuples():
        label = labels[Path(row.image_uri).name]
        assert row.category == EXPECTED_NODE[label], (row.retailer, row.product_id, label, row.category)
    assert images["gender"].notna().all() and images["age_group"].notna().all()


def test_dead_letter_rows_say_why(sample_run):
    out, _ = sample_run
    dead = pd.read_parquet(out / "dead_letter")
    got = sorted(zip(dead["retailer"].astype(str), dead["reason"]))
    assert got == [("asos", "FORBIDDEN_URI"), ("farfetch", "MALFORMED_ROW"),
                   ("zalando", "MALFORMED_JSON"), ("zalando", "NO_IMAGES")]
    assert dead["message"].str.len().gt(0).all() and dead["source_line"].gt(0).all()


def test_rerun_of_the_same_date_replaces_its_partitions(tmp_path):
    run(tmp_path, "2026-03-01", ["--asos", str(Path(__file__).parents[1] / "pipeline/samples/asos.jsonl")])
    first = pd.read_parquet(tmp_path / "images")
    run(tmp_path, "2026-03-01", ["--asos", str(Path(__file__).parents[1] / "pipeline/samples/asos.jsonl")])
    again = pd.read_parquet(tmp_path / "images")
    assert len(again) == len(first) > 0
    run(tmp_path, "2026-03-02", ["--asos", str(Path(__file__).parents[1] / "pipeline/samples/asos.jsonl")])
    both = pd.read_parquet(tmp_path / "images")
    assert len(both) == 2 * len(first)
    assert sorted(set(both["run_date"].astype(str))) == ["2026-03-01", "2026-03-02"]
    assert not (tmp_path / "_staging").exists() or not any((tmp_path / "_staging").iterdir())
    assert len(list((tmp_path / "manifests").glob("run_date=*/*.json"))) == 3
