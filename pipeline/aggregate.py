"""AggregateProducts: one row per (retailer, product id) from its images' scores.

A ``CombineFn`` (never a GroupByKey into a list: a product with thousands of images must not
blow memory) keeps, per product, the element-wise maximum of its images' category and gender
score vectors (the study's cumulative max), counts, and the retailer's own mapped labels.
The study's person filter (on by default) ignores person images for the category when the
product also has packshots. Below ``min_confidence`` the label is null and flagged. The
product's label is compared with the retailer's mapped one (see :func:`compare`), so the
output points at metadata that looks wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np

from pipeline.records import ImageRecord, ProductRecord
from schemas.taxonomy import Relation, Taxonomy, load_taxonomy


@dataclass(frozen=True)
class AggregateConfig:
    person_filter: bool = True
    person_threshold: float = 0.5
    min_category_confidence: float = 0.0
    min_gender_confidence: float = 0.0


@dataclass
class ProductAccumulator:
    images: int = 0
    person_images: int = 0
    category_all: np.ndarray | None = None  # max over every image
    category_packshots: np.ndarray | None = None  # max over images that are not person shots
    gender: np.ndarray | None = None
    retailer_categories: Counter = field(default_factory=Counter)
    retailer_genders: Counter = field(default_factory=Counter)
    title: str | None = None
    brand: str | None = None
    models: tuple[str | None, str | None, str | None] = (None, None, None)


def _max(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return np.maximum(a, b)


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


class ProductCombineFn(beam.CombineFn):
    def __init__(self, category_classes: tuple[str, ...], gender_classes: tuple[str, ...],
                 cfg: AggregateConfig = AggregateConfig(), taxonomy_path: str | None = None):
        self._category_classes, self._gender_classes = category_classes, gender_classes
        self._cfg, self._taxonomy_path = cfg, taxonomy_path
        self._taxonomy: Taxonomy | None = None

    def setup(self):
        self._taxonomy = load_taxonomy(self._taxonomy_path)

    def create_accumulator(self) -> ProductAccumulator:
        return ProductAccumulator()

    def add_input(self, acc: ProductAccumulator, record: ImageRecord) -> ProductAccumulator:
        acc.images += 1
        person = record.person_score is not None and record.person_score >= self._cfg.person_threshold
        acc.person_images += person
        if record.category_scores:
            scores = np.asarray(record.category_scores, dtype=np.float64)
            acc.category_all = _max(acc.category_all, scores)
            if not person:
                acc.category_packshots = _max(acc.category_packshots, scores)
        if record.gender_scores:
            acc.gender = _max(acc.gender, np.asarray(record.gender_scores, dtype=np.float64))
        if record.category:
            acc.retailer_categories[record.category] += 1
        if record.gender:
            acc.retailer_genders[record.gender] += 1
        acc.title = acc.title or record.title
        acc.brand = acc.brand or record.brand
        acc.models = tuple(a or b for a, b in zip(acc.models, (record.category_model, record.gender_model,
                                                                record.person_model)))
        return acc

    def merge_accumulators(self, accumulators) -> ProductAccumulator:
        out = ProductAccumulator()
        for acc in accumulators:
            out.images += acc.images
            out.person_images += acc.person_images
            out.category_all = _max(out.category_all, acc.category_all)
            out.category_packshots = _max(out.category_packshots, acc.category_packshots)
            out.gender = _max(out.gender, acc.gender)
            out.retailer_categories.update(acc.retailer_categories)
            out.retailer_genders.update(acc.retailer_genders)
            out.title, out.brand = out.title or acc.title, out.brand or acc.brand
            out.models = tuple(a or b for a, b in zip(out.models, acc.models))
        return out

    def extract_output(self, acc: ProductAccumulator) -> ProductAccumulator:
        return acc

    def to_product(self, key: tuple[str, str], acc: ProductAccumulator) -> ProductRecord:
        if self._taxonomy is None:  # this copy runs in a Map, where CombineFn.setup is not called
            self._taxonomy = load_taxonomy(self._taxonomy_path)
        taxonomy = self._taxonomy
        retailer, product_id = key
        filtered = self._cfg.person_filter and acc.category_packshots is not None and acc.person_images > 0
        scores = acc.category_packshots if filtered else acc.category_all
        category, category_score, category_low = cumulative_max_label(
            scores, self._category_classes, self._cfg.min_category_confidence)
        gender, gender_score, gender_low = cumulative_max_label(
            acc.gender, self._gender_classes, self._cfg.min_gender_confidence)
        retailer_category = acc.retailer_categories.most_common(1)[0][0] if acc.retailer_categories else None
        retailer_gender = acc.retailer_genders.most_common(1)[0][0] if acc.retailer_genders else None
        return ProductRecord(
            retailer=retailer, product_id=product_id, title=acc.title, brand=acc.brand,
            image_count=acc.images, person_image_count=acc.person_images,
            category=category, category_score=category_score, category_low_confidence=category_low,
            category_person_filtered=filtered,
            category_path=taxonomy.path_string(category) if category in taxonomy else None,
            category_level1=taxonomy.rollup(category, 1) if category in taxonomy else None,
            category_level2=taxonomy.rollup(category, 2) if category in taxonomy else None,
            category_scores=tuple(round(float(s), 6) for s in scores) if scores is not None else (),
            gender=gender, gender_score=gender_score, gender_low_confidence=gender_low,
            retailer_category=retailer_category, retailer_gender=retailer_gender,
            category_agreement=compare(taxonomy, retailer_category, category, self._category_classes)
            if scores is not None else None,
            gender_agreement=compare(taxonomy, retailer_gender, gender, self._gender_classes)
            if acc.gender is not None else None,
            category_model=acc.models[0], gender_model=acc.models[1], person_model=acc.models[2],
        )


class AggregateProducts(beam.PTransform):
    """ImageRecord (with scores) -> ProductRecord, one per (retailer, product id)."""

    def __init__(self, category_classes: tuple[str, ...], gender_classes: tuple[str, ...],
                 cfg: AggregateConfig = AggregateConfig(), taxonomy_path: str | None = None):
        super().__init__()
        self._fn = ProductCombineFn(category_classes, gender_classes, cfg, taxonomy_path)

    def expand(self, images):
        fn = self._fn
        return (
            images
            | "KeyByProduct" >> beam.Map(lambda r: ((r.retailer, r.product_id), r))
            | "CumulativeMax" >> beam.CombinePerKey(fn)
            | "ToProduct" >> beam.MapTuple(fn.to_product)
        )
