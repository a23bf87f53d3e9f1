"""PickledByValues (pipeline/pickled.py): records pickle as their values, round-trip exactly,
and through Beam's default coder (what the DirectRunner holds at its stage boundaries)."""

from __future__ import annotations

import pickle

from apache_beam import typehints
from apache_beam.coders import registry

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
