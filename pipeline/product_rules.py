"""Product rules: the pure decisions AggregateProducts makes for each product, and their thresholds.

:class:`AggregateConfig` holds the thresholds (the person filter, the minimum confidences, the
per-retailer review thresholds and prior label error rates); :func:`cumulative_max_label` picks a
label from a cumulative-max score vector, and :func:`review` gives the review queue's reasons,
tier and priority from the fields' verdicts (:mod:`pipeline.label_quality`). Nothing here touches Beam or the
accumulator: :mod:`pipeline.aggregate` combines the images and calls these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from pipeline.label_quality import DEFAULT_ERROR_RATE, FLAGGABLE, HeadQuality, Judge, Judgement
from pipeline.title_evidence import TITLE_COPY_RATE, TITLE_ERROR_RATE, TitleLabels
from schemas.taxonomy import Taxonomy

REVIEW_FIELDS = ("category", "gender", "age_group")  # retailer labels the model can dispute
DEFAULT_REVIEW_THRESHOLD = 0.5  # the estimated error probability from which a disputed label is flagged


class ReviewReason(enum.StrEnum):
    """Why a product is in the review queue (products.review_reasons, review table)."""

    CATEGORY_DISAGREE = "CATEGORY_DISAGREE"  # the retailer's category is likely wrong (verdict DISAGREE)
    GENDER_DISAGREE = "GENDER_DISAGREE"
    AGE_GROUP_DISAGREE = "AGE_GROUP_DISAGREE"
    CATEGORY_CONFUSABLE = "CATEGORY_CONFUSABLE"  # likely wrong, but between classes the model mixes up
    GENDER_CONFUSABLE = "GENDER_CONFUSABLE"
    AGE_GROUP_CONFUSABLE = "AGE_GROUP_CONFUSABLE"
    RETAILER_CATEGORY_UNMAPPED = "RETAILER_CATEGORY_UNMAPPED"  # the retailer's value matched no mapping rule
    RETAILER_CATEGORY_MISSING = "RETAILER_CATEGORY_MISSING"  # the retailer gave no category (nor a title keyword)
    IMAGES_DISAGREE = "IMAGES_DISAGREE"  # under half of the product's images vote for its category


class ReviewTier(enum.IntEnum):
    """The review queue's tiers, most urgent first (products.review_tier; names in review_tier_name)."""

    LABEL_ERROR = 1  # a retailer label the model disputes with confidence
    POSSIBLE_LABEL_ERROR = 2  # disputed between classes the model itself confuses
    NO_RETAILER_LABEL = 3  # no usable retailer category: the model's proposal, to confirm
    MIXED_IMAGES = 4  # the product's images show different categories


_REASON_ORDER = tuple(reason.value for reason in ReviewReason)  # plain strings: an enum member lookup is slow
_TIER_OF = {**{f"{f.upper()}_DISAGREE": ReviewTier.LABEL_ERROR for f in REVIEW_FIELDS},
            **{f"{f.upper()}_CONFUSABLE": ReviewTier.POSSIBLE_LABEL_ERROR for f in REVIEW_FIELDS},
            "RETAILER_CATEGORY_UNMAPPED": ReviewTier.NO_RETAILER_LABEL,
            "RETAILER_CATEGORY_MISSING": ReviewTier.NO_RETAILER_LABEL,
            "IMAGES_DISAGREE": ReviewTier.MIXED_IMAGES}


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
    # (retailer or "*", field, value) for category, gender and age_group. review_thresholds: the
    # estimated probability that the retailer's label is wrong from which a disputed label is
    # flagged; error_rates: the prior share of wrong retailer labels (pipeline.label_quality).
    review_thresholds: tuple[tuple[str, str, float], ...] = ()
    error_rates: tuple[tuple[str, str, float], ...] = ()
    title_evidence: bool = True  # the product's title counts as a witness (pipeline.title_evidence)

    def __post_init__(self):
        for kind, entries in (("review threshold", self.review_thresholds), ("label error rate", self.error_rates)):
            for retailer, name, value in entries:
                if name not in REVIEW_FIELDS or not 0 <= value <= 1:
                    raise ValueError(f"{kind} {retailer}:{name}={value}: field must be one of {REVIEW_FIELDS}"
                                     " and the value in [0, 1]")

    def review_threshold(self, retailer: str, name: str) -> float:
        """The retailer's own threshold, else the run-wide one ("*"), else the default."""
        return _setting(self.review_thresholds, retailer, name, DEFAULT_REVIEW_THRESHOLD)

    def error_rate(self, retailer: str, name: str) -> float:
        return _setting(self.error_rates, retailer, name, DEFAULT_ERROR_RATE)


def _setting(entries, retailer: str, name: str, default: float) -> float:
    found = {r: v for r, f, v in entries if f == name}
    return found.get(retailer, found.get("*", default))


def primary_image(declared, best_packshot, best_image, first) -> tuple[str | None, str | None, str | None]:
    """(uri, rule, colour): the retailer's declared primary image, else the best packshot, else the
    best image, else the first (candidates as the accumulator keeps them, None when absent)."""
    if declared:
        return declared[1], PrimaryRule.DECLARED.value, declared[2]
    if best_packshot:
        return best_packshot[2], PrimaryRule.BEST_PACKSHOT.value, best_packshot[3]
    if best_image:
        return best_image[2], PrimaryRule.BEST_IMAGE.value, best_image[3]
    if first:
        return first[1], PrimaryRule.FIRST_IMAGE.value, first[2]
    return None, None, None


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


class FieldJudges:
    """The model's label and the verdict on the retailer's, for each field a model serves
    (category, gender, age group), with what each head's out-of-fold predictions say of it."""

    def __init__(self, classes: dict[str, tuple[str, ...]], qualities: dict[str, HeadQuality], taxonomy: Taxonomy):
        self._judges = {name: Judge(classes[name], qualities.get(name), taxonomy if name == "category" else None)
                        for name in REVIEW_FIELDS if classes.get(name)}
        gender = qualities.get("gender")
        self._reliable = None if gender is None or gender.reliable_categories is None else \
            {node for node, _, _ in gender.reliable_categories}
        self._taxonomy = taxonomy

    def label(self, name: str, scores: np.ndarray | None, min_confidence: float):
        """(label or None under ``min_confidence``, its cumulative-max score, low-confidence flag,
        the probabilities: the cumulative-max scores normalised to sum to 1) of one field."""
        judge = self._judges.get(name)
        if scores is None or judge is None:
            return None, None, False, None
        probs = scores / max(float(scores.sum()), 1e-12)
        label = judge.model_label(probs)
        score = float(scores[judge.classes.index(label)])
        if score < min_confidence:
            return None, score, True, probs
        return label, score, False, probs

    def judge(self, labels: dict, retailer_labels: dict, cfg: AggregateConfig, retailer: str,
              title: TitleLabels = TitleLabels()) -> dict[str, Judgement]:
        """field -> Judgement, for the fields :meth:`label` gave probabilities for. ``title``: what
        the product's title names, each label a witness beside the image (``cfg.title_evidence``);
        a gender the title names makes the field assessable where the head alone is not."""
        category = labels["category"][0] or retailer_labels["category"]
        found = {}
        for name, (label, _, _, probs) in labels.items():
            if probs is None:
                continue
            judge, witness = self._judges[name], getattr(title, name) if cfg.title_evidence else None
            found[name] = judge.judge(
                judge.with_witness(probs, witness, TITLE_ERROR_RATE, retailer=retailer_labels[name],
                                   copied=TITLE_COPY_RATE), retailer_labels[name], model=label,
                error_rate=cfg.error_rate(retailer, name),
                assessed=name != "gender" or witness is not None or self.gender_assessed(category))
        return found

    def gender_assessed(self, category: str | None) -> bool:
        """Whether the gender head is reliable for ``category`` or an ancestor of it (True where
        the export says nothing of it)."""
        if self._reliable is None:
            return True
        if category is None or category not in self._taxonomy:
            return False
        return bool(self._reliable & {category, *self._taxonomy.ancestors(category)})


def review(cfg: AggregateConfig, retailer: str, judgements: dict, *, unmapped_images: int, missing_category: bool,
           category_score: float | None, vote_share: float | None,
           voted: int) -> tuple[tuple[str, ...], ReviewTier | None, float | None]:
    """(review reasons, tier, priority) of a product from its fields' judgements
    (:class:`~pipeline.label_quality.Judgement` by field):

    * ``<FIELD>_DISAGREE`` / ``<FIELD>_CONFUSABLE``: the verdict is DISAGREE / CONFUSABLE and the
      estimated probability that the retailer's label is wrong reaches the field's review
      threshold (per retailer); tiers LABEL_ERROR / POSSIBLE_LABEL_ERROR, priority the
      probability that at least one flagged label is wrong;
    * RETAILER_CATEGORY_UNMAPPED / _MISSING: no usable retailer category (out-of-scope values are
      usable: they say the product is out of scope); tier NO_RETAILER_LABEL, priority the
      model's category score (how likely its proposal is right);
    * IMAGES_DISAGREE: two or more images, under half voting for the product's category; tier
      MIXED_IMAGES, priority 1 - the vote share.

    The tier is the most urgent of the reasons'; the priority is that tier's. Low model confidence
    alone puts nothing in the queue.
    """
    found: dict[str, float] = {}
    for name, judgement in judgements.items():
        wrong = judgement.error_probability
        if judgement.verdict in FLAGGABLE and wrong is not None and wrong >= cfg.review_threshold(retailer, name):
            found[f"{name.upper()}_{judgement.verdict}"] = wrong
    if unmapped_images:
        found[ReviewReason.RETAILER_CATEGORY_UNMAPPED] = category_score or 0.0
    elif missing_category:
        found[ReviewReason.RETAILER_CATEGORY_MISSING] = category_score or 0.0
    if voted >= 2 and vote_share is not None and vote_share < 0.5:
        found[ReviewReason.IMAGES_DISAGREE] = 1.0 - vote_share
    if not found:
        return (), None, None
    reasons = tuple(r for r in _REASON_ORDER if r in found)  # a stable order
    tier = min(_TIER_OF[r] for r in reasons)
    values = [found[r] for r in reasons if _TIER_OF[r] == tier]
    priority = 1.0 - float(np.prod([1.0 - v for v in values])) if tier <= ReviewTier.POSSIBLE_LABEL_ERROR \
        else max(values)
    return reasons, tier, round(priority, 4)
