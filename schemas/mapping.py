"""Retailer mapping files (``schemas/mappings/<retailer>.yaml``): loading and validation.

A mapping file tells fashion-enrich how to read one retailer's dump (``source``) and how to
map its vocabulary onto the taxonomy (``category``, ``gender``, ``age_group``)::

    retailer: myntra
    source:                      # how to read the dump
      format: csv                # zalando | asos | farfetch | csv | tsv | jsonl
      product_id: id             # generic formats only: column names ...
      image_uri: "images/{id}.jpg"   # ... or a template over columns
      category: [masterCategory, subCategory, articleType]   # joined into a " > " path
      gender: [gender]
    category:
      exact:    {"apparel > topwear > tshirts": T_SHIRTS}   # whole value
      prefix:   {"footwear > shoes": SHOES}                 # path prefix, longest wins
      keywords: {jeans: JEANS}                              # title words, last resort
      out_of_scope: ["personal care"]                       # known, deliberately unmapped
    gender:    {values: {men: MALE, boys: MALE}, out_of_scope: []}
    age_group: {values: {boys: KIDS}, default: ADULT}

Keys are matched case-insensitively with whitespace collapsed; path separators ``>`` are
normalised to `` > ``. A new retailer that fits the generic formats needs only such a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from schemas.taxonomy import Taxonomy, load_taxonomy

BUILTIN_FORMATS = ("zalando", "asos", "farfetch")
GENERIC_FORMATS = ("csv", "tsv", "jsonl")
GENERIC_FIELDS = ("product_id", "variant_id", "group", "image_uri", "image_separator", "image_role",
                  "title", "brand", "category", "gender", "age_group", "colour", "delimiter")
_TOP_KEYS = {"retailer", "source", "category", "gender", "age_group", "colour", "description"}


class MappingError(ValueError):
    """A mapping file is missing, unreadable or inconsistent with the taxonomy."""


def normalize_key(value: str) -> str:
    """Case- and whitespace-insensitive key; '>' path separators become ' > '."""
    parts = [" ".join(p.lower().split()) for p in str(value).split(">")]
    return " > ".join(p for p in parts if p)


@dataclass(frozen=True)
class SourceSpec:
    format: str
    columns: dict[str, object] = field(default_factory=dict)

    @property
    def is_generic(self) -> bool:
        return self.format in GENERIC_FORMATS


@dataclass(frozen=True)
class RetailerMapping:
    retailer: str
    source: SourceSpec
    exact: dict[str, str]
    prefix: dict[str, str]
    keywords: dict[str, str]
    category_out_of_scope: frozenset[str]
    gender_values: dict[str, str]
    gender_out_of_scope: frozenset[str]
    age_values: dict[str, str]
    age_default: str | None
    path: str = ""
    colour_values: dict[str, str] = field(default_factory=dict)  # onto the colour vocabulary (COLOUR_NAMES)


def _as_dict(data, where: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MappingError(f"{where} must be a mapping")
    return data


def _targets(raw: dict, allowed, where: str) -> dict[str, str]:
    out = {}
    for key, target in _as_dict(raw, where).items():
        if target not in allowed:
            raise MappingError(f"{where}: {key!r} maps to {target!r}, which is not one of the allowed values")
        nkey = normalize_key(key)
        if nkey in out and out[nkey] != target:
            raise MappingError(f"{where}: {key!r} is listed twice with different targets")
        out[nkey] = target
    return out


def parse_mapping(data: dict, *, taxonomy: Taxonomy | None = None, path: str = "") -> RetailerMapping:
    """Validate a parsed mapping document against the taxonomy."""
    taxonomy = taxonomy or load_taxonomy()
    where = path or "mapping"
    if not isinstance(data, dict):
        raise MappingError(f"{where}: must be a YAML mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown keys {sorted(unknown)}")
    retailer = data.get("retailer")
    if not isinstance(retailer, str) or not retailer.replace("_", "").replace("-", "").isalnum():
        raise MappingError(f"{where}: 'retailer' must be a simple name, got {retailer!r}")
    source = _as_dict(data.get("source"), f"{where}: source")
    fmt = source.get("format")
    if fmt not in BUILTIN_FORMATS + GENERIC_FORMATS:
        raise MappingError(f"{where}: source.format must be one of {BUILTIN_FORMATS + GENERIC_FORMATS}, got {fmt!r}")
    columns = {k: v for k, v in source.items() if k != "format"}
    if fmt in GENERIC_FORMATS:
        bad = set(columns) - set(GENERIC_FIELDS)
        if bad:
            raise MappingError(f"{where}: unknown source fields {sorted(bad)}")
        for required in ("product_id", "image_uri"):
            if not columns.get(required):
                raise MappingError(f"{where}: source.{required} is required for format {fmt}")
    elif columns:
        raise MappingError(f"{where}: format {fmt} takes no column settings, got {sorted(columns)}")
    category = _as_dict(data.get("category"), f"{where}: category")
    bad = set(category) - {"exact", "prefix", "keywords", "out_of_scope", "use_default_keywords"}
    if bad:
        raise MappingError(f"{where}: unknown category keys {sorted(bad)}")
    gender = _as_dict(data.get("gender"), f"{where}: gender")
    age = _as_dict(data.get("age_group"), f"{where}: age_group")
    age_default = age.get("default")
    if age_default is not None and age_default not in taxonomy.age_groups:
        raise MappingError(f"{where}: age_group.default {age_default!r} is not an age group")
    from pipeline.images.features import COLOUR_NAMES  # the vocabulary lives with the colour features

    colour = _as_dict(data.get("colour"), f"{where}: colour")
    if set(colour) - {"values"}:
        raise MappingError(f"{where}: unknown colour keys {sorted(set(colour) - {'values'})}")
    return RetailerMapping(
        retailer=retailer,
        source=SourceSpec(format=fmt, columns=columns),
        exact=_targets(category.get("exact"), taxonomy, f"{where}: category.exact"),
        prefix=_targets(category.get("prefix"), taxonomy, f"{where}: category.prefix"),
        keywords={
            **(_targets(default_keywords(), taxonomy, "keywords.yaml")
               if category.get("use_default_keywords", True) else {}),
            **_targets(category.get("keywords"), taxonomy, f"{where}: category.keywords"),
        },
        category_out_of_scope=frozenset(normalize_key(v) for v in category.get("out_of_scope") or ()),
        gender_values=_targets(gender.get("values"), taxonomy.genders, f"{where}: gender.values"),
        gender_out_of_scope=frozenset(normalize_key(v) for v in gender.get("out_of_scope") or ()),
        age_values=_targets(age.get("values"), taxonomy.age_groups, f"{where}: age_group.values"),
        age_default=age_default,
        path=str(path),
        colour_values=_targets(colour.get("values"), COLOUR_NAMES, f"{where}: colour.values"),
    )


def default_keywords() -> dict[str, str]:
    with open(Path(str(resources.files("schemas").joinpath("keywords.yaml"))), encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def builtin_mapping_file(retailer: str) -> Path | None:
    candidate = Path(str(resources.files("schemas").joinpath("mappings", f"{retailer}.yaml")))
    return candidate if candidate.is_file() else None


def builtin_retailers() -> list[str]:
    folder = Path(str(resources.files("schemas").joinpath("mappings")))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_mapping(path: str | Path, *, taxonomy: Taxonomy | None = None) -> RetailerMapping:
    """Read and validate a mapping file (local path or any Beam filesystem URI)."""
    from apache_beam.io.filesystems import FileSystems  # heavy import, only when reading

    try:
        with FileSystems.open(str(path)) as fh:
            data = yaml.safe_load(fh.read().decode("utf-8"))
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read mapping file ({exc})") from exc
    return parse_mapping(data, taxonomy=taxonomy, path=str(path))
