"""The evidence behind a retailer's vocabulary, read back from one or more runs' output.

For every distinct retailer value of a field (a category value or path, a gender or age word,
keys as the mapping matches them: :func:`schemas.mapping.normalize_key`): how many products
carry it (the images table's raw values), what the model said of them (the products table's
category, gender and age group: each product one vote, :mod:`pipeline.mapping_votes`), what
their titles name (``title_category`` ...), and, given the mapping in force, what it makes of
the value alone (the node and the rule: a product carrying several values gets the deepest of
theirs). Age words are read from the age column, and from the gender column for products
without one (Myntra's "Boys"), as the mapping applies them.

Several outputs (the folds of a cross-validated run, several nights) are read as one catalog;
each output's latest run, the products of one retailer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from pipeline.mapping_votes import (
    MIN_PRODUCTS,
    Vote,
    Z,
    gender_background,
    kids_like,
    vote_age,
    vote_category,
    vote_gender,
)
from pipeline.taxonomy import map_category
from schemas.mapping import RetailerMapping, normalize_key
from schemas.taxonomy import Relation, Taxonomy

FIELDS = ("category", "gender", "age_group")
EXAMPLES = 4  # example products kept per value and label
_PRODUCT_COLUMNS = ["product_id", "title", "primary_image_uri", "category", "gender", "age_group",
                    "category_score", "gender_score", "age_group_score", "title_category", "title_gender",
                    "title_age_group"]
_IMAGE_COLUMNS = ["product_id", "raw_category", "raw_gender", "raw_age_group"]


@dataclass(frozen=True)
class Example:
    product_id: str
    image_uri: str | None
    model: str | None  # the model's label of the product
    title: str | None


@dataclass(frozen=True)
class ValueEvidence:
    """One retailer value of one field and what its products show."""

    field: str  # category | gender | age_group
    key: str  # normalised, as mapping files match it
    spelling: str  # the retailer's most frequent spelling
    vote: Vote
    counts: dict[str, int]  # model label -> products
    title_agree: int = 0  # titles naming the voted node, or a node on its branch
    title_other: dict[str, int] = field(default_factory=dict)  # titles naming another node: node -> products
    title_none: int = 0
    mean_score: float | None = None  # the mean model score of its products' labels (calibrated probability)
    in_force: str | None = None  # the node the mapping in force gives the value alone (None: none)
    rule: str | None = None  # how: EXACT, PREFIX, OUT_OF_SCOPE, UNMAPPED (category), VALUES, DEFAULT, UNMAPPED
    rule_key: str | None = None  # the key of the category rule that matched
    examples: tuple[Example, ...] = ()

    @property
    def products(self) -> int:
        return self.vote.products

    def examples_of(self, wanted=None, unwanted=None, limit: int = EXAMPLES) -> list[Example]:
        return [e for e in self.examples if (wanted is None or e.model in wanted)
                and (unwanted is None or e.model not in unwanted)][:limit]


def read_products(outputs: list[str], retailer: str | None,
                  run_date: str | None = None) -> tuple[pd.DataFrame, str, tuple[str, ...] | None]:
    """One row per product of ``retailer`` over ``outputs`` (each output's latest run, or its run
    of ``run_date``): the product's model labels and title labels joined with the raw values most
    of its images carry (as the products table's retailer labels are taken); the retailer's name,
    and the category model's classes (None when no category model ran)."""
    from pipeline.inspect_output import read_manifest, read_table
    from pipeline.options import ConfigError

    frames, classes = [], set()
    for output in outputs:
        manifest = read_manifest(output, run_date)
        classes |= set(((manifest.get("models") or {}).get("category") or {}).get("classes") or ())
        products = read_table(output, "products", manifest["run_date"], _PRODUCT_COLUMNS).to_pandas()
        images = read_table(output, "images", manifest["run_date"], _IMAGE_COLUMNS).to_pandas()
        retailers = sorted(set(products["retailer"]))
        if not retailers:
            raise ConfigError(f"{output}: its run of {manifest['run_date']} wrote no products")
        if retailer is None:
            if len(retailers) != 1:
                raise ConfigError(f"{output} holds retailers {', '.join(retailers)}: name one with --retailer")
            retailer = retailers[0]
        products = products[products["retailer"] == retailer]
        frames.append(products.merge(_most_common_values(images[images["retailer"] == retailer]), on="product_id",
                                     how="left"))
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["product_id"])
    if frame.empty:
        raise ConfigError(f"no products of retailer {retailer!r} in {', '.join(outputs)}")
    return frame.reset_index(drop=True), retailer, tuple(sorted(classes)) or None


def _most_common_values(images: pd.DataFrame) -> pd.DataFrame:
    """Per product, the raw values that most of its images carry (the first image's on a tie)."""
    raw = ["raw_category", "raw_gender", "raw_age_group"]
    keyed = images[["product_id"]].copy()
    keyed["values"] = list(zip(*(images[c].map(lambda v: tuple(v) if v is not None and not isinstance(v, float)
                                                else ()) for c in raw)))
    keyed["order"] = range(len(keyed))
    counted = keyed.groupby(["product_id", "values"], sort=False).agg(n=("order", "size"), first=("order", "min"))
    best = counted.reset_index().sort_values(["n", "first"], ascending=[False, True]).drop_duplicates("product_id")
    return pd.DataFrame({"product_id": best["product_id"].to_numpy(),
                         **{c: [v[i] for v in best["values"]] for i, c in enumerate(raw)}})


def _values(raw) -> list[tuple[str, str]]:
    """(key, spelling) of each distinct non-empty value."""
    out = {}
    if raw is None or isinstance(raw, (float, str)):  # no image row (NaN), or not a list
        raw = () if raw is None or isinstance(raw, float) else (raw,)
    for value in raw:
        if value is None:
            continue
        text = " ".join(str(value).split())
        key = normalize_key(text)
        if key and key not in out:
            out[key] = text
    return list(out.items())


def category_values(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each product's category keys, in the order the retailer gave them."""
    return [tuple(key for key, _ in _values(raw)) for raw in frame["raw_category"]]


def _exploded(frame: pd.DataFrame, field_name: str) -> pd.DataFrame:
    rows = []
    age_from_gender = field_name == "age_group"
    for record in frame.itertuples(index=False):
        raw = getattr(record, f"raw_{field_name}")
        values = _values(raw)
        if age_from_gender and not values:
            values = _values(record.raw_gender)  # as schemas.mapping applies age words
        for key, spelling in values:
            rows.append((key, spelling, record.product_id, getattr(record, field_name),
                         getattr(record, f"{field_name}_score", None), getattr(record, f"title_{field_name}"),
                         record.primary_image_uri))
    return pd.DataFrame(rows, columns=["key", "spelling", "product_id", "model", "score", "title", "uri"])


def in_force(field_name: str, key: str, mapping: RetailerMapping | None,
             taxonomy: Taxonomy) -> tuple[str | None, str | None, str | None]:
    """(node, rule, rule key) the mapping gives the value ``key`` of ``field_name`` alone."""
    if mapping is None:
        return None, None, None
    if field_name == "category":
        match = map_category(mapping, taxonomy, (key,), None)
        return match.node, match.rule.value, match.match
    if field_name == "gender":
        node = mapping.gender_values.get(key)
        return node, "VALUES" if node else "OUT_OF_SCOPE" if key in mapping.gender_out_of_scope else "UNMAPPED", None
    node = mapping.age_values.get(key)
    if node:
        return node, "VALUES", None
    return mapping.age_default, "DEFAULT" if mapping.age_default else "UNMAPPED", None


def _title_agrees(field_name: str, taxonomy: Taxonomy, node: str | None, title: str) -> bool | None:
    if node is None:
        return None
    if field_name == "category":
        return node in taxonomy and title in taxonomy and taxonomy.relation(node, title) != Relation.UNRELATED
    return title == node or "UNISEX" in (title, node)


def _none(value):
    return None if value is None or (isinstance(value, float) and value != value) else value


def evidence(frame: pd.DataFrame, taxonomy: Taxonomy, *, mapping: RetailerMapping | None = None,
             min_products: int = MIN_PRODUCTS, z: float = Z) -> list[ValueEvidence]:
    """Every value of every field, the most frequent first; with ``mapping``, what it makes of each."""
    found = []
    for field_name in FIELDS:
        groups = [(key, group, Counter(m for m in group["model"] if _none(m) is not None))
                  for key, group in _exploded(frame, field_name).groupby("key", sort=False)]
        split = kids_like({key: (c.get("KIDS", 0), sum(c.values())) for key, _, c in groups},
                          min_products=min_products, z=z) if field_name == "age_group" else None
        background = gender_background([c for _, _, c in groups], min_products=min_products, z=z)
        for key, group, counts in groups:
            products = group["product_id"].nunique()
            if field_name == "category":
                vote = vote_category(counts, taxonomy, products=products, min_products=min_products, z=z)
            elif field_name == "gender":
                vote = vote_gender(counts, background, products=products, min_products=min_products, z=z)
            else:
                vote = vote_age(counts, split[1] if split else None, in_kid_like=bool(split and key in split[0]),
                                products=products, min_products=min_products, z=z)
            titles = [t for t in group["title"] if _none(t) is not None]
            agree = [t for t in titles if _title_agrees(field_name, taxonomy, vote.node, t)]
            scores = [float(v) for v in group["score"] if _none(v) is not None]
            node, rule, rule_key = in_force(field_name, key, mapping, taxonomy)
            examples, per_label = [], Counter()
            for r in group.itertuples(index=False):
                label = _none(r.model)
                if per_label[label] < EXAMPLES:
                    per_label[label] += 1
                    examples.append(Example(r.product_id, _none(r.uri), label, _none(r.title)))
            found.append(ValueEvidence(
                field=field_name, key=key, spelling=Counter(group["spelling"]).most_common(1)[0][0], vote=vote,
                counts=dict(counts), title_agree=len(agree),
                title_other=dict(Counter(t for t in titles if t not in agree)) if vote.node else dict(Counter(titles)),
                title_none=len(group) - len(titles), mean_score=sum(scores) / len(scores) if scores else None,
                in_force=node, rule=rule, rule_key=rule_key,
                examples=tuple(examples)))
    return sorted(found, key=lambda e: (FIELDS.index(e.field), -e.products, e.key))
