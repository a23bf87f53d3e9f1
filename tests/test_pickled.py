"""PickledByValues (pipeline/pickled.py): records pickle as their values, round-trip exactly,
and through Beam's default coder (what the DirectRunner holds at its stage boundaries)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from apache_beam import typehints
from apache_beam.coders import registry

from pipeline.pickled import PickledByValues, from_fields, replaced
from pipeline.records import ImageRecord, ProductRecord


def image() -> ImageRecord:
    return ImageRecord(retailer="shop", product_id="P1", image_position=0, image_uri="https://x/1.jpg",
                       source_file="dump.jsonl", source_line=3, raw_category=("Dresses",), title="A dress",
                       image_phash="0f" * 18, category_scores=(0.25, 0.75), person_score=0.5)


def test_records_round_trip_without_their_field_names():
    record = image()
    data = pickle.dumps(record)
    assert pickle.loads(data) == record
    assert b"image_phash" not in data and b"category_scores" not in data
    coder = registry.get_coder(typehints.Any)
    assert coder.decode(coder.encode(record)) == record
    product = ProductRecord(retailer="shop", product_id="P1", title=None, brand=None, variant_ids=("v1",),
                            image_count=1, person_image_count=0)
    assert pickle.loads(pickle.dumps(product)) == product and b"variant_ids" not in pickle.dumps(product)


def test_unpickled_records_are_the_same_frozen_records():
    record = pickle.loads(pickle.dumps(image()))
    assert record == image() and hash(record) == hash(image())
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.title = "changed"  # type: ignore[misc]
    assert dataclasses.asdict(record) == dataclasses.asdict(image())  # every field set, in declaration order
    assert list(vars(record)) == [f.name for f in dataclasses.fields(ImageRecord)]


def test_replaced_matches_dataclasses_replace():
    record = image()
    changes = {"title": "Another", "category_scores": (0.5, 0.5), "reuse_status": "REUSED"}
    copy = replaced(record, **changes)
    assert copy == dataclasses.replace(record, **changes) and copy is not record
    assert record.title == "A dress"  # the original is untouched
    assert replaced(record) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.title = "x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        replaced(record, not_a_field=1)
    product = ProductRecord(retailer="shop", product_id="P1", title=None, brand=None, variant_ids=("v1",),
                            image_count=1, person_image_count=0)
    assert replaced(product, duplicate_group="g") == dataclasses.replace(product, duplicate_group="g")


def test_from_fields_builds_what_the_constructor_builds():
    values = {"retailer": "shop", "product_id": "P1", "image_position": 0, "image_uri": "u", "source_file": "d",
              "source_line": 1, "title": "t", "category_scores": (0.5, 0.5)}
    built = from_fields(ImageRecord, values)
    assert built == ImageRecord(**values) and list(vars(built)) == [f.name for f in dataclasses.fields(ImageRecord)]
    assert built.reuse_status == ImageRecord(**values).reuse_status  # absent fields take their defaults
    with pytest.raises(TypeError):
        from_fields(ImageRecord, {k: v for k, v in values.items() if k != "image_uri"})  # a required field missing
    with pytest.raises(TypeError):
        from_fields(ImageRecord, {**values, "not_a_field": 1})


def test_a_record_type_whose_init_does_more_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Checked(PickledByValues):
        value: int

        def __post_init__(self):
            if self.value < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="plain dataclass"):
        pickle.dumps(Checked(1))
    with pytest.raises(TypeError, match="plain dataclass"):
        replaced(Checked(1), value=-1)
