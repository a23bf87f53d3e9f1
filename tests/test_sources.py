"""Retailer sources (pipeline/sources/*): framing, decoders, dead letters and per-file statistics.

Every pipeline test writes small dump files under pytest's ``tmp_path`` and reads them through
the real ``ReadDump`` PTransform on a ``TestPipeline``. Outputs are projected to plain tuples
(file name, line, ids, URIs, reason codes) so that ``equal_to`` pinpoints what differs.

Tests marked ``# Regression (fixed):`` pin defects found by review and fixed since; the comment
on each says what used to go wrong.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import zlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import FileStats, Reason
from pipeline.sources import DEAD_LETTER, FILE_STATS, ReadDump, decoder_for
from pipeline.sources.image_uris import ForbiddenUri, resolve_image_uri
from schemas.mapping import builtin_mapping_file, load_mapping, parse_mapping

# --------------------------------------------------------------------------------------------
# helpers


@functools.cache
def builtin_decoder(retailer: str):
    """The decoder a built-in mapping file's ``source:`` section selects."""
    return decoder_for(load_mapping(builtin_mapping_file(retailer)).source)


def generic_decoder(source: dict):
    return decoder_for(parse_mapping({"retailer": "shopx", "source": source}).source)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(*objects) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


def read(p, label: str, pattern, decoder, retailer: str = "shop"):
    return p | label >> ReadDump(retailer=retailer, pattern=str(pattern), decoder=decoder)


def name(path: str) -> str:
    return os.path.basename(path)


def rec(r):
    return (name(r.source_file), r.source_line, r.product_id, r.image_position, r.image_uri)


def dead(d):
    return (name(d.source_file), d.source_line, d.reason, d.product_id, d.image_uri)


def reason(d):
    return (name(d.source_file), d.source_line, d.reason)


def stats(s):
    return (name(s.source_file), s.units, s.blank, s.products, s.records, s.errors)


def check(out, label: str, *, records=None, dead_letters=None, file_stats=None,
          rec_fn=rec, dead_fn=dead):
    """assert_that on the three outputs of one ReadDump, each with its own label."""
    if records is not None:
        assert_that(out.records | f"{label}Rec" >> beam.Map(rec_fn), equal_to(records), label=f"{label}Records")
    if dead_letters is not None:
        assert_that(out[DEAD_LETTER] | f"{label}Dl" >> beam.Map(dead_fn), equal_to(dead_letters),
                    label=f"{label}DeadLetters")
    if file_stats is not None:
        assert_that(out[FILE_STATS] | f"{label}St" >> beam.Map(stats), equal_to(file_stats),
                    label=f"{label}FileStats")


def zalando_article(pid: str, *urls: str, **extra) -> dict:
    images = [{"orderNumber": i, "type": "NON_MODEL", "largeUrl": u} for i, u in enumerate(urls, start=1)]
    return {"id": pid, "media": {"images": images}, **extra}


FF_HEADER = ["id", "item_group_id", "title", "brand", "image_link", "additional_image_link",
             "google_product_category", "product_type", "gender", "age_group"]


def tsv(*rows, header=FF_HEADER, sep="\t") -> str:
    return "".join(sep.join(r) + "\n" for r in [header, *rows])


# --------------------------------------------------------------------------------------------
# 1. happy paths, one per format


def test_zalando_jsonl_and_json_array(tmp_path):
    folder = tmp_path / "zalando"
    a1 = {
        "id": "Z1", "name": "Basic tee", "brand": {"key": "kestrel", "name": "Kestrel"},
        "categoryKeys": ["clothing", "clothing-tops", "clothing-tops-t-shirts"],
        "genders": ["MALE", "FEMALE"], "ageGroups": ["ADULT"],
        "media": {"images": [
            # every size present: the largest (largeUrl) wins over medium/small/thumbnail
            {"orderNumber": 2, "type": "MODEL", "smallUrl": "https://img.z/s1.jpg",
             "mediumUrl": "https://img.z/m1.jpg", "largeUrl": "https://img.z/l1.jpg",
             "thumbnailUrl": "https://img.z/t1.jpg"},
            # largeHdUrl beats everything
            {"orderNumber": 1, "type": "NON_MODEL", "thumbnailHdUrl": "https://img.z/th2.jpg",
             "largeHdUrl": "https://img.z/hd2.jpg", "largeUrl": "https://img.z/l2.jpg"},
            # no orderNumber: position falls back to the index; relative path inside the dump folder
            {"type": "DETAIL", "mediumUrl": "images/z1-3.jpg"},
        ]},
    }
    a2 = {"id": "Z2", "name": "Sandal", "brand": "Acme", "categoryKeys": "shoes-sandals",
          "genders": ["FEMALE"], "ageGroups": ["CHILD"],
          "media": {"images": [{"orderNumber": 7, "mediumUrl": "gs://zal-bucket/z2.jpg"}]}}
    write(folder / "articles.jsonl", jsonl(a1, a2))
    a10 = {"id": "Z10", "name": "Coat", "brand": {"key": "north"}, "categoryKeys": ["clothing-coats"],
           "genders": ["MALE"], "ageGroups": ["TEEN"],
           "media": {"images": [{"orderNumber": 1, "type": "MODEL", "url": "http://img.z/10.jpg"}]}}
    a11 = {"id": 11, "media": {"images": [{"orderNumber": 4, "type": "NON_MODEL", "largeUrl": "https://img.z/11.jpg",
                                           "smallUrl": "https://img.z/11s.jpg"}]}}
    write(folder / "articles.json", "[\n" + json.dumps(a10) + ",\n" + json.dumps(a11) + "\n]\n")

    def full(r):
        return (name(r.source_file), r.source_line, r.product_id, r.image_position, r.image_uri, r.image_role,
                r.image_role_raw, r.title, r.brand, r.raw_category, r.raw_gender, r.raw_age_group, r.retailer)

    tops = ("clothing", "clothing-tops", "clothing-tops-t-shirts")
    with TestPipeline() as p:
        out = read(p, "Zal", folder / "*", builtin_decoder("zalando"), retailer="zalando")
        check(out, "Zal", rec_fn=full, dead_letters=[], records=[
            ("articles.jsonl", 1, "Z1", 2, "https://img.z/l1.jpg", "MODEL", "MODEL", "Basic tee", "Kestrel",
             tops, ("MALE", "FEMALE"), ("ADULT",), "zalando"),
            ("articles.jsonl", 1, "Z1", 1, "https://img.z/hd2.jpg", "PACKSHOT", "NON_MODEL", "Basic tee", "Kestrel",
             tops, ("MALE", "FEMALE"), ("ADULT",), "zalando"),
            ("articles.jsonl", 1, "Z1", 3, str(folder / "images" / "z1-3.jpg"), "DETAIL", "DETAIL", "Basic tee",
             "Kestrel", tops, ("MALE", "FEMALE"), ("ADULT",), "zalando"),
            ("articles.jsonl", 2, "Z2", 7, "gs://zal-bucket/z2.jpg", None, None, "Sandal", "Acme",
             ("shoes-sandals",), ("FEMALE",), ("CHILD",), "zalando"),
            ("articles.json", 2, "Z10", 1, "http://img.z/10.jpg", "MODEL", "MODEL", "Coat", "north",
             ("clothing-coats",), ("MALE",), ("TEEN",), "zalando"),
            ("articles.json", 3, "11", 4, "https://img.z/11.jpg", "PACKSHOT", "NON_MODEL", None, None,
             (), (), (), "zalando"),
        ], file_stats=[("articles.jsonl", 2, 0, 2, 4, 0), ("articles.json", 2, 0, 2, 2, 0)])


def test_asos_jsonl(tmp_path):
    folder = tmp_path / "asos"
    p1 = {"id": 200000, "productCode": "1000000", "name": "Midi dress", "brandName": "Lumen & Co",
          "gender": "Women", "productType": {"id": 1005, "name": "Dresses"},
          "images": [
              {"url": "images.asos-media.com/x.jpg", "isPrimary": True, "imageType": "Product"},
              {"url": "https://images.asos-media.com/y.jpg", "isPrimary": False, "imageType": "Model"},
              {"url": "//images.asos-media.com/z.jpg"},
          ]}
    p2 = {"id": "200001", "name": "Cap", "gender": "Men",
          "images": [{"url": "images/cap.jpg", "isPrimary": "yes", "imageType": "Catwalk"}]}
    write(folder / "products.jsonl", jsonl(p1, p2))

    def full(r):
        return (r.source_line, r.product_id, r.variant_id, r.image_position, r.image_uri, r.is_primary,
                r.image_role, r.image_role_raw, r.title, r.brand, r.raw_category, r.raw_gender)

    with TestPipeline() as p:
        out = read(p, "Asos", folder / "products.jsonl", builtin_decoder("asos"), retailer="asos")
        check(out, "Asos", rec_fn=full, dead_letters=[], records=[
            (1, "200000", "1000000", 1, "https://images.asos-media.com/x.jpg", True, "PACKSHOT", "Product",
             "Midi dress", "Lumen & Co", ("Dresses",), ("Women",)),
            (1, "200000", "1000000", 2, "https://images.asos-media.com/y.jpg", False, "MODEL", "Model",
             "Midi dress", "Lumen & Co", ("Dresses",), ("Women",)),
            (1, "200000", "1000000", 3, "https://images.asos-media.com/z.jpg", None, None, None,
             "Midi dress", "Lumen & Co", ("Dresses",), ("Women",)),
            # a relative path that does not look like host.tld/... stays a local file in the dump folder
            (2, "200001", None, 1, str(folder / "images" / "cap.jpg"), None, "MODEL", "Catwalk",
             "Cap", None, (), ("Men",)),
        ], file_stats=[("products.jsonl", 2, 0, 2, 4, 0)])


def test_farfetch_tsv_csv_and_rss(tmp_path):
    folder = tmp_path / "farfetch"
    write(folder / "feed.tsv", tsv(
        ["FF1-S", "FF1", "Jersey tee", "Kestrel", "https://cdn.ff/1a.jpg", "https://cdn.ff/1b.jpg, https://cdn.ff/1c.jpg",
         "Apparel & Accessories > Clothing", "Women > Clothing > T-Shirts & Jersey Shirts", "female", "adult"],
        # no item_group_id: the variant id is the product id; local image inside the dump folder
        ["FF2-M", "", "Belt", "Acme", "images/2.jpg", "", "", "Men > Accessories > Belts", "male", "adult"],
    ))
    write(folder / "feed.csv",
          ",".join(FF_HEADER) + "\n"
          + 'FF3-L,FF3,"Dress, long",Lumen,https://cdn.ff/3a.jpg,"https://cdn.ff/3b.jpg,https://cdn.ff/3c.jpg",'
            ',Women > Clothing > Dresses,female,kids\n')
    write(folder / "feed.xml", """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
<channel>
<title>feed</title>
<item>
  <g:id>FF4-L</g:id>
  <g:item_group_id>FF4</g:item_group_id>
  <g:title>Boots</g:title>
  <g:brand>Lumen &amp; Co</g:brand>
  <g:image_link>https://cdn.ff/4a.jpg</g:image_link>
  <g:additional_image_link>https://cdn.ff/4b.jpg</g:additional_image_link>
  <g:additional_image_link>https://cdn.ff/4c.jpg,https://cdn.ff/4d.jpg</g:additional_image_link>
  <g:product_type>Women &gt; Shoes &gt; Boots</g:product_type>
  <g:gender>female</g:gender>
  <g:age_group>adult</g:age_group>
</item>
<item>
  <g:id>FF5</g:id>
  <g:image_link>gs://ff-bucket/5.jpg</g:image_link>
</item>
</channel>
</rss>
""")

    def full(r):
        return (name(r.source_file), r.source_line, r.product_id, r.variant_id, r.image_position, r.image_uri,
                r.is_primary)

    def attrs(r):
        return (r.variant_id, r.title, r.brand, r.raw_category, r.raw_gender, r.raw_age_group)

    with TestPipeline() as p:
        out = read(p, "Ff", folder / "feed.*", builtin_decoder("farfetch"), retailer="farfetch")
        check(out, "Ff", rec_fn=full, dead_letters=[], records=[
            ("feed.tsv", 2, "FF1", "FF1-S", 1, "https://cdn.ff/1a.jpg", True),
            ("feed.tsv", 2, "FF1", "FF1-S", 2, "https://cdn.ff/1b.jpg", False),
            ("feed.tsv", 2, "FF1", "FF1-S", 3, "https://cdn.ff/1c.jpg", False),
            ("feed.tsv", 3, "FF2-M", "FF2-M", 1, str(folder / "images" / "2.jpg"), True),
            ("feed.csv", 2, "FF3", "FF3-L", 1, "https://cdn.ff/3a.jpg", True),
            ("feed.csv", 2, "FF3", "FF3-L", 2, "https://cdn.ff/3b.jpg", False),
            ("feed.csv", 2, "FF3", "FF3-L", 3, "https://cdn.ff/3c.jpg", False),
            ("feed.xml", 5, "FF4", "FF4-L", 1, "https://cdn.ff/4a.jpg", True),
            ("feed.xml", 5, "FF4", "FF4-L", 2, "https://cdn.ff/4b.jpg", False),
            ("feed.xml", 5, "FF4", "FF4-L", 3, "https://cdn.ff/4c.jpg", False),
            ("feed.xml", 5, "FF4", "FF4-L", 4, "https://cdn.ff/4d.jpg", False),
            ("feed.xml", 17, "FF5", "FF5", 1, "gs://ff-bucket/5.jpg", True),
        ], file_stats=[("feed.tsv", 2, 0, 2, 4, 0), ("feed.csv", 1, 0, 1, 3, 0), ("feed.xml", 2, 0, 2, 5, 0)])
        assert_that(
            out.records | "FfPrimary" >> beam.Filter(lambda r: r.is_primary) | "FfAttrs" >> beam.Map(attrs),
            equal_to([
                ("FF1-S", "Jersey tee", "Kestrel",
                 ("Women > Clothing > T-Shirts & Jersey Shirts", "Apparel & Accessories > Clothing"),
                 ("female",), ("adult",)),
                ("FF2-M", "Belt", "Acme", ("Men > Accessories > Belts",), ("male",), ("adult",)),
                ("FF3-L", "Dress, long", "Lumen", ("Women > Clothing > Dresses",), ("female",), ("kids",)),
                ("FF4-L", "Boots", "Lumen & Co", ("Women > Shoes > Boots",), ("female",), ("adult",)),
                ("FF5", None, None, (), (), ()),
            ]), label="FfAttributes")


def test_generic_csv_and_jsonl_from_mapping(tmp_path):
    csv_dir = tmp_path / "generic_csv"
    write(csv_dir / "styles.csv",
          "id,gender,masterCategory,subCategory,articleType,productDisplayName,kids\n"
          "15970,Men,Apparel,Topwear,Shirts,Turtle Check Men Navy Blue Shirt,false\n"
          # empty middle category column: skipped in the joined path
          "39386,Women,Footwear,,Heels,Red Heels,true\n")
    csv_decoder = generic_decoder({
        "format": "csv", "product_id": "id", "image_uri": "images/{id}.jpg", "title": "productDisplayName",
        "category": ["masterCategory", "subCategory", "articleType"], "gender": ["gender"], "age_group": ["kids"],
    })
    json_dir = tmp_path / "generic_jsonl"
    write(json_dir / "catalog.jsonl", jsonl(
        {"sku": "S1", "variant": {"code": "S1-RED"}, "brand": {"name": "Acme"}, "dept": "Women", "type": "Dresses",
         "gender": "female", "media": {"urls": "https://cdn.x/1.jpg | https://cdn.x/2.jpg||"}},
        {"sku": 2, "gender": ["female", "unisex"], "media": {"urls": ["gs://bucket/2a.jpg", "", "gs://bucket/2b.jpg"]}},
    ))
    json_decoder = generic_decoder({
        "format": "jsonl", "product_id": "sku", "variant_id": "variant.code", "image_uri": "media.urls",
        "image_separator": "|", "brand": "brand.name", "category": ["dept", "type"], "gender": ["gender"],
    })

    def full(r):
        return (name(r.source_file), r.source_line, r.product_id, r.variant_id, r.image_position, r.image_uri,
                r.title, r.brand, r.raw_category, r.raw_gender, r.raw_age_group, r.retailer)

    with TestPipeline() as p:
        out_csv = read(p, "GenCsv", csv_dir / "*.csv", csv_decoder, retailer="shopx")
        check(out_csv, "GenCsv", rec_fn=full, dead_letters=[], records=[
            ("styles.csv", 2, "15970", None, 1, str(csv_dir / "images" / "15970.jpg"),
             "Turtle Check Men Navy Blue Shirt", None, ("Apparel > Topwear > Shirts",), ("Men",), ("false",), "shopx"),
            ("styles.csv", 3, "39386", None, 1, str(csv_dir / "images" / "39386.jpg"),
             "Red Heels", None, ("Footwear > Heels",), ("Women",), ("true",), "shopx"),
        ], file_stats=[("styles.csv", 2, 0, 2, 2, 0)])
        out_json = read(p, "GenJson", json_dir / "*.jsonl", json_decoder, retailer="shopx")
        check(out_json, "GenJson", rec_fn=full, dead_letters=[], records=[
            ("catalog.jsonl", 1, "S1", "S1-RED", 1, "https://cdn.x/1.jpg", None, "Acme", ("Women > Dresses",),
             ("female",), (), "shopx"),
            ("catalog.jsonl", 1, "S1", "S1-RED", 2, "https://cdn.x/2.jpg", None, "Acme", ("Women > Dresses",),
             ("female",), (), "shopx"),
            ("catalog.jsonl", 2, "2", None, 1, "gs://bucket/2a.jpg", None, None, (), ("female", "unisex"), (),
             "shopx"),
            ("catalog.jsonl", 2, "2", None, 2, "gs://bucket/2b.jpg", None, None, (), ("female", "unisex"), (),
             "shopx"),
        ], file_stats=[("catalog.jsonl", 2, 0, 2, 4, 0)])


# --------------------------------------------------------------------------------------------
# 2. bad input: the right dead-letter reason, and the job finishes


def test_malformed_and_non_object_json_lines(tmp_path):
    lines = [
        json.dumps(zalando_article("Z1", "https://img.z/1.jpg")),
        '{"id": "Z2", "media": {"images": [',  # cut off mid-object
        '["not", "an", "object"]',
        "",
        '"just a string"',
        json.dumps(zalando_article("Z6", "https://img.z/6.jpg")),
    ]
    path = write(tmp_path / "z.jsonl", "\n".join(lines) + "\n")
    offset_line6 = sum(len(line.encode()) + 1 for line in lines[:5])

    with TestPipeline() as p:
        out = read(p, "Json", path, builtin_decoder("zalando"))
        check(out, "Json",
              rec_fn=lambda r: (r.source_line, r.source_offset, r.product_id, r.image_uri),
              records=[(1, 0, "Z1", "https://img.z/1.jpg"), (6, offset_line6, "Z6", "https://img.z/6.jpg")],
              dead_fn=lambda d: (d.source_line, d.reason, d.stage, d.retailer, d.raw),
              dead_letters=[(2, "MALFORMED_JSON", "read", "shop", lines[1] + "\n"),
                            (3, "NOT_AN_OBJECT", "read", "shop", lines[2] + "\n"),
                            (5, "NOT_AN_OBJECT", "read", "shop", lines[4] + "\n")],
              file_stats=[("z.jsonl", 6, 1, 2, 2, 3)])


def test_json_array_with_a_broken_element(tmp_path):
    path = write(tmp_path / "z.json", "[\n"
                 + json.dumps(zalando_article("Z1", "https://img.z/1.jpg")) + ",\n"
                 + "[1, 2],\n"
                 + '{"id": "Z3", "media": }\n,'
                 + json.dumps(zalando_article("Z4", "https://img.z/4.jpg")) + "\n]\n")
    with TestPipeline() as p:
        out = read(p, "Arr", path, builtin_decoder("zalando"))
        # the element after the broken one is not read: the array cannot be resynchronised
        check(out, "Arr", records=[("z.json", 2, "Z1", 1, "https://img.z/1.jpg")],
              dead_fn=reason, dead_letters=[("z.json", 3, "NOT_AN_OBJECT"), ("z.json", 4, "MALFORMED_JSON")],
              file_stats=[("z.json", 3, 0, 1, 1, 2)])


def test_csv_rows_with_wrong_column_count(tmp_path):
    ff = write(tmp_path / "ff" / "feed.tsv", tsv(
        ["FF1", "G1", "t", "b", "https://cdn.ff/1.jpg", "", "", "", "", ""],
        ["FF2", "G2", "t", "b", "https://cdn.ff/2.jpg"],  # too few columns
        ["FF3", "G3", "t", "b", "https://cdn.ff/3.jpg", "", "", "", "", "", "extra"],  # too many
        ["FF4", "G4", "t", "b", "https://cdn.ff/4.jpg", "", "", "", "", ""],
    ))
    gen = write(tmp_path / "gen" / "shop.csv", "id,url\nA,https://x/a.jpg\nB\nC,https://x/c.jpg\n")
    with TestPipeline() as p:
        out_ff = read(p, "FfRow", ff, builtin_decoder("farfetch"))
        check(out_ff, "FfRow",
              records=[("feed.tsv", 2, "G1", 1, "https://cdn.ff/1.jpg"), ("feed.tsv", 5, "G4", 1, "https://cdn.ff/4.jpg")],
              dead_fn=lambda d: (d.source_line, d.reason, d.message, d.raw),
              dead_letters=[(3, "MALFORMED_ROW", "row has 5 columns, header has 10", "FF2\tG2\tt\tb\thttps://cdn.ff/2.jpg"),
                            (4, "MALFORMED_ROW", "row has 11 columns, header has 10",
                             "FF3\tG3\tt\tb\thttps://cdn.ff/3.jpg\t\t\t\t\t\textra")],
              file_stats=[("feed.tsv", 4, 0, 2, 2, 2)])
        out_gen = read(p, "GenRow", gen, generic_decoder({"format": "csv", "product_id": "id", "image_uri": "url"}))
        check(out_gen, "GenRow",
              records=[("shop.csv", 2, "A", 1, "https://x/a.jpg"), ("shop.csv", 4, "C", 1, "https://x/c.jpg")],
              dead_fn=reason, dead_letters=[("shop.csv", 3, "MALFORMED_ROW")])


def test_a_malformed_xml_item_is_dead_lettered_alone_and_the_feed_goes_on(tmp_path):
    head = '<?xml version="1.0"?>\n<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n'
    item = "<item><g:id>{0}</g:id><g:image_link>https://cdn.ff/{0}.jpg</g:image_link></item>\n"
    write(tmp_path / "ff" / "broken.xml",
          head + item.format("A") + item.format("B")
          + "<item><g:id>C</g:id><g:image_link>https://cdn.ff/C.jpg</g:title></item>\n"  # line 5: mismatched tag
          + item.format("D")
          + "<item><g:id>E</g:id>\n"  # line 7: never closed, the next item starts
          + item.format("F") + "</channel></rss>\n")
    write(tmp_path / "ff" / "cut.rss", head + item.format("G") + "<item><g:id>H</g:id>\n")  # ends mid-document
    with TestPipeline() as p:
        out = read(p, "Xml", tmp_path / "ff" / "*", builtin_decoder("farfetch"))
        check(out, "Xml",
              records=[("broken.xml", 3, "A", 1, "https://cdn.ff/A.jpg"), ("broken.xml", 4, "B", 1, "https://cdn.ff/B.jpg"),
                       ("broken.xml", 6, "D", 1, "https://cdn.ff/D.jpg"), ("broken.xml", 8, "F", 1, "https://cdn.ff/F.jpg"),
                       ("cut.rss", 3, "G", 1, "https://cdn.ff/G.jpg")],
              dead_fn=reason, dead_letters=[("broken.xml", 5, "MALFORMED_XML"), ("broken.xml", 7, "MALFORMED_XML"),
                                            ("cut.rss", 4, "MALFORMED_XML")],
              file_stats=[("broken.xml", 6, 0, 4, 4, 2), ("cut.rss", 2, 0, 1, 1, 1)])


def test_missing_product_id(tmp_path):
    z = write(tmp_path / "z" / "z.jsonl", jsonl(
        {"name": "no id", "media": {"images": [{"largeUrl": "https://img.z/x.jpg"}]}},
        {"id": "  ", "media": {"images": [{"largeUrl": "https://img.z/y.jpg"}]}},
        # one image without any URL key: MISSING_FIELD for that image only, the other still comes through
        {"id": "Z3", "media": {"images": [{"orderNumber": 1, "type": "MODEL"},
                                          {"orderNumber": 2, "largeUrl": "https://img.z/3.jpg"}]}},
    ))
    a = write(tmp_path / "a" / "a.jsonl", jsonl({"images": [{"url": "https://images.asos-media.com/a.jpg"}]}))
    f = write(tmp_path / "f" / "f.tsv", tsv(["", "G1", "t", "b", "https://cdn.ff/1.jpg", "", "", "", "", ""]))
    g = write(tmp_path / "g" / "g.csv", "id,name\n,Shirt\n7,Tee\n8,\n")  # line 4: template field empty
    g_decoder = generic_decoder({"format": "csv", "product_id": "id", "image_uri": "images/{name}/{id}.jpg"})
    with TestPipeline() as p:
        check(read(p, "MissZ", z, builtin_decoder("zalando")), "MissZ",
              records=[("z.jsonl", 3, "Z3", 2, "https://img.z/3.jpg")],
              dead_letters=[("z.jsonl", 1, "MISSING_FIELD", None, None), ("z.jsonl", 2, "MISSING_FIELD", None, None),
                            ("z.jsonl", 3, "MISSING_FIELD", "Z3", None)],
              file_stats=[("z.jsonl", 3, 0, 1, 1, 3)])
        check(read(p, "MissA", a, builtin_decoder("asos")), "MissA", records=[],
              dead_letters=[("a.jsonl", 1, "MISSING_FIELD", None, None)])
        check(read(p, "MissF", f, builtin_decoder("farfetch")), "MissF", records=[],
              dead_letters=[("f.tsv", 2, "MISSING_FIELD", None, None)])
        check(read(p, "MissG", g, g_decoder), "MissG",
              records=[("g.csv", 3, "7", 1, str(tmp_path / "g" / "images" / "Tee" / "7.jpg"))],
              dead_letters=[("g.csv", 2, "MISSING_FIELD", None, None), ("g.csv", 4, "MISSING_FIELD", None, None)])


def test_products_without_images(tmp_path):
    z = write(tmp_path / "z" / "z.jsonl", jsonl(
        {"id": "Z1", "media": {"images": []}}, {"id": "Z2"}, {"id": "Z3", "media": "none"},
        zalando_article("Z4", "https://img.z/4.jpg"),
    ))
    a = write(tmp_path / "a" / "a.jsonl", jsonl({"id": 1}, {"id": 2, "images": "x.jpg"}))
    f = write(tmp_path / "f" / "f.tsv", tsv(["FF1", "G1", "t", "b", "", " , ", "", "", "", ""]))
    g = write(tmp_path / "g" / "g.csv", "id,urls\nA,\nB, | \nC,https://x/c.jpg\n")
    g_decoder = generic_decoder({"format": "csv", "product_id": "id", "image_uri": "urls", "image_separator": "|"})
    with TestPipeline() as p:
        check(read(p, "NoImgZ", z, builtin_decoder("zalando")), "NoImgZ",
              records=[("z.jsonl", 4, "Z4", 1, "https://img.z/4.jpg")], dead_fn=reason,
              dead_letters=[("z.jsonl", 1, "NO_IMAGES"), ("z.jsonl", 2, "NO_IMAGES"), ("z.jsonl", 3, "NO_IMAGES")])
        check(read(p, "NoImgA", a, builtin_decoder("asos")), "NoImgA", records=[], dead_fn=reason,
              dead_letters=[("a.jsonl", 1, "NO_IMAGES"), ("a.jsonl", 2, "NO_IMAGES")])
        check(read(p, "NoImgF", f, builtin_decoder("farfetch")), "NoImgF", records=[], dead_fn=reason,
              dead_letters=[("f.tsv", 2, "NO_IMAGES")])
        check(read(p, "NoImgG", g, g_decoder), "NoImgG", records=[("g.csv", 4, "C", 1, "https://x/c.jpg")],
              dead_fn=reason, dead_letters=[("g.csv", 2, "NO_IMAGES"), ("g.csv", 3, "NO_IMAGES")],
              file_stats=[("g.csv", 3, 0, 1, 1, 2)])


def test_forbidden_image_uris_are_dead_lettered_and_safe_ones_kept(tmp_path):
    folder = tmp_path / "dump"
    inside_abs = str(folder / "img" / "abs.jpg")
    urls = [
        "https://img.z/1.jpg",      # 1 allowed
        "http://img.z/2.jpg",       # 2 allowed
        "gs://bucket/3.jpg",        # 3 allowed
        "images/4.jpg",             # 4 allowed: relative, inside the dump folder
        inside_abs,                 # 5 allowed: absolute, inside the dump folder
        "ftp://img.z/6.jpg",        # 6 forbidden scheme
        "../secret.jpg",            # 7 escapes the dump folder
        "/etc/passwd",              # 8 absolute, outside
        "file:///etc/passwd",       # 9 file URI, outside
        "images/../../x.jpg",       # 10 escapes after normalisation
        "http:///nohost.jpg",       # 11 http without host
    ]
    path = write(folder / "z.jsonl", jsonl(zalando_article("Z1", *urls)))
    with TestPipeline() as p:
        out = read(p, "Uri", path, builtin_decoder("zalando"))
        check(out, "Uri",
              rec_fn=lambda r: (r.image_position, r.image_uri),
              records=[(1, "https://img.z/1.jpg"), (2, "http://img.z/2.jpg"), (3, "gs://bucket/3.jpg"),
                       (4, str(folder / "images" / "4.jpg")), (5, inside_abs)],
              dead_letters=[("z.jsonl", 1, "FORBIDDEN_URI", "Z1", u) for u in urls[5:]],
              file_stats=[("z.jsonl", 1, 0, 1, 5, 6)])


def test_script_and_data_uris_are_forbidden(tmp_path):
    # Regression (fixed): resolve_image_uri only recognised a scheme when the URI contains "://" (or starts with
    # "file:"), so "javascript:alert(1)", "data:image/png;base64,..." (and "mailto:", ...) are taken
    # for relative file names and accepted as "<dump folder>/javascript:alert(1)" instead of being
    # dead-lettered as FORBIDDEN_URI.
    urls = ["javascript:alert(1)", "data:image/png;base64,iVBORw0KGgo=", "https://img.z/ok.jpg"]
    path = write(tmp_path / "dump" / "z.jsonl", jsonl(zalando_article("Z1", *urls)))
    with TestPipeline() as p:
        out = read(p, "Script", path, builtin_decoder("zalando"))
        check(out, "Script", records=[("z.jsonl", 1, "Z1", 3, "https://img.z/ok.jpg")],
              dead_letters=[("z.jsonl", 1, "FORBIDDEN_URI", "Z1", u) for u in urls[:2]])


def test_empty_files(tmp_path):
    folder = tmp_path / "dump"
    write(folder / "zero.jsonl", b"")
    write(folder / "blank.jsonl", "\n  \n\t\n")
    write(folder / "empty.jsonl.gz", gzip.compress(b""))
    write(tmp_path / "ff" / "empty.tsv", b"")
    with TestPipeline() as p:
        check(read(p, "EmptyZ", folder / "*", builtin_decoder("zalando")), "EmptyZ", records=[],
              dead_letters=[("zero.jsonl", 0, "EMPTY_FILE", None, None), ("blank.jsonl", 0, "EMPTY_FILE", None, None),
                            ("empty.jsonl.gz", 0, "EMPTY_FILE", None, None)],
              file_stats=[("zero.jsonl", 0, 0, 0, 0, 1), ("blank.jsonl", 0, 0, 0, 0, 1),
                          ("empty.jsonl.gz", 0, 0, 0, 0, 1)])
        check(read(p, "EmptyF", tmp_path / "ff" / "empty.tsv", builtin_decoder("farfetch")), "EmptyF", records=[],
              dead_fn=reason, dead_letters=[("empty.tsv", 0, "EMPTY_FILE")])


def test_intact_gz_reads_normally(tmp_path):
    folder = tmp_path / "dump"
    write(folder / "z.jsonl.gz", gzip.compress(jsonl(
        zalando_article("Z1", "https://img.z/1a.jpg", "https://img.z/1b.jpg"), "",
        zalando_article("Z2", "images/2.jpg")).encode()))
    write(tmp_path / "ff" / "feed.tsv.gz", gzip.compress(tsv(
        ["FF1", "G1", "t", "b", "https://cdn.ff/1.jpg", "https://cdn.ff/1b.jpg", "", "", "", ""]).encode()))
    with TestPipeline() as p:
        check(read(p, "GzZ", folder / "*.gz", builtin_decoder("zalando")), "GzZ",
              records=[("z.jsonl.gz", 1, "Z1", 1, "https://img.z/1a.jpg"), ("z.jsonl.gz", 1, "Z1", 2, "https://img.z/1b.jpg"),
                       ("z.jsonl.gz", 3, "Z2", 1, str(folder / "images" / "2.jpg"))],
              dead_letters=[], file_stats=[("z.jsonl.gz", 3, 1, 2, 3, 0)])
        check(read(p, "GzF", tmp_path / "ff" / "feed.tsv.gz", builtin_decoder("farfetch")), "GzF",
              records=[("feed.tsv.gz", 2, "G1", 1, "https://cdn.ff/1.jpg"),
                       ("feed.tsv.gz", 2, "G1", 2, "https://cdn.ff/1b.jpg")],
              dead_letters=[])


def test_truncated_gz(tmp_path):
    # Regression (fixed): truncation is never detected. Beam's CompressedFile (what ReadableFile.open returns for
    # .gz) stops quietly at the end of the compressed bytes without checking that the gzip stream
    # ended, so none of EOFError / zlib.error / gzip.BadGzipFile that _ReadDumpFn catches is
    # raised: no TRUNCATED_FILE dead letter. A file cut mid-line gives a MALFORMED_JSON for the
    # partial last line instead; a file cut at its gzip trailer (8 bytes) or on a line boundary
    # reads as complete.
    folder = tmp_path / "dump"
    articles = [zalando_article(f"Z{i:03d}", f"https://img.z/{zlib.crc32(str(i).encode()):08x}/{i}.jpg")
                for i in range(60)]
    packed = gzip.compress(jsonl(*articles).encode())
    cut = packed[:-60]
    write(folder / "cut.jsonl.gz", cut)
    write(folder / "no_trailer.jsonl.gz", packed[:-8])
    readable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)
    complete = readable.count(b"\n")
    assert 0 < complete < len(articles)  # the cut falls inside the data, after some whole lines

    expected = [("cut.jsonl.gz", i + 1, a["id"]) for i, a in enumerate(articles[:complete])]
    expected += [("no_trailer.jsonl.gz", i + 1, a["id"]) for i, a in enumerate(articles)]
    with TestPipeline() as p:
        out = read(p, "Trunc", folder / "*.gz", builtin_decoder("zalando"))
        assert_that(out.records | "TruncRec" >> beam.Map(lambda r: (name(r.source_file), r.source_line, r.product_id)),
                    equal_to(expected), label="TruncRecords")
        assert_that(out[DEAD_LETTER]
                    | "TruncOnly" >> beam.Filter(lambda d: d.reason == Reason.TRUNCATED_FILE.value)
                    | "TruncDl" >> beam.Map(reason),
                    equal_to([("cut.jsonl.gz", 0, "TRUNCATED_FILE"), ("no_trailer.jsonl.gz", 0, "TRUNCATED_FILE")]),
                    label="TruncDeadLetters")
        # The manifest says these files were not read to their end.
        assert_that(out[FILE_STATS] | "TruncStats" >> beam.Map(lambda s: (name(s.source_file), s.aborted)),
                    equal_to([("cut.jsonl.gz", True), ("no_trailer.jsonl.gz", True)]), label="TruncAborted")


def test_invalid_utf8_lines(tmp_path):
    good1 = json.dumps(zalando_article("Z1", "https://img.z/1.jpg")).encode()
    good3 = json.dumps(zalando_article("Z3", "https://img.z/3.jpg")).encode()
    z = write(tmp_path / "z" / "z.jsonl", good1 + b"\n" + b'{"id": "Z2\xff\xfe"}\n' + good3 + b"\n")
    ff1 = tsv(["FF1", "G1", "t", "b", "https://cdn.ff/1.jpg", "", "", "", "", ""]).encode()
    f = write(tmp_path / "f" / "f.tsv", ff1 + b"FF2\tG2\tcaf\xe9\tb\thttps://cdn.ff/2.jpg\t\t\t\t\t\n")
    with TestPipeline() as p:
        check(read(p, "EncZ", z, builtin_decoder("zalando")), "EncZ",
              records=[("z.jsonl", 1, "Z1", 1, "https://img.z/1.jpg"), ("z.jsonl", 3, "Z3", 1, "https://img.z/3.jpg")],
              dead_fn=lambda d: (d.source_line, d.source_offset, d.reason, d.raw),
              dead_letters=[(2, len(good1) + 1, "INVALID_ENCODING", '{"id": "Z2\ufffd\ufffd"}\n')],
              file_stats=[("z.jsonl", 3, 0, 2, 2, 1)])
        check(read(p, "EncF", f, builtin_decoder("farfetch")), "EncF",
              records=[("f.tsv", 2, "G1", 1, "https://cdn.ff/1.jpg")], dead_fn=reason,
              dead_letters=[("f.tsv", 3, "INVALID_ENCODING")], file_stats=[("f.tsv", 2, 0, 1, 1, 1)])


def test_csv_line_numbers_after_an_invalid_utf8_line(tmp_path):
    # Regression (fixed): frame_delimited drops non-UTF-8 lines before csv.reader sees them, but numbers rows
    # from csv.reader.line_num, so every row after such a line gets the previous line's number
    # and byte offset (here FF4 on line 4 is reported as line 3, offset of line 3, the same
    # position as the INVALID_ENCODING dead letter).
    head = tsv(["FF1", "G1", "t", "b", "https://cdn.ff/1.jpg", "", "", "", "", ""]).encode()
    bad = b"FF3\tG3\tcaf\xe9\tb\thttps://cdn.ff/3.jpg\t\t\t\t\t\n"
    path = write(tmp_path / "f.tsv", head + bad + b"FF4\tG4\tt\tb\thttps://cdn.ff/4.jpg\t\t\t\t\t\n")
    with TestPipeline() as p:
        check(read(p, "EncLine", path, builtin_decoder("farfetch")), "EncLine",
              rec_fn=lambda r: (r.source_line, r.source_offset, r.product_id),
              records=[(2, head.index(b"FF1"), "G1"), (4, len(head) + len(bad), "G4")],
              dead_fn=lambda d: (d.source_line, d.source_offset, d.reason),
              dead_letters=[(3, len(head), "INVALID_ENCODING")])


def test_jsonl_whose_first_line_is_an_array(tmp_path):
    # Regression (fixed): frame_json decides "JSON array file" from the first non-blank byte alone. A JSON Lines
    # file whose first line is an array is parsed as one array: its elements become NOT_AN_OBJECT
    # dead letters (one per element, not one per line) and every line after the closing "]" is
    # silently discarded - no record, no dead letter, nothing in FileStats.
    path = write(tmp_path / "z.jsonl", jsonl(["a", "b"], zalando_article("Z2", "https://img.z/2.jpg"),
                                             zalando_article("Z3", "https://img.z/3.jpg")))
    with TestPipeline() as p:
        check(read(p, "ArrFirst", path, builtin_decoder("zalando")), "ArrFirst",
              records=[("z.jsonl", 2, "Z2", 1, "https://img.z/2.jpg"), ("z.jsonl", 3, "Z3", 1, "https://img.z/3.jpg")],
              dead_fn=reason, dead_letters=[("z.jsonl", 1, "NOT_AN_OBJECT")])


def test_file_starting_with_4k_of_blank_lines_is_not_empty(tmp_path):
    # Regression (fixed): _ReadDumpFn calls a file empty when its first 4096 bytes are whitespace
    # (stream.peek(4096).strip()), so records after 4096+ leading blank bytes are dropped and an
    # EMPTY_FILE dead letter is written instead.
    path = write(tmp_path / "z.jsonl", "\n" * 5000 + jsonl(zalando_article("Z1", "https://img.z/1.jpg")))
    with TestPipeline() as p:
        check(read(p, "Blank4k", path, builtin_decoder("zalando")), "Blank4k",
              records=[("z.jsonl", 5001, "Z1", 1, "https://img.z/1.jpg")], dead_letters=[],
              file_stats=[("z.jsonl", 5001, 5000, 1, 1, 0)])


# --------------------------------------------------------------------------------------------
# 3. FileStats reconcile per file


def _count_by_file(pcoll, label):
    return (pcoll
            | f"{label}Key" >> beam.Map(lambda x: (name(x.source_file), 1))
            | f"{label}Sum" >> beam.CombinePerKey(sum))


def _reconcile(kv):
    file, groups = kv
    (st,) = groups["stats"]
    return (file, st.units, st.blank, st.records, sum(groups["records"]), st.errors, sum(groups["dead"]))


def test_file_stats_reconcile_per_file(tmp_path):
    folder = tmp_path / "dump"
    write(folder / "a.jsonl", jsonl(
        zalando_article("A1", "https://img.z/a1.jpg", "ftp://img.z/a1b.jpg", "https://img.z/a1c.jpg"),
        "",
        "{broken",
        "   ",
        zalando_article("A5", "https://img.z/a5.jpg"),
        {"id": "A6"},
    ))
    write(folder / "b.jsonl", "\n\n" + jsonl(zalando_article("B3", "https://img.z/b3.jpg", "https://img.z/b3b.jpg")))
    write(folder / "c.jsonl", "")
    ff = tmp_path / "ff" / "feed.csv"
    write(ff, tsv(["F1", "G1", "t", "b", "https://cdn.ff/1.jpg", "https://cdn.ff/1b.jpg", "", "", "", ""],
                  ["F2", "G2"], [" "], ["F4", "G4", "t", "b", "", "", "", "", "", ""], sep=","))
    with TestPipeline() as p:
        out_z = read(p, "RecZ", folder / "*.jsonl", builtin_decoder("zalando"))
        out_f = read(p, "RecF", ff, builtin_decoder("farfetch"))
        all_records = (out_z.records, out_f.records) | "AllRec" >> beam.Flatten()
        all_dead = (out_z[DEAD_LETTER], out_f[DEAD_LETTER]) | "AllDead" >> beam.Flatten()
        all_stats = (out_z[FILE_STATS], out_f[FILE_STATS]) | "AllStats" >> beam.Flatten()
        joined = ({"stats": all_stats | "StatKey" >> beam.Map(lambda s: (name(s.source_file), s)),
                   "records": _count_by_file(all_records, "CountRec"),
                   "dead": _count_by_file(all_dead, "CountDead")}
                  | "Join" >> beam.CoGroupByKey()
                  | "Reconcile" >> beam.Map(_reconcile))
        # (file, units, blank, stats.records, records out, stats.errors, dead letters out)
        assert_that(joined, equal_to([
            ("a.jsonl", 6, 2, 3, 3, 3, 3),   # ftp image, "{broken", A6 without images
            ("b.jsonl", 3, 2, 2, 2, 0, 0),
            ("c.jsonl", 0, 0, 0, 0, 1, 1),   # EMPTY_FILE
            ("feed.csv", 4, 1, 2, 2, 2, 2),  # F2 MALFORMED_ROW, F4 NO_IMAGES, " " row is blank
        ]), label="Reconciled")
        assert_that(all_stats, equal_to([
            FileStats("shop", str(folder / "a.jsonl"), units=6, blank=2, products=2, records=3, errors=3),
            FileStats("shop", str(folder / "b.jsonl"), units=3, blank=2, products=1, records=2, errors=0),
            FileStats("shop", str(folder / "c.jsonl"), units=0, blank=0, products=0, records=0, errors=1),
            FileStats("shop", str(ff), units=4, blank=1, products=1, records=2, errors=2),
        ]), label="ExactFileStats")


# --------------------------------------------------------------------------------------------
# 4. resolve_image_uri, directly


@pytest.mark.parametrize(("raw", "kwargs", "expected"), [
    ("https://cdn.x/a.jpg", {}, "https://cdn.x/a.jpg"),
    ("  http://cdn.x/a.jpg  ", {}, "http://cdn.x/a.jpg"),
    ("HTTPS://CDN.x/a.jpg", {}, "HTTPS://CDN.x/a.jpg"),
    ("gs://other-bucket/a.jpg", {}, "gs://other-bucket/a.jpg"),
    ("//cdn.x/a.jpg", {}, "https://cdn.x/a.jpg"),
    ("images.asos-media.com/x.jpg", {"schemeless_is_https": True}, "https://images.asos-media.com/x.jpg"),
    ("images.asos-media.com/x.jpg", {}, "/data/dump/images.asos-media.com/x.jpg"),
    ("images/a.jpg", {"schemeless_is_https": True}, "/data/dump/images/a.jpg"),
    ("images/a.jpg", {}, "/data/dump/images/a.jpg"),
    ("./images/../b.jpg", {}, "/data/dump/b.jpg"),
    ("/data/dump/sub/c.jpg", {}, "/data/dump/sub/c.jpg"),
    ("file:///data/dump/d.jpg", {}, "/data/dump/d.jpg"),
])
def test_resolve_image_uri_allowed_local_dump(raw, kwargs, expected):
    assert resolve_image_uri(raw, "/data/dump", **kwargs) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", None, "ftp://cdn.x/a.jpg", "s3://bucket/a.jpg", "HTTP:///a.jpg", "https://",
    "../secret.jpg", "images/../../secret.jpg", "/etc/passwd", "/data/dump-other/a.jpg", "/data",
    "file:///etc/passwd",
])
def test_resolve_image_uri_forbidden_local_dump(raw):
    with pytest.raises(ForbiddenUri):
        resolve_image_uri(raw, "/data/dump")


@pytest.mark.parametrize("raw", ["javascript:alert(1)", "data:image/png;base64,iVBORw0KGgo=", "mailto:a@b.c"])
def test_resolve_image_uri_forbids_schemes_without_slashes(raw):
    # Regression (fixed): schemes written without "//" are not recognised (scheme is only parsed when "://" is in
    # the URI), so these resolve to "/data/dump/<raw>" instead of raising.
    with pytest.raises(ForbiddenUri):
        resolve_image_uri(raw, "/data/dump")


@pytest.mark.parametrize(("raw", "expected"), [
    ("images/a.jpg", "gs://bucket/dumps/2024/images/a.jpg"),
    ("./x/../b.jpg", "gs://bucket/dumps/2024/b.jpg"),
    ("https://cdn.x/a.jpg", "https://cdn.x/a.jpg"),
    ("gs://other/a.jpg", "gs://other/a.jpg"),
])
def test_resolve_image_uri_gs_dump(raw, expected):
    assert resolve_image_uri(raw, "gs://bucket/dumps/2024") == expected


@pytest.mark.parametrize("raw", [
    "../secret.jpg", "images/../../secret.jpg", "../2024-other/a.jpg", "/etc/passwd", "/dumps/2024/a.jpg",
    "file:///dumps/2024/a.jpg", "ftp://bucket/a.jpg",
])
def test_resolve_image_uri_gs_dump_forbidden(raw):
    with pytest.raises(ForbiddenUri):
        resolve_image_uri(raw, "gs://bucket/dumps/2024")


def test_resolve_image_uri_gs_dump_at_bucket_root():
    # Regression (fixed): for a dump at the bucket root (dump folder "gs://bucket"), urlsplit(...).path is "", so
    # the base becomes "." and every relative path is refused as "leaves the dump's folder" (and the
    # URI it would build, f"{scheme}://{netloc}{resolved}", lacks the "/" between bucket and path).
    #
    assert resolve_image_uri("images/a.jpg", "gs://bucket") == "gs://bucket/images/a.jpg"
    with pytest.raises(ForbiddenUri):
        resolve_image_uri("../a.jpg", "gs://bucket")


def test_resolve_image_uri_accepts_absolute_paths_under_extra_roots():
    roots = ("/mnt/images",)
    assert resolve_image_uri("/mnt/images/a/b.jpg", "/data/dump", extra_roots=roots) == "/mnt/images/a/b.jpg"
    with pytest.raises(ForbiddenUri):
        resolve_image_uri("/mnt/imagesX/b.jpg", "/data/dump", extra_roots=roots)
    with pytest.raises(ForbiddenUri):
        resolve_image_uri("/mnt/images/../secret.jpg", "/data/dump", extra_roots=roots)
