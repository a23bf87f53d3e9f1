"""What a product's own title says of its category, gender and age group: evidence beside the
retailer's structured fields when the model judges them (:mod:`pipeline.label_quality`).

A retailer's title and its category or gender field are written apart, and a field set wrongly
(a product filed under the wrong path, a gender flipped by a feed template) often keeps a title
that says otherwise ("Puma Men Black Sports Shoes" filed under Women). The title's words are read
with the shared category keywords (``schemas/keywords.yaml``, longest keyword, deepest node) and
the gender and age words of ``schemas/title_words.yaml``; each label found counts as one more
noisy witness of the product's true class, wrong with probability :data:`TITLE_ERROR_RATE`
(keywords misread: "shirt dress"). Titles and fields are often written from the same data, so
a title that agrees with the field may only repeat it (:data:`TITLE_COPY_RATE`): agreement
counts for less than contradiction, which a copy cannot produce. A title saying nothing, or
written in a language the word lists do not cover, leaves the image's probabilities as they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from pipeline.taxonomy import keyword_match, words_in
from schemas.mapping import default_keywords
from schemas.taxonomy import Taxonomy

TITLE_ERROR_RATE = 0.1  # a title's label is wrong, or misread, this often
TITLE_COPY_RATE = 0.5  # a title merely repeats the field it agrees with (written from the same data) this often


@functools.lru_cache(maxsize=1)
def _title_words() -> dict[str, dict[str, str]]:
    with open(Path(str(resources.files("schemas").joinpath("title_words.yaml"))), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.lru_cache(maxsize=1)
def _keywords() -> dict[str, str]:
    return default_keywords()


@dataclass(frozen=True)
class TitleLabels:
    category: str | None = None
    gender: str | None = None
    age_group: str | None = None


def read_title(title: str | None, taxonomy: Taxonomy) -> TitleLabels:
    """The category, gender and age group a title names (None where it names none, or both genders)."""
    if not title:
        return TitleLabels()
    words = _title_words()
    category = keyword_match(_keywords(), taxonomy, title)
    genders = {words["gender"][w] for w in words_in(words["gender"], title)}
    if {"MALE", "FEMALE"} <= genders:
        gender = None
    else:
        gender = "MALE" if "MALE" in genders else "FEMALE" if "FEMALE" in genders else \
            "UNISEX" if "UNISEX" in genders else None
    ages = {words["age_group"][w] for w in words_in(words["age_group"], title)}
    return TitleLabels(category=category[0] if category else None, gender=gender,
                       age_group=ages.pop() if len(ages) == 1 else None)
