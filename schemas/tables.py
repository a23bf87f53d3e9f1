"""Output tables: their pyarrow schemas, derived from the record dataclasses, and layout.

Each table is Hive-partitioned as ``<output>/<table>/run_date=YYYY-MM-DD/retailer=<name>/``.
The partition columns live in the directory names, not inside the files, so readers such as
``pandas.read_parquet("<output>/images")`` add them back as columns.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from pipeline.records import REVIEW_COLUMNS, DeadLetter, ImageRecord, ProductRecord, queue_key

SCHEMA_VERSION = "4"  # 2: products.variant_ids; 3: age group and colour model columns (images, products, review);
# 4: review tiers and estimated error probabilities (products, review)
PARTITION_COLUMNS = ("run_date", "retailer")

_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(hint) -> tuple[pa.DataType, bool]:
    """Map a type hint to (arrow type, nullable)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {hint}")
        return _arrow_type(args[0])[0], True
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return pa.list_(_arrow_type(args[0])[0]), False
    if hint in _SCALARS:
        return _SCALARS[hint], False
    raise TypeError(f"unsupported field type {hint}")


def schema_for(record_type: type, *, exclude: tuple[str, ...] = PARTITION_COLUMNS,
               metadata: dict[str, str] | None = None, only: tuple[str, ...] | None = None) -> pa.Schema:
    """The Parquet schema of a record dataclass, minus the partition columns (``only``: these
    fields, in this order)."""
    hints = typing.get_type_hints(record_type)
    names = only or tuple(f.name for f in dataclasses.fields(record_type))
    fields = [pa.field(name, *_arrow_type(hints[name])) for name in names if name not in exclude]
    meta = {"fashion_enrich.schema_version": SCHEMA_VERSION, **(metadata or {})}
    return pa.schema(fields, metadata=meta)


@dataclass(frozen=True)
class TableSpec:
    name: str
    record_type: type
    sort_key: Callable | None = None  # rows sorted by it within each file (the review queue: its order)
    only: tuple[str, ...] | None = None  # the record's fields written (default: all)

    @functools.cached_property
    def schema(self) -> pa.Schema:
        return schema_for(self.record_type, only=self.only)

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    def to_row(self, record) -> dict:
        """A record as a Parquet row (partition columns dropped, tuples as lists)."""
        row = {}
        for name in self.columns:
            value = getattr(record, name)
            row[name] = list(value) if isinstance(value, tuple) else value
        return row

    def to_table(self, records: list, schema: pa.Schema | None = None) -> pa.Table:
        """Records as a table of ``schema`` (default: the table's), converted column by column:
        several times faster than a dict per row (pyarrow takes tuples as lists)."""
        return pa.Table.from_pydict({name: list(map(operator.attrgetter(name), records)) for name in self.columns},
                                    schema=schema or self.schema)

    @staticmethod
    def partition(run_date: str, retailer: str) -> str:
        return f"run_date={run_date}/retailer={retailer}"


IMAGES = TableSpec("images", ImageRecord)
PRODUCTS = TableSpec("products", ProductRecord)
DEAD_LETTER = TableSpec("dead_letter", DeadLetter)
REVIEW = TableSpec("review", ProductRecord, sort_key=queue_key, only=REVIEW_COLUMNS)
TABLES = {t.name: t for t in (IMAGES, PRODUCTS, DEAD_LETTER, REVIEW)}
