"""Product rules: the pure decisions AggregateProducts makes for each product, and their thresholds.

:class:`AggregateConfig` holds the thresholds (the person filter, the minimum confidences, the
per-retailer review thresholds); :func:`cumulative_max_label` picks a label from a cumulative-max
score vector, :func:`compare` gives the verdict on the retailer's label against the model's, and
:func:`review` the review queue's reasons and priority. Nothing here touches Beam or the
accumulator: :mod:`pipeline.aggregate` combines the images and calls these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from schemas.taxonomy import Relation, Taxonomy

REVIEW_FIELDS = ("category", "gender", "age_group", "person")
DEFAULT_REVIEW_THRESHOLDS = {"category": 0.5, "gender": 0.6, "age_group": 0.6, "person": 0.8}
UNMAPPED_PRIORITY = 0.5


class ReviewReason(enum.StrEnum):
    """Why a product is in the review queue (products.review_reasons, review table)."""

    LOW_CONFIDENCE = "LOW_CONFIDENCE"  # a model score under its review threshold
    MODEL_RETAILER_DISAGREE = "MODEL_RETAILER_DISAGREE"  # category, gender or age group agreement is DISAGREE
    RETAILER_CATEGORY_UNMAPPED = "RETAILER_CATEGORY_UNMAPPED"  # the retailer's value matched no mapping rule
    IMAGES_DISAGREE = "IMAGES_DISAGREE"  # under half of the product's images vote for its category


_REASON_ORDER = tuple(reason.value for reason in ReviewReason)  # plain strings: an enum member lookup is slow


class PrimaryRule(enum.StrEnum):
    """How the product's primary image was chosen (products.primary_image_rule)."""

    DECLARED = "DECLARED"  # the retailer marks it as the primary image
    BEST_PACKSHOT = "BEST_PACKSHOT"  # the packshot with the highest calibrated category score
    BEST_IMAGE = "BEST_IMAGE"  # only person shots: the highest-scoring image
    FIRST_IMAGE = "FIRST_IMAGE"  # no scores: the lowest image position


@dataclass(frozen=True)
class AggregateConfig:
    person_filter: bool = True
    person_threshold: float = 0.5
    min_category_confidence: float = 0.0
    min_gender_confidence: float = 0.0
    min_age_group_confidence: float = 0.0
    # (retailer or "*", field, threshold): a product scoring under it on that field goes to review.
    # For person, the score is the least certain image's max(p, 1 - p).
    review_thresholds: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self):
        for retailer, name, value in self.review_thresholds:
            if name not in REVIEW_FIELDS or not 0 <= value <= 1:
                raise ValueError(f"review threshold {retailer}:{name}={value}: field must be one of {REVIEW_FIELDS}"
                                 " and the value in [0, 1]")

    def review_threshold(self, retailer: str, name: str) -> float:
        """The retailer's own threshold, else the run-wide one ("*"), else the default."""
        found = {r: v for r, f, v in self.review_thresholds if f == name}
        return found.get(retailer, found.get("*", DEFAULT_REVIEW_THRESHOLDS[name]))


def colour_source(tasks) -> str:
    """What products.colour comes from: ``model`` when a colour model runs (tasks: the run's model
    tasks), else ``dominant_colour`` (the primary image's heuristic colour)."""
    return "model" if "colour" in tasks else "dominant_colour"


def cumulative_max_label(scores: np.ndarray | None, classes: tuple[str, ...], min_confidence: float):
    """(label or None if below the threshold, its score, low-confidence flag)."""
    if scores is None or not len(classes):
        return None, None, False
    best = int(np.argmax(scores))  # ties: the first class, as everywhere
    score = float(scores[best])
    if score < min_confidence:
        return None, score, True
    return classes[best], score, False


def compare(taxonomy: Taxonomy, retailer: str | None, model: str | None, classes: tuple[str, ...]) -> str:
    """The retailer's label against the model's: AGREE; PARENT_CHILD (one is the other's parent);
    SAME_BRANCH (further up or down one branch); OUT_OF_VOCABULARY (the retailer's label is not a
    class the model can predict: no verdict on the retailer); DISAGREE; RETAILER_MISSING;
    MODEL_UNCERTAIN (the model's label is null: below the minimum confidence)."""
    if retailer is None:
        return "RETAILER_MISSING"
    if model is None:
        return "MODEL_UNCERTAIN"
    if retailer == model:
        return "AGREE"
    if retailer in taxonomy and model in taxonomy:
        relation = taxonomy.relation(retailer, model)
        if relation in (Relation.PARENT, Relation.CHILD):
            return "PARENT_CHILD"
        if relation in (Relation.ANCESTOR, Relation.DESCENDANT):
            return "SAME_BRANCH"
    if retailer not in classes:
        return "OUT_OF_VOCABULARY"
    return "DISAGREE"


def review(cfg: AggregateConfig, retailer: str, *, category_score: float | None, gender_score: float | None,
           person_certainty: float | None, category_agreement: str | None, gender_agreement: str | None,
           unmapped_images: int, vote_share: float | None, voted: int, age_group_score: float | None = None,
           age_group_agreement: str | None = None) -> tuple[tuple[str, ...], float | None]:
    """(review reasons, priority): ``needs_review`` with reason codes (see :class:`ReviewReason`)
    under per-field thresholds that a run can set per retailer, and ``review_priority``, the
    expected value of a human look:

    * LOW_CONFIDENCE: 1 - the lowest of the flagged scores (the chance the model's label is wrong);
      category, gender, age group (when an age-group model runs) and person certainty;
    * MODEL_RETAILER_DISAGREE: the model's calibrated score for its own label (the chance the
      retailer's label is the wrong one, which is what a reviewer would fix), the highest over
      category, gender and age group;
    * IMAGES_DISAGREE: 1 - the share of images voting for the product's category;
    * RETAILER_CATEGORY_UNMAPPED: 0.5 (a mapping rule is missing: fixing it fixes many products);

    the product's priority is the highest of its reasons'.
    """
    found: dict[str, float] = {}
    low = [score for name, score in (("category", category_score), ("gender", gender_score),
                                     ("age_group", age_group_score), ("person", person_certainty))
           if score is not None and score < cfg.review_threshold(retailer, name)]
    if low:
        found[ReviewReason.LOW_CONFIDENCE] = 1.0 - min(low)
    disagreeing = [score for agreement, score in ((category_agreement, category_score),
                                                  (gender_agreement, gender_score),
                                                  (age_group_agreement, age_group_score))
                   if agreement == "DISAGREE" and score is not None]
    if disagreeing:
        found[ReviewReason.MODEL_RETAILER_DISAGREE] = max(disagreeing)
    if unmapped_images:
        found[ReviewReason.RETAILER_CATEGORY_UNMAPPED] = UNMAPPED_PRIORITY
    if voted >= 2 and vote_share is not None and vote_share < 0.5:
        found[ReviewReason.IMAGES_DISAGREE] = 1.0 - vote_share
    reasons = tuple(r for r in _REASON_ORDER if r in found)  # a stable order
    return reasons, (round(max(found.values()), 4) if found else None)
