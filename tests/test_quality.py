"""Catalog quality in the products table: review reasons and priorities, primary image choice,
and the review table written by the pipeline (sorted by priority)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pipeline.aggregate import ProductCombineFn
from pipeline.product_rules import AggregateConfig
from pipeline.records import ImageRecord
from runners.cli import main
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


def test_low_confidence_alone_puts_nothing_in_the_queue():
    weak = product([image(cat=(0.3, 0.4, 0.3), gender=(0.4, 0.35, 0.25), person=0.55)])
    assert weak.category == "JEANS" and (weak.needs_review, weak.review_tier) == (False, None)
    unlabelled = product([image(cat=(0.3, 0.4, 0.3), retailer_cat=None, rule="MISSING")])
    assert unlabelled.review_reasons == ("RETAILER_CATEGORY_MISSING",)
    assert (unlabelled.review_tier, unlabelled.review_tier_name) == (3, "NO_RETAILER_LABEL")
    assert unlabelled.review_priority == pytest.approx(0.4)  # the model's score: how likely its proposal is right
    out_of_scope = product([image(retailer_cat=None, rule="OUT_OF_SCOPE")])  # the retailer said so: usable
    assert not out_of_scope.needs_review and out_of_scope.category_agreement == "RETAILER_MISSING"


def test_a_likely_wrong_label_is_flagged_with_its_error_probability_and_thresholds_per_retailer():
    sure = product([image(cat=(0.99, 0.005, 0.005))])  # model DRESSES, retailer JEANS (+ SKINNY_JEANS) at 0.01
    assert sure.category_agreement == "DISAGREE" and sure.category_error_probability > 0.8
    assert sure.review_reasons == ("CATEGORY_DISAGREE",) and sure.review_tier_name == "LABEL_ERROR"
    assert sure.review_priority == pytest.approx(sure.category_error_probability)
    unsure = product([image(cat=(0.7, 0.25, 0.05))])  # JEANS + SKINNY_JEANS 0.3: plausible
    assert unsure.category_agreement == "DISAGREE" and unsure.category_error_probability < 0.5
    assert not unsure.needs_review
    lenient = AggregateConfig(review_thresholds=(("shop", "category", 0.05), ("*", "category", 0.9)))
    assert product([image(cat=(0.7, 0.25, 0.05))], lenient).review_reasons == ("CATEGORY_DISAGREE",)
    assert not product([image(cat=(0.7, 0.25, 0.05))], lenient, retailer="other").needs_review  # "*": 0.9
    sloppy = product([image(cat=(0.7, 0.25, 0.05))], AggregateConfig(error_rates=(("shop", "category", 0.5),)))
    assert sloppy.category_error_probability > unsure.category_error_probability
    with pytest.raises(ValueError, match="field must be one of"):
        AggregateConfig(review_thresholds=(("*", "person", 0.5),))


def test_several_flagged_labels_combine_into_the_chance_that_one_is_wrong():
    both = product([image(cat=(0.99, 0.005, 0.005), gender=(0.001, 0.998, 0.001))])  # retailer FEMALE
    assert both.review_reasons == ("CATEGORY_DISAGREE", "GENDER_DISAGREE")
    expected = 1 - (1 - both.category_error_probability) * (1 - both.gender_error_probability)
    assert both.review_priority == pytest.approx(expected, abs=1e-4)


def test_unmapped_retailer_category_and_images_that_disagree():
    p = product([image(1, retailer_cat=None, rule="UNMAPPED")])
    assert p.review_reasons == ("RETAILER_CATEGORY_UNMAPPED",) and p.review_priority == 0.9
    # One image is very sure of DRESSES (the cumulative max), two others say JEANS.
    split = product([image(1, cat=(0.97, 0.02, 0.01), retailer_cat="DRESSES"), image(2, retailer_cat="DRESSES"),
                     image(3, retailer_cat="DRESSES")])
    assert split.category == "DRESSES" and split.image_vote_share == pytest.approx(1 / 3, abs=1e-4)
    assert split.review_reasons == ("IMAGES_DISAGREE",) and split.review_priority == pytest.approx(2 / 3, abs=1e-4)
    assert split.review_tier_name == "MIXED_IMAGES"


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


def test_the_review_table_is_written_in_queue_order_and_counted(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--output", str(out), "--progress-interval", "0", "--review-threshold", "category=0.2",
                 "--review-threshold", "asos:gender=0.99", "--label-error-rate", "zalando:gender=0.01"]) == 0
    products = pd.read_parquet(out / "products")
    review = pd.read_parquet(out / "review")
    assert len(review) == int(products["needs_review"].sum()) > 0
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert sum(manifest["counts"]["needs_review"].values()) == len(review)
    assert sum(n for tiers in manifest["counts"]["review_tiers"].values() for n in tiers.values()) == len(review)
    for path in (out / "review").rglob("*.parquet"):
        order = list(zip(*(pd.read_parquet(path)[c] for c in ("review_tier", "review_priority"))))
        assert order == sorted(order, key=lambda tier_priority: (tier_priority[0], -tier_priority[1]))
    flagged = products[products.review_reasons.map(lambda r: "CATEGORY_DISAGREE" in r)]
    assert (flagged.category_error_probability >= 0.2).all() and (flagged.category_agreement == "DISAGREE").all()
    asos = products[products.retailer.astype(str) == "asos"]
    assert not asos.review_reasons.map(lambda r: "GENDER_DISAGREE" in r).any()  # asos: 0.99
    assert products["primary_image_uri"].notna().all()
    assert main(["run", "--output", str(out), "--review-threshold", "category:0.5"]) == 2
    assert main(["run", "--output", str(out), "--label-error-rate", "person=0.1"]) == 2


SWAPS = {"200000": "Shoes, Boots & Trainers", "200018": "Caps & Hats", "200004": "Dresses", "200025": "Skirts",
         "200014": "Caps & Hats", "200022": "Shoes, Boots & Trainers"}  # far from what the photos show


def test_a_real_run_finds_injected_label_errors_at_the_top_of_the_queue(tmp_path):
    import json

    from pipeline.source_config import samples_dir

    samples = samples_dir()
    dump = tmp_path / "asos.jsonl"
    with open(samples / "asos.jsonl", encoding="utf-8") as src, dump.open("w", encoding="utf-8") as out:
        for line in src:
            try:
                record = json.loads(line)
            except ValueError:
                out.write(line)  # the sample's malformed lines stay as they are
                continue
            key = str(record["id"])
            if key in SWAPS:
                record["productType"]["name"] = SWAPS[key]
            record["images"] = [{**i, "url": str(samples / i["url"]) if "://" not in i["url"] else i["url"]}
                                for i in record.get("images", [])]
            out.write(json.dumps(record) + "\n")
    output = tmp_path / "out"
    assert main(["run", "--asos", str(dump), "--allowed-root", str(samples), "--output", str(output),
                 "--progress-interval", "0"]) == 0
    review = pd.read_parquet(output / "review").sort_values(["review_tier", "review_priority"],
                                                           ascending=[True, False])
    flagged = {p for p, r in zip(review.product_id, review.review_reasons) if "CATEGORY_DISAGREE" in r}
    assert len(flagged & set(SWAPS)) >= len(SWAPS) - 1, flagged  # found
    assert len(flagged - set(SWAPS)) <= 2, flagged  # the sample's own mislabelled shorts, at most one more
    errors = review[review.review_tier_name == "LABEL_ERROR"]
    first = errors[errors.review_reasons.map(lambda r: "CATEGORY_DISAGREE" in r)].head(len(SWAPS))
    assert first.product_id.isin(set(SWAPS)).mean() >= 0.8  # and ranked first
    assert (errors.review_priority >= 0.5).all() and errors.review_priority.is_monotonic_decreasing
