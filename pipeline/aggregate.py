"""AggregateProducts: one row per (retailer, product id) from its images' scores.

A ``CombineFn`` (never a GroupByKey into a list: a product with thousands of images must not
blow memory) keeps, per product, the element-wise maximum of its images' category, gender,
age-group and colour score vectors (the study's cumulative max), counts, and the retailer's own
mapped labels. The study's person filter (on by default) ignores person images for the
category when the product also has packshots; the colour model's label always comes from the
non-person images when the product has any. Below ``min_confidence`` the label is null and
flagged. The product's category, gender and age group are judged against the retailer's mapped
ones with the model's normalised cumulative-max probabilities and what its out-of-fold
predictions say of each head (:mod:`pipeline.label_quality`): a verdict and the estimated
probability that the retailer's label is wrong. Without a colour model the product's colour is
the dominant-colour heuristic of its primary image.

Catalog quality, from the same accumulator: the product's primary image (the retailer's
declared one, else the packshot with the highest calibrated category score), the share of
its images whose own top-1 is the product's category, and the review queue: ``needs_review``
with reason codes, a tier and a priority, under per-field thresholds that a run can set per
retailer (the rules and the priorities: :func:`pipeline.product_rules.review`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np

from pipeline.label_quality import HeadQuality
from pipeline.product_rules import (
    REVIEW_FIELDS,
    AggregateConfig,
    FieldJudges,
    cumulative_max_label,
    primary_image,
    review,
)
from pipeline.records import CategoryRule, ImageRecord, ProductRecord
from pipeline.title_evidence import TitleLabels, read_title
from schemas.taxonomy import Taxonomy, load_taxonomy

MODEL_FIELDS = ("category_model", "gender_model", "person_model", "age_group_model", "colour_model")


@dataclass
class ProductAccumulator:
    images: int = 0
    person_images: int = 0
    category_all: np.ndarray | None = None  # max over every image
    category_packshots: np.ndarray | None = None  # max over images that are not person shots
    gender: np.ndarray | None = None
    age_group: np.ndarray | None = None
    colour_all: np.ndarray | None = None  # the colour model's scores, max over every image
    colour_packshots: np.ndarray | None = None  # and over the images that are not person shots
    retailer_categories: Counter = field(default_factory=Counter)
    retailer_genders: Counter = field(default_factory=Counter)
    retailer_age_groups: Counter = field(default_factory=Counter)
    title: str | None = None
    brand: str | None = None
    models: tuple[str | None, ...] = (None,) * len(MODEL_FIELDS)
    # Catalog quality.
    # Primary image candidates, each with its colour (skin discounted on person shots).
    first_image: tuple[int, str, str | None] | None = None  # (position, uri, colour), lowest position
    declared_primary: tuple[int, str, str | None] | None = None
    best_packshot: tuple[float, int, str, str | None] | None = None  # (category score, -position, uri, colour)
    best_image: tuple[float, int, str, str | None] | None = None
    votes_all: Counter = field(default_factory=Counter)  # each image's own top-1 category
    votes_packshots: Counter = field(default_factory=Counter)
    unmapped_images: int = 0
    missing_category_images: int = 0  # the retailer gave no category (rule MISSING)
    variant_ids: set[str] = field(default_factory=set)


def _most_common(counter: Counter) -> str | None:
    return counter.most_common(1)[0][0] if counter else None


def _min_key(a, b):
    return b if a is None else a if b is None else min(a, b)


def _max_key(a, b):
    return b if a is None else a if b is None else max(a, b)


def _max(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return np.maximum(a, b)


class ProductCombineFn(beam.CombineFn):
    def __init__(self, category_classes: tuple[str, ...], gender_classes: tuple[str, ...],
                 cfg: AggregateConfig = AggregateConfig(), taxonomy_path: str | None = None, *,
                 age_group_classes: tuple[str, ...] = (), colour_classes: tuple[str, ...] = (),
                 qualities: dict[str, HeadQuality] | None = None):
        """``qualities``: task -> what the model's out-of-fold predictions say of its head
        (:mod:`pipeline.label_quality`); a head without one judges with default thresholds."""
        self._category_classes, self._gender_classes = category_classes, gender_classes
        self._age_group_classes, self._colour_classes = age_group_classes, colour_classes
        self._cfg, self._taxonomy_path = cfg, taxonomy_path
        self._qualities = dict(qualities or {})
        self._taxonomy: Taxonomy | None = None
        self._judges: FieldJudges | None = None

    def setup(self):
        self._taxonomy = load_taxonomy(self._taxonomy_path)
        self._judges = FieldJudges({"category": self._category_classes, "gender": self._gender_classes,
                                    "age_group": self._age_group_classes}, self._qualities, self._taxonomy)

    def create_accumulator(self) -> ProductAccumulator:
        return ProductAccumulator()

    def add_input(self, acc: ProductAccumulator, record: ImageRecord | str) -> ProductAccumulator:
        if isinstance(record, str):  # a variant id of the product (AggregateProducts' "records" input)
            acc.variant_ids.add(record)
            return acc
        acc.images += 1
        if record.variant_id:
            acc.variant_ids.add(record.variant_id)
        person = record.person_score is not None and record.person_score >= self._cfg.person_threshold
        acc.person_images += person
        if record.category_scores:
            scores = np.asarray(record.category_scores, dtype=np.float64)
            acc.category_all = _max(acc.category_all, scores)
            if not person:
                acc.category_packshots = _max(acc.category_packshots, scores)
        if record.gender_scores:
            acc.gender = _max(acc.gender, np.asarray(record.gender_scores, dtype=np.float64))
        if record.age_group_scores:
            acc.age_group = _max(acc.age_group, np.asarray(record.age_group_scores, dtype=np.float64))
        if record.colour_scores:
            colours = np.asarray(record.colour_scores, dtype=np.float64)
            acc.colour_all = _max(acc.colour_all, colours)
            if not person:
                acc.colour_packshots = _max(acc.colour_packshots, colours)
        if record.category:
            acc.retailer_categories[record.category] += 1
        if record.gender:
            acc.retailer_genders[record.gender] += 1
        if record.age_group:
            acc.retailer_age_groups[record.age_group] += 1
        acc.title = acc.title or record.title
        acc.brand = acc.brand or record.brand
        acc.models = tuple(a or getattr(record, name) for a, name in zip(acc.models, MODEL_FIELDS))
        colour = record.dominant_colour_no_skin if person else record.dominant_colour
        where = (record.image_position, record.image_uri, colour)
        acc.first_image = _min_key(acc.first_image, where)
        if record.is_primary:
            acc.declared_primary = _min_key(acc.declared_primary, where)
        if record.category_scores:
            ranked = (max(record.category_scores), -record.image_position, record.image_uri, colour)
            acc.best_image = _max_key(acc.best_image, ranked)
            if not person:
                acc.best_packshot = _max_key(acc.best_packshot, ranked)
        if record.predicted_category:
            acc.votes_all[record.predicted_category] += 1
            if not person:
                acc.votes_packshots[record.predicted_category] += 1
        acc.unmapped_images += record.category_rule == CategoryRule.UNMAPPED
        acc.missing_category_images += record.category_rule == CategoryRule.MISSING
        return acc

    def merge_accumulators(self, accumulators) -> ProductAccumulator:
        out = ProductAccumulator()
        for acc in accumulators:
            out.images += acc.images
            out.person_images += acc.person_images
            out.category_all = _max(out.category_all, acc.category_all)
            out.category_packshots = _max(out.category_packshots, acc.category_packshots)
            out.gender = _max(out.gender, acc.gender)
            out.age_group = _max(out.age_group, acc.age_group)
            out.colour_all = _max(out.colour_all, acc.colour_all)
            out.colour_packshots = _max(out.colour_packshots, acc.colour_packshots)
            out.retailer_categories.update(acc.retailer_categories)
            out.retailer_genders.update(acc.retailer_genders)
            out.retailer_age_groups.update(acc.retailer_age_groups)
            out.title, out.brand = out.title or acc.title, out.brand or acc.brand
            out.models = tuple(a or b for a, b in zip(out.models, acc.models))
            out.first_image = _min_key(out.first_image, acc.first_image)
            out.declared_primary = _min_key(out.declared_primary, acc.declared_primary)
            out.best_packshot = _max_key(out.best_packshot, acc.best_packshot)
            out.best_image = _max_key(out.best_image, acc.best_image)
            out.votes_all.update(acc.votes_all)
            out.votes_packshots.update(acc.votes_packshots)
            out.unmapped_images += acc.unmapped_images
            out.missing_category_images += acc.missing_category_images
            out.variant_ids |= acc.variant_ids
        return out

    def extract_output(self, acc: ProductAccumulator) -> ProductAccumulator:
        return acc

    def product_of(self, images: list[ImageRecord]) -> ProductRecord:
        """The product row of one product's complete image rows, outside a Beam combine (its
        records being exactly these images: no de-duplicated or dead-lettered variant)."""
        acc = self.create_accumulator()
        for image in images:
            self.add_input(acc, image)
        return self.to_product((images[0].retailer, images[0].product_id), acc)

    def to_product(self, key: tuple[str, str], acc: ProductAccumulator) -> ProductRecord:
        if self._taxonomy is None:  # this copy runs in a Map, where CombineFn.setup is not called
            self.setup()
        taxonomy = self._taxonomy
        retailer, product_id = key
        filtered = self._cfg.person_filter and acc.category_packshots is not None and acc.person_images > 0
        scores = acc.category_packshots if filtered else acc.category_all
        cfg = self._cfg
        labels = {"category": self._judges.label("category", scores, cfg.min_category_confidence),
                  "gender": self._judges.label("gender", acc.gender, cfg.min_gender_confidence),
                  "age_group": self._judges.label("age_group", acc.age_group, cfg.min_age_group_confidence)}
        (category, category_score, category_low, _), (gender, gender_score, gender_low, _), \
            (age_group, age_group_score, age_group_low, _) = labels.values()
        retailer_labels = {"category": _most_common(acc.retailer_categories),
                           "gender": _most_common(acc.retailer_genders),
                           "age_group": _most_common(acc.retailer_age_groups)}
        title = read_title(acc.title, taxonomy) if cfg.title_evidence else TitleLabels()
        judged = self._judges.judge(labels, retailer_labels, cfg, retailer, title)
        primary_uri, primary_rule, colour = primary_image(acc.declared_primary, acc.best_packshot,
                                                          acc.best_image, acc.first_image)
        colours = acc.colour_packshots if acc.colour_packshots is not None else acc.colour_all
        colour_score = None
        if colours is not None and self._colour_classes:  # the colour model, else the heuristic
            colour, colour_score, _ = cumulative_max_label(colours, self._colour_classes, 0.0)
        votes = acc.votes_packshots if filtered else acc.votes_all
        voted = sum(votes.values())
        share = votes.get(category, 0) / voted if voted and category else None
        reasons, tier, priority = review(
            cfg, retailer, judged, unmapped_images=acc.unmapped_images, category_score=category_score,
            missing_category=retailer_labels["category"] is None and acc.missing_category_images > 0,
            vote_share=share, voted=voted)
        verdicts = {f"{name}_agreement": judged[name].verdict if name in judged else None for name in REVIEW_FIELDS}
        wrong = {f"{name}_error_probability": judged[name].error_probability if name in judged else None
                 for name in REVIEW_FIELDS}
        return ProductRecord(
            retailer=retailer, product_id=product_id, title=acc.title, brand=acc.brand,
            variant_ids=tuple(sorted(acc.variant_ids)), image_count=acc.images, person_image_count=acc.person_images,
            category=category, category_score=category_score, category_low_confidence=category_low,
            category_person_filtered=filtered,
            category_path=taxonomy.path_string(category) if category in taxonomy else None,
            category_level1=taxonomy.rollup(category, 1) if category in taxonomy else None,
            category_level2=taxonomy.rollup(category, 2) if category in taxonomy else None,
            category_scores=tuple(round(float(s), 6) for s in scores) if scores is not None else (),
            gender=gender, gender_score=gender_score, gender_low_confidence=gender_low,
            age_group=age_group, age_group_score=age_group_score, age_group_low_confidence=age_group_low,
            retailer_category=retailer_labels["category"], retailer_gender=retailer_labels["gender"],
            retailer_age_group=retailer_labels["age_group"], **verdicts, **wrong,
            title_category=title.category, title_gender=title.gender, title_age_group=title.age_group,
            **dict(zip(MODEL_FIELDS, acc.models)),
            primary_image_uri=primary_uri, primary_image_rule=primary_rule, colour=colour, colour_score=colour_score,
            image_vote_share=round(share, 4) if share is not None else None,
            needs_review=bool(reasons), review_reasons=reasons, review_priority=priority,
            review_tier=int(tier) if tier else None, review_tier_name=tier.name if tier else None,
        )


class AggregateProducts(beam.PTransform):
    """ImageRecord (with scores) -> ProductRecord, one per (retailer, product id).

    The input is the scored images, or ``{"images": ..., "records": ...}`` where ``records`` are
    every ImageRecord the sources emitted (before de-duplication and image loading): their variant
    ids join ``variant_ids`` of the product, so variants whose image rows were de-duplicated or
    dead-lettered are still listed. Products with no image left are not emitted (their records
    are in the dead letters).
    """

    def __init__(self, category_classes: tuple[str, ...] = (), gender_classes: tuple[str, ...] = (),
                 cfg: AggregateConfig = AggregateConfig(), taxonomy_path: str | None = None, *,
                 age_group_classes: tuple[str, ...] = (), colour_classes: tuple[str, ...] = (),
                 fn: ProductCombineFn | None = None):
        """``fn``: the combine fn itself, instead of the arguments to build one."""
        super().__init__()
        self._fn = fn or ProductCombineFn(category_classes, gender_classes, cfg, taxonomy_path,
                                          age_group_classes=age_group_classes, colour_classes=colour_classes)

    def expand(self, inputs):
        fn = self._fn
        images, records = (inputs["images"], inputs.get("records")) if isinstance(inputs, dict) else (inputs, None)
        keyed = [images | "KeyByProduct" >> beam.Map(lambda r: ((r.retailer, r.product_id), r))]
        if records is not None:
            keyed.append(records | "VariantIds" >> beam.FlatMap(
                lambda r: [((r.retailer, r.product_id), r.variant_id)] if r.variant_id else []))
        return (
            keyed
            | "ImagesAndVariants" >> beam.Flatten()
            | "CumulativeMax" >> beam.CombinePerKey(fn)
            | "ToProduct" >> beam.FlatMapTuple(lambda key, acc: [fn.to_product(key, acc)] if acc.images else [])
        )
