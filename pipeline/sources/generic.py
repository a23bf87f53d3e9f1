"""Generic CSV / TSV / JSON Lines source driven by a mapping file's ``source`` section.

A new retailer whose dump is a flat table needs a mapping file, not code::

    source:
      format: csv                         # csv | tsv | jsonl
      product_id: id                      # column (JSON: key, dotted for nesting)
      group: sender_id                    # optional: kept together in cross-validation folds
      image_uri: "images/{id}.jpg"        # a column, or a template over columns
      image_separator: "|"                # optional: the column holds several URIs
      category: [masterCategory, subCategory, articleType]   # joined into a " > " path
      gender: [gender]
      age_group: [kids]
      title: productDisplayName
"""

from __future__ import annotations

import string

from pipeline.records import DeadLetter, ImageRecord, Reason
from pipeline.sources.base import Decoder, RecordError, UnitContext, text, values
from pipeline.sources.delimited import frame_delimited
from pipeline.sources.framing import frame_json


def _lookup(payload: dict, key: str):
    value = payload
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _columns(spec) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else [str(c) for c in spec]


class GenericDecoder(Decoder):
    def __init__(self, fmt: str, columns: dict):
        self._format = fmt
        self._columns = dict(columns)

    def frame(self, stream, path):
        if self._format == "jsonl":
            return frame_json(stream, path)
        default = "\t" if self._format == "tsv" else ","
        return frame_delimited(stream, self._columns.get("delimiter") or default)

    def _get(self, payload: dict, name: str) -> str | None:
        column = self._columns.get(name)
        return text(_lookup(payload, column)) if isinstance(column, str) else None

    def _uris(self, payload: dict) -> list[str]:
        spec = str(self._columns["image_uri"])
        if "{" in spec:
            needed = [name for _, name, _, _ in string.Formatter().parse(spec) if name]
            missing = [n for n in needed if text(_lookup(payload, n)) is None]
            if missing:
                raise RecordError(Reason.MISSING_FIELD, f"image URI template needs missing field(s) {missing}")
            raw = "".join(literal + (format(text(_lookup(payload, name)), fmt or "") if name else "")
                          for literal, name, fmt, _ in string.Formatter().parse(spec))
        else:
            if spec.split(".")[0] not in payload:
                raise RecordError(Reason.MISSING_FIELD, f"image URI column {spec!r} is not in the record")
            raw = _lookup(payload, spec)
        if isinstance(raw, list):
            return [u for u in (text(v) for v in raw) if u]
        separator = self._columns.get("image_separator")
        raw = text(raw) or ""
        parts = raw.split(separator) if separator else [raw]
        return [p.strip() for p in parts if p.strip()]

    def _values(self, payload: dict, field: str) -> tuple[str, ...]:
        """Every value of the columns the mapping names for ``field`` (gender, age group, colour)."""
        return tuple(v for c in _columns(self._columns.get(field)) for v in values(_lookup(payload, c)))

    def parse(self, payload: dict, ctx: UnitContext) -> list[ImageRecord | DeadLetter]:
        product_id = self._get(payload, "product_id")
        if product_id is None:
            raise RecordError(Reason.MISSING_FIELD, f"missing product id column {self._columns['product_id']!r}")
        uris = self._uris(payload)
        if not uris:
            raise RecordError(Reason.NO_IMAGES, f"product {product_id} has no image URI")
        path = [p for p in (text(_lookup(payload, c)) for c in _columns(self._columns.get("category"))) if p]
        common = dict(
            variant_id=self._get(payload, "variant_id"),
            group_id=self._get(payload, "group"),
            image_role_raw=self._get(payload, "image_role"),
            title=self._get(payload, "title"),
            brand=self._get(payload, "brand"),
            raw_category=(" > ".join(path),) if path else (),
            raw_gender=self._values(payload, "gender"),
            raw_age_group=self._values(payload, "age_group"),
            raw_colour=self._values(payload, "colour"),
        )
        return [ctx.image(product_id=product_id, position=i, uri=uri, **common)
                for i, uri in enumerate(uris, start=1)]
