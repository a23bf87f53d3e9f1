"""From the sample dumps through tiny real TF models to images + products Parquet, read back."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402

from pipeline.build import build_pipeline  # noqa: E402
from pipeline.label_quality import Verdict  # noqa: E402
from pipeline.options import ConfigError, RunConfig  # noqa: E402
from tests.test_inference import export_tiny  # noqa: E402

CATEGORIES = ["T_SHIRTS", "TROUSERS", "DRESSES", "SKIRTS", "SHOES", "HATS", "OUTERWEAR"]


@pytest.fixture(scope="module")
def enriched(tmp_path_factory):
    root = tmp_path_factory.mktemp("enrich")
    paths = {"person": export_tiny(root / "person", "person", ["PRODUCT", "PERSON"]).path,
             "category": export_tiny(root / "category", "category", CATEGORIES).path,
             "gender": export_tiny(root / "gender", "gender", ["FEMALE", "MALE", "UNISEX"]).path}
    out = root / "out"
    options = PipelineOptions(["--output", str(out), "--run-date", "2026-05-05", "--min-category-confidence", "0.2",
                               "--models", "none", *[f"--{task}-model={path}" for task, path in paths.items()]])
    config = RunConfig.from_options(options)
    with TestPipeline(options=options) as p:
        build_pipeline(p, config)
    return out, config


def test_models_set_the_image_size(enriched):
    _, config = enriched
    assert config.decode.size == 32 and {m.task for m in config.models} == {"person", "category", "gender"}


def test_images_carry_scores_and_the_vocabulary_is_in_the_metadata(enriched):
    out, _ = enriched
    images = pd.read_parquet(out / "images")
    assert len(images) == 101
    assert images["category_scores"].map(len).eq(len(CATEGORIES)).all()
    assert images["gender_scores"].map(len).eq(3).all() and images["person_score"].between(0, 1).all()
    assert images["category_top3"].map(len).eq(3).all()
    assert (images["predicted_category"] == images["category_top3"].map(lambda t: t[0])).all()
    assert images["category_model"].str.startswith("category-custom_cnn").all()
    part = next((out / "images").rglob("*.parquet"))
    meta = pq.read_schema(part).metadata
    assert json.loads(meta[b"fashion_enrich.category_classes"]) == CATEGORIES


def test_products_aggregate_every_product_once_and_compare_with_the_retailer(enriched):
    out, _ = enriched
    images = pd.read_parquet(out / "images")
    products = pd.read_parquet(out / "products")
    assert len(products) == images.groupby(["retailer", "product_id"], observed=True).ngroups
    assert products["image_count"].sum() == len(images)
    allowed = {v.value for v in Verdict}
    assert set(products["category_agreement"]) <= allowed and set(products["gender_agreement"]) <= allowed
    # Cumulative max: a product's vector is the element-wise max of its images' vectors.
    merged = images.groupby(["retailer", "product_id"], observed=True)["category_scores"].apply(
        lambda s: [max(v[i] for v in s) for i in range(len(CATEGORIES))])
    for row in products.itertuples():
        if not row.category_person_filtered:
            assert list(row.category_scores) == pytest.approx(merged[(row.retailer, row.product_id)], abs=1e-6)
    low = products[products["category_low_confidence"]]
    assert low["category"].isna().all() and (low["category_score"] < 0.2).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reconciled"] and sum(manifest["counts"]["products"].values()) == len(products)
    assert manifest["models"]["category"]["classes"] == CATEGORIES


def test_model_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="not an exported model"):
        RunConfig.from_options(PipelineOptions(["--output", str(tmp_path), "--category-model", str(tmp_path)]))
