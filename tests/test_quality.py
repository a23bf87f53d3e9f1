"""Catalog quality in the products table: review reasons and priorities, primary image choice,
and the review table written by the pipeline (sorted by priority)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pipeline.aggregate import ProductCombineFn
from pipeline.cli import main
from pipeline.product_rules import AggregateConfig
from pipeline.records import ImageRecord
from tests.combine import combine_in_parts

CATS = ("DRESSES", "JEANS", "SKINNY_JEANS")
GENDERS = ("FEMALE", "MALE", "UNISEX")


def image(n=1, cat=(0.05, 0.9, 0.05), gender=(0.9, 0.05, 0.05), person=0.02, retailer_cat="JEANS",
          retailer="shop", rule="EXACT", primary=None) -> ImageRecord:
    top = CATS[max(range(3), key=lambda i: cat[i])]
    return ImageRecord(retailer=retailer, product_id="p", image_position=n, image_uri=f"/p/{n}.jpg",
                       source_file="f", source_line=n, category=retailer_cat, gender="FEMALE", category_rule=rule,
                       is_primary=primary, category_scores=cat, predicted_category=top, gender_scores=gender,
                       person_score=person)


def product(images, cfg=AggregateConfig(), retailer="shop"):
    fn = ProductCombineFn(CATS, GENDERS, cfg)
    fn.setup()
    acc = fn.create_accumulator()
    for img in images:
        acc = fn.add_input(acc, img)
    return fn.to_product((retailer, "p"), acc)


def test_a_confident_agreeing_product_needs_no_review():
    p = product([image(1), image(2)])
    assert (p.needs_review, p.review_reasons, p.review_priority) == (False, (), None)
    assert p.image_vote_share == 1.0


def test_low_confidence_with_per_retailer_thresholds():
    weak = [image(cat=(0.3, 0.4, 0.3))]
    p = product(weak)
    assert p.review_reasons == ("LOW_CONFIDENCE",) and p.review_priority == pytest.approx(0.6)
    lenient = AggregateConfig(review_thresholds=(("shop", "category", 0.35), ("*", "category", 0.9)))
    assert not product(weak, lenient).needs_review  # the retailer's own threshold wins over "*"
    assert product(weak, lenient, retailer="other").review_reasons == ("LOW_CONFIDENCE",)
    uncertain_person = [image(person=0.55)]  # max(p, 1 - p) = 0.55 < 0.8
    assert product(uncertain_person).review_reasons == ("LOW_CONFIDENCE",)
    with pytest.raises(ValueError, match="field must be one of"):
        AggregateConfig(review_thresholds=(("*", "colour", 0.5),))


def test_confident_disagreement_ranks_above_a_hesitant_one():
    sure = product([image(cat=(0.95, 0.03, 0.02))])  # model DRESSES at 0.95, retailer JEANS
    unsure = product([image(cat=(0.55, 0.40, 0.05))])
    assert sure.review_reasons == ("MODEL_RETAILER_DISAGREE",) and sure.review_priority == pytest.approx(0.95)
    assert unsure.review_priority == pytest.approx(0.55) and unsure.review_priority < sure.review_priority


def test_unmapped_retailer_category_and_images_that_disagree():
    p = product([image(1, retailer_cat=None, rule="UNMAPPED")])
    assert p.review_reasons == ("RETAILER_CATEGORY_UNMAPPED",) and p.review_priority == 0.5
    # One image is very sure of DRESSES (the cumulative max), two others say JEANS.
    split = product([image(1, cat=(0.97, 0.02, 0.01), retailer_cat="DRESSES"), image(2, retailer_cat="DRESSES"),
                     image(3, retailer_cat="DRESSES")])
    assert split.category == "DRESSES" and split.image_vote_share == pytest.approx(1 / 3, abs=1e-4)
    assert split.review_reasons == ("IMAGES_DISAGREE",) and split.review_priority == pytest.approx(2 / 3, abs=1e-4)


def test_primary_image_rules():
    assert product([image(1), image(2, primary=True)]).primary_image_uri == "/p/2.jpg"  # declared
    best = product([image(1, cat=(0.1, 0.6, 0.3)), image(2, cat=(0.05, 0.9, 0.05)),
                    image(3, cat=(0.01, 0.98, 0.01), person=0.99)])  # the best score is a person shot
    assert (best.primary_image_uri, best.primary_image_rule) == ("/p/2.jpg", "BEST_PACKSHOT")
    persons = product([image(1, person=0.9, cat=(0.2, 0.7, 0.1)), image(2, person=0.95)])
    assert (persons.primary_image_uri, persons.primary_image_rule) == ("/p/2.jpg", "BEST_IMAGE")
    bare = product([dataclasses.replace(image(2), category_scores=(), predicted_category=None),
                    dataclasses.replace(image(1), category_scores=(), predicted_category=None)])
    assert (bare.primary_image_uri, bare.primary_image_rule) == ("/p/1.jpg", "FIRST_IMAGE")


def test_merging_partial_accumulators_gives_the_same_product():
    images = [image(1, cat=(0.97, 0.02, 0.01), primary=None), image(2), image(3, person=0.6),
              image(4, rule="UNMAPPED"), image(5, primary=True)]
    fn = ProductCombineFn(CATS, GENDERS, AggregateConfig())
    fn.setup()
    whole = product(images)
    for parts in (2, 3, 5):
        merged = combine_in_parts(fn, [images[i::parts] for i in range(parts)])
        assert fn.to_product(("shop", "p"), merged) == whole


def test_the_review_table_is_written_sorted_and_counted(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--output", str(out), "--progress-interval", "0", "--review-threshold", "category=0.6",
                 "--review-threshold", "asos:gender=0.99"]) == 0
    products = pd.read_parquet(out / "products")
    review = pd.read_parquet(out / "review")
    assert len(review) == int(products["needs_review"].sum()) > 0
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert sum(manifest["counts"]["needs_review"].values()) == len(review)
    for path in (out / "review").rglob("*.parquet"):
        priorities = pd.read_parquet(path)["review_priority"].tolist()
        assert priorities == sorted(priorities, reverse=True)
    asos = products[products.retailer.astype(str) == "asos"]
    assert asos[asos.gender_score < 0.99]["review_reasons"].map(lambda r: "LOW_CONFIDENCE" in r).all()
    assert products["primary_image_uri"].notna().all()
    assert main(["run", "--output", str(out), "--review-threshold", "category:0.5"]) == 2
