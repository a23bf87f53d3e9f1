"""Retailer vocabulary -> taxonomy (pipeline/taxonomy.py) and mapping files (schemas/mapping.py)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import CategoryRule, ImageRecord
from pipeline.taxonomy import MapTaxonomy, apply_mapping, map_age_group, map_category, map_gender
from schemas.mapping import MappingError, builtin_mapping_file, builtin_retailers, load_mapping, parse_mapping
from schemas.taxonomy import load_taxonomy

TAX = load_taxonomy()


def mapping(**category):
    return parse_mapping({
        "retailer": "shop",
        "source": {"format": "jsonl", "product_id": "id", "image_uri": "url"},
        "category": {"use_default_keywords": False, **category},
        "gender": {"values": {"men": "MALE", "women": "FEMALE", "unisex": "UNISEX"}, "out_of_scope": ["n/a"]},
        "age_group": {"values": {"kids": "KIDS", "adult": "ADULT", "boys": "KIDS"}, "default": None},
    })


def test_exact_beats_prefix_and_keyword():
    m = mapping(exact={"Skinny Jeans": "SKINNY_JEANS"}, prefix={"women > jeans": "JEANS"},
                keywords={"jeans": "JEANS"})
    got = map_category(m, TAX, ("skinny   JEANS", "Women > Jeans > Skinny"), "Blue jeans")
    assert (got.node, got.rule, got.match) == ("SKINNY_JEANS", CategoryRule.EXACT, "skinny jeans")


def test_deepest_exact_match_wins_among_several_values():
    m = mapping(exact={"clothing": "CLOTHING", "clothing-jeans": "JEANS", "clothing-jeans-skinny": "SKINNY_JEANS"})
    got = map_category(m, TAX, ("clothing", "clothing-jeans-skinny", "clothing-jeans"), None)
    assert got.node == "SKINNY_JEANS"


def test_longest_prefix_wins_and_wildcard_segments_match_any_value():
    m = mapping(prefix={"* > clothing": "CLOTHING", "* > clothing > jeans": "JEANS",
                        "men > clothing > jeans > skinny": "SKINNY_JEANS"})
    assert map_category(m, TAX, ("Women > Clothing > Jeans > Boyfriend",), None).node == "JEANS"
    assert map_category(m, TAX, ("Men>Clothing>Jeans>Skinny>Black",), None).node == "SKINNY_JEANS"
    assert map_category(m, TAX, ("Kids > Clothing > Dresses",), None).node == "CLOTHING"
    got = map_category(m, TAX, ("Kids > Toys",), None)
    assert got.node is None and got.rule is CategoryRule.UNMAPPED and got.match == "kids > toys"


def test_keyword_is_last_resort_longest_keyword_then_whole_words():
    m = mapping(keywords={"jeans": "JEANS", "skinny jeans": "SKINNY_JEANS", "ring": "JEWELLERY"})
    assert map_category(m, TAX, (), "Super Skinny Jeans in black").node == "SKINNY_JEANS"
    got = map_category(m, TAX, ("Unknown dept",), "Mom jeans")
    assert (got.node, got.rule) == ("JEANS", CategoryRule.KEYWORD)
    assert map_category(m, TAX, (), "Spring earrings").rule is CategoryRule.MISSING  # no partial words


def test_out_of_scope_is_reported_separately_from_unmapped():
    m = mapping(prefix={"women > clothing": "CLOTHING"}, out_of_scope=["* > beauty", "Not sure"])
    assert map_category(m, TAX, ("Women > Beauty > Lipstick",), None).rule is CategoryRule.OUT_OF_SCOPE
    assert map_category(m, TAX, ("not  sure",), None).rule is CategoryRule.OUT_OF_SCOPE
    assert map_category(m, TAX, ("Women > Home",), None).rule is CategoryRule.UNMAPPED
    assert map_category(m, TAX, (), None).rule is CategoryRule.MISSING


def test_gender_and_age():
    m = mapping()
    assert map_gender(m, ("Men",)) == "MALE"
    assert map_gender(m, ("men", "WOMEN")) == "UNISEX"
    assert map_gender(m, ("unisex", "men")) == "UNISEX"
    assert map_gender(m, ("robot",)) is None
    assert map_age_group(m, ("Kids",), ()) == "KIDS"
    assert map_age_group(m, ("adult", "kids"), ()) == "ADULT"
    assert map_age_group(m, (), ("Boys",)) == "KIDS"  # age read from a gender value like 'Boys'
    assert map_age_group(m, (), ()) is None


def test_retailer_colour_is_mapped_onto_the_colour_vocabulary():
    mapping = load_mapping(builtin_mapping_file("myntra"))
    colour = {raw: apply_mapping(ImageRecord(retailer="myntra", product_id="1", image_position=1, image_uri="u",
                                             source_file="f", source_line=1, raw_colour=(raw,)),
                                 mapping, load_taxonomy()).retailer_colour
              for raw in ("Navy Blue", "off white", "Charcoal", "Multi", "Gold")}
    assert colour == {"Navy Blue": "navy", "off white": "white", "Charcoal": "grey", "Multi": None, "Gold": None}


def test_apply_mapping_fills_path_and_levels():
    m = mapping(exact={"skinny jeans": "SKINNY_JEANS"})
    rec = ImageRecord(retailer="shop", product_id="p", image_position=1, image_uri="/x.jpg", source_file="f",
                      source_line=1, raw_category=("Skinny jeans",), raw_gender=("women",))
    out = apply_mapping(rec, m, TAX)
    assert out.category_path == "CLOTHING > JEANS > SKINNY_JEANS"
    assert (out.category_level1, out.category_level2, out.gender) == ("CLOTHING", "JEANS", "FEMALE")
    assert out.category_rule == "EXACT"


def test_map_taxonomy_transform_on_a_pipeline():
    m = mapping(exact={"dresses": "DRESSES"})
    recs = [ImageRecord(retailer="shop", product_id=str(i), image_position=1, image_uri=f"/{i}.jpg",
                        source_file="f", source_line=i, raw_category=(cat,))
            for i, cat in enumerate(["Dresses", "Toys"])]
    with TestPipeline() as p:
        out = p | beam.Create(recs) | MapTaxonomy({"shop": m})
        assert_that(out | beam.Map(lambda r: (r.product_id, r.category, r.category_rule)),
                    equal_to([("0", "DRESSES", "EXACT"), ("1", None, "UNMAPPED")]), label="mapped")


def test_every_builtin_mapping_file_loads():
    assert {"zalando", "asos", "farfetch", "myntra", "clothing"} <= set(builtin_retailers())
    for name in builtin_retailers():
        m = load_mapping(builtin_mapping_file(name))
        assert m.retailer == name
        assert m.exact or m.prefix


@pytest.mark.parametrize("doc, message", [
    ({"retailer": "x", "source": {"format": "csv", "product_id": "id", "image_uri": "u"},
      "category": {"exact": {"a": "NOT_A_NODE"}}}, "not one of the allowed"),
    ({"retailer": "x", "source": {"format": "xlsx"}}, "source.format"),
    ({"retailer": "x", "source": {"format": "csv", "image_uri": "u"}}, "product_id is required"),
    ({"retailer": "x", "source": {"format": "zalando"}, "gender": {"values": {"m": "MAN"}}}, "not one of the allowed"),
    ({"retailer": "x", "source": {"format": "zalando"}, "categroy": {}}, "unknown keys"),
    ({"retailer": "x y", "source": {"format": "zalando"}}, "simple name"),
    ({"retailer": "x", "source": {"format": "zalando"}, "category": {"exact": {"A": "JEANS", "a": "DRESSES"}}},
     "twice"),
    ({"retailer": "x", "source": {"format": "zalando"}, "colour": {"values": {"navy blue": "Navy"}}},
     "not one of the allowed"),  # the colour vocabulary's names only
    ({"retailer": "x", "source": {"format": "zalando"}, "colour": {"default": "black"}}, "unknown colour keys"),
])
def test_invalid_mapping_documents_are_rejected(doc, message):
    with pytest.raises(MappingError, match=message):
        parse_mapping(doc)


def test_unreadable_or_invalid_yaml_mapping_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("retailer: [unclosed\n")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
