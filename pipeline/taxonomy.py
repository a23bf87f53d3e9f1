"""MapTaxonomy: retailer category / gender / age vocabulary -> the 43-node hierarchy.

The rules come from each retailer's mapping file (:mod:`schemas.mapping`) and are tried in
order: an exact key on any raw category value, then the longest path prefix (a ``*``
segment matches any one segment), then a title
keyword as a last resort. Within one rule kind the deepest node wins (``SKINNY_JEANS`` beats
``JEANS``). Values that match nothing keep ``category = None`` with rule ``UNMAPPED`` (or
``OUT_OF_SCOPE`` when the mapping lists them as deliberately out of scope) and are counted per
value in the run manifest. The functions here are pure; the PTransform only applies them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import apache_beam as beam

from pipeline.pickled import replaced
from pipeline.records import CategoryRule, ImageRecord
from schemas.mapping import RetailerMapping, normalize_key
from schemas.taxonomy import Taxonomy, load_taxonomy

METRICS_NAMESPACE = "fashion_enrich.taxonomy"


@dataclass(frozen=True)
class CategoryMatch:
    node: str | None
    rule: CategoryRule
    match: str | None = None


def _deepest(taxonomy: Taxonomy, candidates: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(node, matched key) with the greatest depth; the first listed wins ties."""
    best = None
    for node, key in candidates:
        if best is None or taxonomy.depth(node) > taxonomy.depth(best[0]):
            best = (node, key)
    return best


@functools.lru_cache(maxsize=4096)
def _keyword_pattern(keyword: str) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])" + re.escape(keyword) + r"(?![a-z0-9])")


def _prefix_length(rule: str, key: str) -> int:
    """Number of segments of ``rule`` if it is a path prefix of ``key`` ('*' matches a segment), else 0."""
    segments, parts = rule.split(" > "), key.split(" > ")
    if len(segments) <= len(parts) and all(s in ("*", p) for s, p in zip(segments, parts)):
        return len(segments)
    return 0


def map_category(mapping: RetailerMapping, taxonomy: Taxonomy, raw_values: tuple[str, ...],
                 title: str | None) -> CategoryMatch:
    keys = [normalize_key(v) for v in raw_values if v and str(v).strip()]
    exact = [(mapping.exact[k], k) for k in keys if k in mapping.exact]
    if exact:
        node, key = _deepest(taxonomy, exact)
        return CategoryMatch(node, CategoryRule.EXACT, key)
    prefixes = [(_prefix_length(rule, key), node, rule) for key in keys for rule, node in mapping.prefix.items()]
    prefixes = [p for p in prefixes if p[0]]
    if prefixes:
        longest = max(p[0] for p in prefixes)
        node, key = _deepest(taxonomy, [(node, key) for n, node, key in prefixes if n == longest])
        return CategoryMatch(node, CategoryRule.PREFIX, key)
    out_of_scope = next((k for k in keys if any(_prefix_length(o, k) for o in mapping.category_out_of_scope)), None)
    if out_of_scope is not None:
        return CategoryMatch(None, CategoryRule.OUT_OF_SCOPE, out_of_scope)
    found = keyword_match(mapping.keywords, taxonomy, title)
    if found:
        return CategoryMatch(found[0], CategoryRule.KEYWORD, found[1])
    if keys:
        return CategoryMatch(None, CategoryRule.UNMAPPED, keys[0])
    return CategoryMatch(None, CategoryRule.MISSING, None)


def words_in(words, title: str | None) -> list[str]:
    """The ``words`` (or phrases) found as whole words in ``title``, case-insensitive."""
    if not title:
        return []
    text = normalize_key(title)
    return [word for word in words if _keyword_pattern(word).search(text)]


def keyword_match(keywords: dict[str, str], taxonomy: Taxonomy, title: str | None) -> tuple[str, str] | None:
    """(node, keyword) of the longest keyword found as whole words in ``title`` (the deepest node
    on a tie), or None."""
    hits = [(kw, keywords[kw]) for kw in words_in(keywords, title)]
    if not hits:
        return None
    longest = max(len(kw) for kw, _ in hits)
    return _deepest(taxonomy, [(node, kw) for kw, node in hits if len(kw) == longest])


def map_gender(mapping: RetailerMapping, raw_values: tuple[str, ...]) -> str | None:
    mapped = {mapping.gender_values[k] for k in map(normalize_key, raw_values) if k in mapping.gender_values}
    if not mapped:
        return None
    if len(mapped) == 1:
        return mapped.pop()
    return "UNISEX"  # MALE + FEMALE, or UNISEX with either


def map_age_group(mapping: RetailerMapping, raw_age: tuple[str, ...], raw_gender: tuple[str, ...]) -> str | None:
    """Age from the age values, else from gender values such as 'Boys', else the default."""
    for values in (raw_age, raw_gender):
        mapped = {mapping.age_values[k] for k in map(normalize_key, values) if k in mapping.age_values}
        if mapped:
            return "ADULT" if "ADULT" in mapped else mapped.pop()
    return mapping.age_default


def map_colour(mapping: RetailerMapping, raw_values: tuple[str, ...]) -> str | None:
    """The retailer's colour on the colour vocabulary; None when absent, unknown or ambiguous."""
    mapped = {mapping.colour_values[k] for k in map(normalize_key, raw_values) if k in mapping.colour_values}
    return mapped.pop() if len(mapped) == 1 else None


def apply_mapping(record: ImageRecord, mapping: RetailerMapping, taxonomy: Taxonomy) -> ImageRecord:
    match = map_category(mapping, taxonomy, record.raw_category, record.title)
    node = match.node
    return replaced(
        record,
        category=node,
        category_path=taxonomy.path_string(node) if node else None,
        category_level1=taxonomy.rollup(node, 1) if node else None,
        category_level2=taxonomy.rollup(node, 2) if node else None,
        category_rule=match.rule.value,
        category_match=match.match,
        gender=map_gender(mapping, record.raw_gender),
        age_group=map_age_group(mapping, record.raw_age_group, record.raw_gender),
        retailer_colour=map_colour(mapping, record.raw_colour),
    )


class _MapTaxonomyFn(beam.DoFn):
    def __init__(self, mappings: dict[str, RetailerMapping], taxonomy_path: str | None):
        self._mappings = mappings
        self._taxonomy_path = taxonomy_path
        self._taxonomy: Taxonomy | None = None

    def setup(self):
        self._taxonomy = load_taxonomy(self._taxonomy_path)

    def process(self, record: ImageRecord):
        mapped = apply_mapping(record, self._mappings[record.retailer], self._taxonomy)
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{mapped.category_rule.lower()}").inc()
        yield mapped


class MapTaxonomy(beam.PTransform):
    """Adds category, category_path, levels, rule, gender and age group to every record."""

    def __init__(self, mappings: dict[str, RetailerMapping], *, taxonomy_path: str | None = None):
        super().__init__()
        self._mappings = dict(mappings)
        self._taxonomy_path = taxonomy_path

    def expand(self, records):
        return records | "Map" >> beam.ParDo(_MapTaxonomyFn(self._mappings, self._taxonomy_path))
