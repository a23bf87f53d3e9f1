"""Verdicts on retailer labels from hand-made probability tables (pipeline/label_quality.py), and
what models/label_quality.py learns from hand-made out-of-fold predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.label_quality import (
    class_thresholds,
    confusable_pairs,
    from_out_of_fold,
    minority_decision,
    reliable_categories,
)
from pipeline.label_quality import HeadQuality, Judge, read_heads, write_heads
from schemas.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()
CATS = ("DRESSES", "JEANS", "SKINNY_JEANS", "SHIRTS", "T_SHIRTS", "SHOES")
QUALITY = HeadQuality(classes=CATS, thresholds=(0.8, 0.7, 0.6, 0.4, 0.5, 0.9), confusable=(("SHIRTS", "T_SHIRTS"),))
JUDGE = Judge(CATS, QUALITY, TAXONOMY)


def probs(**named) -> np.ndarray:
    p = np.array([named.get(c, 0.0) for c in CATS])
    return p / p.sum()


def verdict(p, retailer, judge=JUDGE, **kw):
    return judge.judge(p, retailer, model=judge.model_label(p), **kw)


def test_a_confident_model_against_an_unlikely_retailer_label_is_a_disagreement():
    j = verdict(probs(DRESSES=0.97, SHOES=0.001, JEANS=0.029), "SHOES")
    assert (j.verdict, j.model_label) == ("DISAGREE", "DRESSES") and j.error_probability > 0.5


def test_per_class_thresholds_decide_between_disagree_and_weak_disagree():
    # SHIRTS is hard (threshold 0.4): at 0.42 a retailer's SHIRTS is as likely as true shirts usually are;
    # DRESSES is easy (0.8): at 0.42 a retailer's DRESSES is not.
    assert verdict(probs(SHIRTS=0.42, DRESSES=0.58), "SHIRTS").verdict == "WEAK_DISAGREE"
    assert verdict(probs(SHIRTS=0.58, DRESSES=0.42), "DRESSES").verdict == "DISAGREE"
    default = Judge(CATS, None, TAXONOMY)  # no label quality: 0.5 for every class
    assert verdict(probs(SHIRTS=0.42, DRESSES=0.58), "SHIRTS", default).verdict == "DISAGREE"
    # The compatible probability counts: JEANS 0.2 + its child SKINNY_JEANS 0.55 >= 0.7.
    assert verdict(probs(SHIRTS=0.25, JEANS=0.2, SKINNY_JEANS=0.55), "JEANS").verdict == "PARENT_CHILD"
    assert verdict(probs(SHIRTS=0.3, DRESSES=0.25, JEANS=0.2, SKINNY_JEANS=0.25), "JEANS").verdict == "DISAGREE"
    assert verdict(probs(SHIRTS=0.28, JEANS=0.36, SKINNY_JEANS=0.36), "JEANS").verdict == "AGREE"
    # A child's probability counts for the retailer's label in the error probability too.
    split = verdict(probs(SHIRTS=0.5, JEANS=0.2, SKINNY_JEANS=0.3), "JEANS")
    assert split.error_probability == JUDGE.error_probability(probs(SHIRTS=0.5, JEANS=0.5), "JEANS")


def test_confusable_pairs_and_the_hierarchy_are_lower_verdicts():
    assert verdict(probs(T_SHIRTS=0.9, SHIRTS=0.1), "SHIRTS").verdict == "CONFUSABLE"
    child = verdict(probs(SKINNY_JEANS=0.9, DRESSES=0.1), "JEANS")
    assert child.verdict == "PARENT_CHILD" and child.error_probability < 0.01  # JEANS is right about it
    assert verdict(probs(SKINNY_JEANS=0.9, DRESSES=0.1), "CLOTHING").verdict == "SAME_BRANCH"
    assert verdict(probs(JEANS=0.9, DRESSES=0.1), "HATS").verdict == "OUT_OF_VOCABULARY"
    boots = verdict(probs(DRESSES=0.99, SHOES=0.01), "BOOTS")  # not a class, but SHOES (its parent) is
    assert boots.verdict == "DISAGREE" and boots.error_probability is not None


def test_missing_labels_and_unreliable_heads():
    assert verdict(probs(DRESSES=1.0), None).verdict == "RETAILER_MISSING"
    assert JUDGE.judge(probs(DRESSES=1.0), "SHOES", model=None).verdict == "MODEL_UNCERTAIN"
    assert verdict(probs(DRESSES=0.99, SHOES=0.01), "SHOES", assessed=False).verdict == "NOT_ASSESSED"


def test_error_probability_is_bayes_with_a_prior_error_rate():
    p = probs(DRESSES=0.98, SHOES=0.02)
    got = JUDGE.error_probability(p, "SHOES", 0.05)
    wrong = 0.98 * 0.05 / 5  # any of the 5 classes but SHOES, alike
    assert got == pytest.approx(wrong / (wrong + 0.02 * 0.95), abs=1e-4)
    assert JUDGE.error_probability(p, "SHOES", 0.2) > got  # a sloppier retailer: more likely wrong
    assert JUDGE.error_probability(probs(DRESSES=0.5, SHOES=0.5), "SHOES", 0.05) < got  # likelier label
    assert JUDGE.error_probability(p, "HATS", 0.05) is None  # nothing compatible: no estimate


def test_gender_unisex_is_compatible_with_either_and_only_male_against_female_is_disputed():
    genders = ("FEMALE", "MALE", "UNISEX")
    judge = Judge(genders, HeadQuality(genders, (0.8, 0.8, 0.5)))
    assert verdict(np.array([0.3, 0.45, 0.25]), "FEMALE", judge).verdict == "DISAGREE"  # 0.55 < 0.8
    assert verdict(np.array([0.3, 0.45, 0.25]), "FEMALE", Judge(genders, HeadQuality(genders, (0.5, 0.5, 0.5)))
                   ).verdict == "WEAK_DISAGREE"
    male = np.array([0.02, 0.9, 0.08])
    assert verdict(male, "UNISEX", judge).verdict == "PARENT_CHILD"
    assert verdict(np.array([0.0, 0.1, 0.9]), "MALE", judge).verdict == "PARENT_CHILD"
    flipped = verdict(male, "FEMALE", judge)
    assert flipped.verdict == "DISAGREE"
    assert flipped.error_probability == pytest.approx(judge.error_probability(male, "FEMALE", 0.05))
    # FEMALE counts UNISEX's probability as its own: 0.1, not 0.02.
    wrong = 0.9 * 0.05
    assert flipped.error_probability == pytest.approx(wrong / (wrong + 0.1 * 0.95), abs=1e-4)


def test_a_decision_threshold_picks_the_minority_class():
    ages = ("ADULT", "KIDS")
    judge = Judge(ages, HeadQuality(ages, (0.95, 0.4), decision=(("KIDS", 0.3),)))
    assert judge.model_label(np.array([0.65, 0.35])) == "KIDS"
    assert judge.model_label(np.array([0.75, 0.25])) == "ADULT"
    assert Judge(ages).model_label(np.array([0.65, 0.35])) == "ADULT"


def test_learned_thresholds_pairs_and_decisions_from_held_out_tables():
    classes = ("A", "B", "C")
    p = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 0, 1, 1, 2])
    assert class_thresholds(p, y, classes) == pytest.approx((0.8, 0.5, 0.8))
    many = np.repeat(p, 5, axis=0)
    labels = np.repeat(y, 5)
    assert confusable_pairs(many, labels, classes) == (("A", "B"),)  # half of B's went to A: 5 examples
    assert confusable_pairs(p, y, classes) == ()  # one example is too few
    ages = np.array([[0.9, 0.1]] * 95 + [[0.7, 0.3]] * 5)
    truth = np.r_[np.zeros(95, int), np.ones(5, int)]
    assert minority_decision(ages, truth, ("ADULT", "KIDS")) == (("KIDS", 0.05),)  # its prior: class-balanced
    assert minority_decision(ages, np.r_[np.zeros(60, int), np.ones(40, int)], ("ADULT", "KIDS")) == ()  # 40 %
    assert minority_decision(ages, truth, ("A", "B", "C")[:2]) == (("B", 0.05),)


def test_reliable_categories_pool_each_subtree():
    nodes = ["SKINNY_JEANS"] * 20 + ["STRAIGHT_JEANS"] * 20 + ["WATCHES"] * 40
    right = np.array([1] * 40 + [1] * 20 + [0] * 20)  # jeans: all right; watches: half
    gender = np.eye(3)[np.where(right == 1, 0, 1)]
    found = {node: (n, acc) for node, n, acc in reliable_categories(gender, np.zeros(80, int), nodes, TAXONOMY)}
    assert found["JEANS"] == (40, 1.0) and found["CLOTHING"] == (40, 1.0)
    assert "SKINNY_JEANS" not in found  # 20 examples: too few alone
    assert "WATCHES" not in found and "ACCESSORIES" not in found


def test_label_quality_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    cat = rng.integers(0, 3, n)
    oof = {"fold": np.arange(n) % 3, "category_label": cat, "gender_label": rng.integers(0, 3, n),
           "category_scores": np.eye(3)[cat] * 0.8 + 0.2 / 3, "gender_scores": rng.dirichlet([1, 1, 1], n)}
    classes = {"category": ("DRESSES", "JEANS", "SHOES"), "gender": ("FEMALE", "MALE", "UNISEX")}
    heads, temperatures = from_out_of_fold(oof, classes, TAXONOMY, rows=oof["fold"] != 0, learned_from="test")
    assert set(heads) == {"category", "gender"} and set(temperatures) == {"category", "gender"}
    assert heads["gender"].reliable_categories == ()  # random gender scores: reliable nowhere
    write_heads(heads, str(tmp_path / "label_quality.json"))
    assert read_heads((tmp_path / "label_quality.json").read_text()) == heads
    assert json.loads((tmp_path / "label_quality.json").read_text())["heads"]["category"]["learned_from"] == "test"


def test_a_title_is_an_independent_witness_of_the_class():
    from pipeline.title_evidence import TITLE_ERROR_RATE, read_title

    title = read_title("Puma Women Black Sports Shoes", TAXONOMY)
    assert (title.category, title.gender, title.age_group) == ("SPORTS_SHOES", "FEMALE", None)
    assert read_title("Gini and Jony Boys Track Pants", TAXONOMY).age_group == "KIDS"
    assert read_title("Men and Women Watch", TAXONOMY).gender is None  # both: no evidence
    assert read_title("Kleid mit Blumen", TAXONOMY) == read_title(None, TAXONOMY)  # nothing it can read
    genders = ("FEMALE", "MALE", "UNISEX")
    judge = Judge(genders, HeadQuality(genders, (0.8, 0.8, 0.5)))
    unsure = np.array([0.45, 0.45, 0.1])
    updated = judge.with_witness(unsure, "FEMALE", TITLE_ERROR_RATE)  # FEMALE and UNISEX: 0.9; MALE: 0.1
    np.testing.assert_allclose(updated, np.array([0.45 * 0.9, 0.45 * 0.1, 0.1 * 0.9]) / 0.54)
    assert judge.error_probability(updated, "MALE") > 2 * judge.error_probability(unsure, "MALE")
    sure = judge.with_witness(np.array([0.9, 0.08, 0.02]), "FEMALE", TITLE_ERROR_RATE)  # image and title agree
    assert judge.error_probability(sure, "MALE") > 0.5 > judge.error_probability(np.array([0.9, 0.08, 0.02]), "MALE")
    assert judge.with_witness(unsure, "UNISEX", TITLE_ERROR_RATE) is unsure  # compatible with all: no evidence
    assert judge.with_witness(unsure, None, TITLE_ERROR_RATE) is unsure


def test_the_error_log_odds_are_recalibrated_per_label():
    from models.label_quality import error_calibration

    ages = ("ADULT", "KIDS")
    p = np.array([0.99, 0.01])
    plain = Judge(ages)
    assert plain.error_probability(p, "KIDS") == pytest.approx(0.99 * 0.05 / (0.99 * 0.05 + 0.01 * 0.95), abs=1e-4)
    scaled = Judge(ages, HeadQuality(ages, (0.9, 0.2), calibration=(("*", 0.0, 1.0), ("KIDS", -2.0, 0.5))))
    x = np.log(0.99 / 0.01)
    expected = 1 / (1 + np.exp(-(-2.0 + 0.5 * x + np.log(0.05 / 0.95))))
    assert scaled.error_probability(p, "KIDS") == pytest.approx(expected, abs=1e-4)
    assert scaled.error_probability(p[::-1], "ADULT") == plain.error_probability(p[::-1], "ADULT")  # "*": (0, 1)
    # Held-out predictions where true KIDS products get KIDS at 0.01-0.3 (the head misses them),
    # adults at 0.001-0.05: a KIDS label at 0.02 is far more often right than a calibrated 0.02 says.
    rng = np.random.default_rng(0)
    kids, adults = rng.uniform(0.01, 0.3, 300), rng.uniform(0.001, 0.05, 3000)
    probs = np.c_[1 - np.r_[kids, adults], np.r_[kids, adults]]
    labels = np.r_[np.ones(300, int), np.zeros(3000, int)]
    fitted = dict((label, (a, b)) for label, a, b in error_calibration(probs, labels, Judge(ages)))
    assert set(fitted) == {"*", "ADULT", "KIDS"}
    learned = Judge(ages, HeadQuality(ages, (0.9, 0.2), calibration=tuple((k, *v) for k, v in fitted.items())))
    at = np.array([0.98, 0.02])
    assert learned.error_probability(at, "KIDS") < plain.error_probability(at, "KIDS")
    separable = error_calibration(np.array([[0.9, 0.1]] * 40 + [[0.1, 0.9]] * 40), np.r_[np.zeros(40, int),
                                  np.ones(40, int)], Judge(ages))
    assert all(abs(a) < 20 and abs(b) < 20 for _, a, b in separable)  # kept finite by the prior


def test_a_title_agreeing_with_the_field_may_only_repeat_it():
    genders = ("FEMALE", "MALE", "UNISEX")
    judge = Judge(genders, HeadQuality(genders, (0.8, 0.8, 0.5)))
    image = np.array([0.2, 0.75, 0.05])
    independent = judge.with_witness(image, "FEMALE", 0.1)
    agreeing = judge.with_witness(image, "FEMALE", 0.1, retailer="FEMALE", copied=0.5)
    contradicting = judge.with_witness(image, "FEMALE", 0.1, retailer="MALE", copied=0.5)
    np.testing.assert_allclose(contradicting, independent)  # a copy of MALE cannot say FEMALE: full weight
    assert image[0] < agreeing[0] < independent[0]  # agreement: evidence, but less
    likelihood = 0.5 + 0.5 * np.array([0.9, 0.1, 0.9])
    np.testing.assert_allclose(agreeing, image * likelihood / (image * likelihood).sum())
    assert judge.agree("UNISEX", "MALE") and not judge.agree("FEMALE", "MALE")
    assert JUDGE.agree("JEANS", "SKINNY_JEANS") and not JUDGE.agree("JEANS", "DRESSES")
