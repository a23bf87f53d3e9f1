"""Per-product cumulative max (pipeline/aggregate.py): hand-made vectors, a reference, a pipeline."""

from __future__ import annotations

import random
from dataclasses import replace

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.aggregate import AggregateProducts, ProductCombineFn
from pipeline.product_rules import AggregateConfig
from pipeline.records import ImageRecord
from tests.combine import combine_in_parts

CATS = ("DRESSES", "JEANS", "SKINNY_JEANS")
GENDERS = ("FEMALE", "MALE", "UNISEX")


def image(product="p", cat=(0.1, 0.2, 0.7), gender=(0.6, 0.3, 0.1), person=0.1, retailer_cat="JEANS",
          retailer_gender="FEMALE", n=0) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=product, image_position=n, image_uri=f"/{product}/{n}.jpg",
                       source_file="f", source_line=n, category=retailer_cat, gender=retailer_gender,
                       category_scores=tuple(cat), gender_scores=tuple(gender), person_score=person,
                       category_model="cat-1", gender_model="gen-1", person_model="per-1")


def product(images, cfg=AggregateConfig()):
    fn = ProductCombineFn(CATS, GENDERS, cfg)
    fn.setup()
    acc = fn.create_accumulator()
    for img in images:
        acc = fn.add_input(acc, img)
    return fn.to_product(("shop", images[0].product_id), fn.extract_output(acc))


def test_cumulative_max_over_images():
    p = product([image(cat=(0.6, 0.3, 0.1), n=1), image(cat=(0.1, 0.1, 0.8), n=2)])
    assert p.category_scores == (0.6, 0.3, 0.8)
    assert (p.category, p.category_score, p.image_count) == ("SKINNY_JEANS", 0.8, 2)
    assert p.category_path == "CLOTHING > JEANS > SKINNY_JEANS" and p.category_level2 == "JEANS"
    assert p.category_agreement == "PARENT_CHILD"  # retailer says JEANS, model SKINNY_JEANS
    assert (p.gender, p.gender_agreement) == ("FEMALE", "AGREE")
    assert (p.category_model, p.gender_model, p.person_model) == ("cat-1", "gen-1", "per-1")


def test_ties_go_to_the_first_class_and_single_images_are_their_own_product():
    p = product([image(cat=(0.4, 0.4, 0.2))])
    assert p.category == "DRESSES" and p.image_count == 1
    assert p.category_agreement == "WEAK_DISAGREE"  # DRESSES at 0.4: under the default class threshold


def test_person_filter_ignores_person_shots_when_packshots_exist():
    person = image(cat=(0.9, 0.05, 0.05), person=0.95, n=1)  # the model shot says DRESSES
    packshot = image(cat=(0.2, 0.7, 0.1), person=0.05, n=2)
    filtered = product([person, packshot])
    assert (filtered.category, filtered.category_person_filtered, filtered.person_image_count) == ("JEANS", True, 1)
    unfiltered = product([person, packshot], AggregateConfig(person_filter=False))
    assert (unfiltered.category, unfiltered.category_person_filtered) == ("DRESSES", False)
    only_people = product([person, image(cat=(0.1, 0.8, 0.1), person=0.9, n=3)])
    assert (only_people.category, only_people.category_person_filtered) == ("DRESSES", False)  # nothing to filter to


def test_minimum_confidence_nulls_and_flags_the_label():
    p = product([image(cat=(0.4, 0.35, 0.25), gender=(0.5, 0.3, 0.2))],
                AggregateConfig(min_category_confidence=0.5, min_gender_confidence=0.6))
    assert (p.category, p.category_score, p.category_low_confidence) == (None, 0.4, True)
    assert p.category_agreement == "MODEL_UNCERTAIN"
    assert (p.gender, p.gender_low_confidence, p.gender_agreement) == (None, True, "MODEL_UNCERTAIN")


def test_missing_retailer_labels():
    p = product([image(retailer_cat=None, retailer_gender=None)])
    assert (p.category_agreement, p.gender_agreement) == ("RETAILER_MISSING", "RETAILER_MISSING")


@pytest.mark.parametrize("retailer, scores, expected", [
    ("SKINNY_JEANS", (0.1, 0.8, 0.1), "PARENT_CHILD"),  # model JEANS, retailer its child
    ("CLOTHING", (0.1, 0.1, 0.8), "SAME_BRANCH"),  # model SKINNY_JEANS, retailer two levels up
    ("HATS", (0.8, 0.1, 0.1), "OUT_OF_VOCABULARY"),  # the model cannot say HATS: no verdict
    ("DRESSES", (0.1, 0.8, 0.1), "DISAGREE"),
    ("JEANS", (0.45, 0.3, 0.25), "WEAK_DISAGREE"),  # JEANS + SKINNY_JEANS 0.55: over the default threshold
])
def test_agreement_relations(retailer, scores, expected):
    assert product([image(cat=scores, retailer_cat=retailer)]).category_agreement == expected


def test_combine_fn_matches_a_plain_python_reference_under_random_merges():
    rng = random.Random(11)
    fn = ProductCombineFn(CATS, GENDERS, AggregateConfig(person_filter=True))
    fn.setup()
    for _ in range(40):
        images = [image(cat=[rng.random() for _ in CATS], gender=[rng.random() for _ in GENDERS],
                        person=rng.random(), n=i) for i in range(rng.randint(1, 15))]
        packshots = [i for i in images if i.person_score < 0.5]
        use = packshots if packshots and len(packshots) < len(images) else images
        expected = [max(i.category_scores[c] for i in use) for c in range(3)]
        rng.shuffle(images)
        p = fn.to_product(("shop", "p"), combine_in_parts(fn, [images[i::3] for i in range(3)]))
        np.testing.assert_allclose(p.category_scores, expected, atol=1e-6)
        assert p.category == CATS[int(np.argmax(expected))]
        assert p.image_count == len(images) and p.person_image_count == len(images) - len(packshots)


@pytest.mark.parametrize("shuffle_seed", [0, 1])
def test_aggregate_products_on_a_pipeline(shuffle_seed):
    images = [image("a", cat=(0.7, 0.2, 0.1), n=1), image("a", cat=(0.1, 0.1, 0.8), n=2),
              image("b", cat=(0.1, 0.8, 0.1), retailer_cat="DRESSES", n=3)]
    random.Random(shuffle_seed).shuffle(images)
    with TestPipeline() as p:
        out = p | beam.Create(images) | AggregateProducts(CATS, GENDERS)
        assert_that(out | beam.Map(lambda r: (r.product_id, r.category, r.image_count, r.category_agreement)),
                    equal_to([("a", "SKINNY_JEANS", 2, "PARENT_CHILD"), ("b", "JEANS", 1, "DISAGREE")]))


def test_variant_ids_come_from_every_record_of_the_product():
    kept = replace(image("a", cat=(0.7, 0.2, 0.1), n=1), variant_id="a-S")
    deduplicated = replace(kept, variant_id="a-M", source_line=2)  # same image, another size: not scored
    failed = replace(image("a", cat=(0.1, 0.1, 0.8), n=2), variant_id="a-L")  # its image was dead-lettered
    orphan = replace(image("z", cat=(0.1, 0.8, 0.1), n=3), variant_id="z-1")  # no image left at all
    with TestPipeline() as p:
        images = p | "Images" >> beam.Create([kept])
        records = p | "Records" >> beam.Create([kept, deduplicated, failed, orphan])
        out = {"images": images, "records": records} | AggregateProducts(CATS, GENDERS)
        assert_that(out | beam.Map(lambda r: (r.product_id, r.image_count, r.variant_ids)),
                    equal_to([("a", 1, ("a-L", "a-M", "a-S"))]))


AGES = ("ADULT", "KIDS")
COLOURS = ("black", "white", "navy")


def modelled(product="p", age=(0.7, 0.3), colour=(0.2, 0.1, 0.7), retailer_age="ADULT", person=0.1, n=0):
    """An image scored by age-group and colour models too (heads of a multi-task export)."""
    return replace(image(product, person=person, n=n), age_group=retailer_age, age_group_scores=tuple(age),
                   colour_scores=tuple(colour), age_group_model="mt-1", colour_model="mt-1",
                   dominant_colour="white", dominant_colour_no_skin="white")


def model_product(images, cfg=AggregateConfig()):
    fn = ProductCombineFn(CATS, GENDERS, cfg, age_group_classes=AGES, colour_classes=COLOURS)
    fn.setup()
    return fn.to_product(("shop", images[0].product_id), combine_in_parts(fn, [images[i::2] for i in range(2)]))


def test_age_group_is_a_cumulative_max_compared_with_the_retailer():
    p = model_product([modelled(age=(0.9, 0.1), n=1), modelled(age=(0.2, 0.8), retailer_age="KIDS", n=2),
                       modelled(age=(0.95, 0.05), n=3)])
    assert (p.age_group, p.age_group_score, p.retailer_age_group) == ("ADULT", 0.95, "ADULT")
    assert (p.age_group_agreement, p.age_group_model, p.needs_review) == ("AGREE", "mt-1", False)
    kids = model_product([modelled(age=(0.01, 0.99))])
    assert (kids.age_group, kids.age_group_agreement) == ("KIDS", "DISAGREE")
    assert kids.review_reasons == ("AGE_GROUP_DISAGREE",) and kids.review_priority == kids.age_group_error_probability
    hesitant = model_product([modelled(age=(0.3, 0.7))])  # ADULT still at 0.3: plausible under a 5 % error rate
    assert hesitant.age_group_agreement == "DISAGREE" and not hesitant.needs_review
    missing = model_product([modelled(retailer_age=None)])
    assert missing.age_group_agreement == "RETAILER_MISSING"
    uncertain = model_product([modelled(age=(0.55, 0.45))], AggregateConfig(min_age_group_confidence=0.6))
    assert (uncertain.age_group, uncertain.age_group_low_confidence) == (None, True)
    assert uncertain.age_group_agreement == "MODEL_UNCERTAIN" and not uncertain.needs_review
    assert product([image()]).age_group is None and product([image()]).age_group_agreement is None


def test_colour_comes_from_the_colour_model_over_the_packshots():
    packshot = modelled(colour=(0.6, 0.3, 0.1), person=0.1, n=1)
    person = modelled(colour=(0.05, 0.05, 0.9), person=0.9, n=2)  # the model shot says navy (a jacket? skin?)
    p = model_product([packshot, person])
    assert (p.colour, p.colour_score, p.colour_model) == ("black", 0.6, "mt-1")
    only_people = model_product([person, replace(person, colour_scores=(0.3, 0.6, 0.1), image_position=3)])
    assert (only_people.colour, only_people.colour_score) == ("navy", 0.9)
    heuristic = product([replace(packshot, colour_scores=(), colour_model=None)])  # no colour model runs
    assert (heuristic.colour, heuristic.colour_score, heuristic.colour_model) == ("white", None, None)


def test_colour_source():
    from pipeline.product_rules import colour_source

    assert colour_source(["person", "category", "colour"]) == "model"
    assert colour_source(["person", "category", "gender"]) == "dominant_colour"


def test_the_heads_label_quality_decides_labels_and_verdicts():
    from pipeline.label_quality import HeadQuality

    qualities = {"category": HeadQuality(CATS, (0.9, 0.3, 0.9)),  # JEANS is hard: 0.35 is confident for it
                 "gender": HeadQuality(GENDERS, (0.8, 0.8, 0.5), reliable_categories=(("DRESSES", 100, 0.95),)),
                 "age_group": HeadQuality(AGES, (0.6, 0.5), decision=(("KIDS", 0.3),))}
    fn = ProductCombineFn(CATS, GENDERS, AggregateConfig(), age_group_classes=AGES, colour_classes=COLOURS,
                          qualities=qualities)
    fn.setup()
    p = fn.product_of([modelled(age=(0.65, 0.35))])
    assert (p.age_group, p.age_group_agreement) == ("KIDS", "WEAK_DISAGREE")  # KIDS from 0.3; ADULT >= 0.6
    assert fn.product_of([modelled(age=(0.4, 0.6))]).age_group_agreement == "DISAGREE"  # ADULT 0.4 < 0.6
    jeans = fn.product_of([replace(modelled(age=(0.9, 0.1)), category_scores=(0.3, 0.35, 0.35), category="DRESSES",
                                   gender_scores=(0.01, 0.98, 0.01))])
    assert (jeans.category, jeans.category_agreement) == ("JEANS", "DISAGREE")  # the first of a tie
    assert jeans.gender_agreement == "NOT_ASSESSED"  # JEANS: the gender head is reliable on DRESSES only
    dress = fn.product_of([replace(modelled(age=(0.9, 0.1)), category_scores=(0.9, 0.05, 0.05), category="DRESSES",
                                   gender_scores=(0.01, 0.98, 0.01))])
    assert dress.gender_agreement == "DISAGREE" and "GENDER_DISAGREE" in dress.review_reasons


def test_the_title_witnesses_beside_the_image_unless_turned_off():
    from pipeline.label_quality import HeadQuality

    qualities = {"gender": HeadQuality(GENDERS, (0.8, 0.8, 0.5), reliable_categories=(("DRESSES", 100, 0.95),))}
    unsure = replace(image(cat=(0.1, 0.8, 0.1), gender=(0.85, 0.13, 0.02), retailer_gender="MALE"),
                     title="Harbour Basics women's jeans")

    def judged(cfg):
        fn = ProductCombineFn(CATS, GENDERS, cfg, qualities=qualities)
        fn.setup()
        return fn.product_of([unsure])

    with_title = judged(AggregateConfig())
    assert (with_title.title_gender, with_title.title_category) == ("FEMALE", "JEANS")
    assert with_title.gender_agreement == "DISAGREE"  # JEANS: unreliable, but the title names a gender
    assert with_title.gender_error_probability > 0.5 and "GENDER_DISAGREE" in with_title.review_reasons
    alone = judged(AggregateConfig(title_evidence=False))
    assert alone.title_gender is None and alone.gender_agreement == "NOT_ASSESSED" and not alone.needs_review
