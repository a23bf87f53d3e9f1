"""Hostile dumps: each case ends in records or dead letters, never a crash or a silent loss."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.sources import DEAD_LETTER, FILE_STATS, ReadDump, decoder_for, framing
from schemas.mapping import builtin_mapping_file, load_mapping

HEADER = "id\titem_group_id\ttitle\tbrand\timage_link\tadditional_image_link\tgoogle_product_category\t" \
         "product_type\tgender\tage_group\n"


def article(pid: str, **extra) -> dict:
    return {"id": pid, "media": {"images": [{"largeUrl": f"https://img.shop.test/{pid}.jpg", **extra}]}}


def row(pid: str, title: str = "t") -> str:
    return f"{pid}\t{pid}\t{title}\tb\thttps://cdn.shop.test/{pid}.jpg\t\t\t\t\t\n"


def run(tmp_path, retailer: str, name: str, content: bytes, expected: dict) -> None:
    """Read one dump and assert its records, dead letters and file statistics."""
    path = tmp_path / retailer / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    decoder = decoder_for(load_mapping(builtin_mapping_file(retailer)).source)
    with TestPipeline() as p:
        out = p | ReadDump(retailer=retailer, pattern=str(path), decoder=decoder)
        assert_that(out.records | "R" >> beam.Map(lambda r: (r.product_id, r.image_position)),
                    equal_to(expected["records"]), label="records")
        assert_that(out[DEAD_LETTER] | "D" >> beam.Map(lambda d: (d.source_line, d.reason)),
                    equal_to(expected["dead"]), label="dead")
        assert_that(out[FILE_STATS] | "S" >> beam.Map(lambda s: (s.units, s.records, s.errors, s.aborted)),
                    equal_to(expected["stats"]), label="stats")


@pytest.mark.parametrize("name, content, records, dead, stats", [
    ("bigint.jsonl", (json.dumps(article("A1")) + '\n{"id": "A2", "x": ' + "1" * 5000 + "}\n"
                      + json.dumps(article("A3")) + "\n").encode(),
     [("A1", 1), ("A3", 1)], [(2, "MALFORMED_JSON")], [(3, 2, 1, False)]),
    ("deep.jsonl", (json.dumps(article("A1")) + "\n" + '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode(),
     [("A1", 1)], [(2, "MALFORMED_JSON")], [(2, 1, 1, False)]),
    ("ipv6.jsonl", (json.dumps({"id": "A1", "media": {"images": [{"largeUrl": "http://[::1/x.jpg"}]}}) + "\n"
                    + json.dumps(article("A2")) + "\n").encode(),
     [("A2", 1)], [(1, "FORBIDDEN_URI")], [(2, 1, 1, False)]),
    ("order.jsonl", (json.dumps(article("A1", orderNumber=2 ** 70)) + "\n"
                     + json.dumps(article("A2", orderNumber=True)) + "\n").encode(),
     [("A1", 1), ("A2", 1)], [], [(2, 2, 0, False)]),
    ("bom.jsonl", b"\xef\xbb\xbf" + (json.dumps(article("A1")) + "\n").encode(),
     [("A1", 1)], [], [(1, 1, 0, False)]),
    # Valid JSON, but a lone surrogate escape cannot become UTF-8 (Beam keys, Parquet): dead-lettered
    # at read instead of crashing a later stage; a proper surrogate pair (an emoji) is fine.
    ("surrogate.jsonl", (json.dumps(article("A\ud800")) + "\n" + json.dumps(article("A\U0001F600")) + "\n").encode(),
     [("A\U0001F600", 1)], [(1, "INVALID_ENCODING")], [(2, 1, 1, False)]),
])
def test_hostile_zalando_lines(tmp_path, name, content, records, dead, stats):
    run(tmp_path, "zalando", name, content, dict(records=records, dead=dead, stats=stats))


@pytest.mark.parametrize("name, content, records, dead, stats", [
    ("big.tsv", (HEADER + row("F1") + row("F2", "x" * 200_000) + row("F3")).encode(),
     [("F1", 1), ("F3", 1)], [(3, "MALFORMED_ROW")], [(3, 2, 1, False)]),
    ("bom.tsv", b"\xef\xbb\xbf" + (HEADER + row("F1")).encode(), [("F1", 1)], [], [(1, 1, 0, False)]),
    ("oneline.xml", ('<rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
                     + "".join(f"<item><g:id>X{i}</g:id><g:image_link>https://cdn.shop.test/{i}.jpg</g:image_link>"
                               "</item>" for i in range(5))
                     + "<item><g:id>bad</g:title></item></channel></rss>").encode(),
     [(f"X{i}", 1) for i in range(5)], [(1, "MALFORMED_XML")], [(6, 5, 1, False)]),
    # Feeds in another encoding than UTF-8 are transcoded (expat itself cannot read shift_jis).
    ("shiftjis.xml", ('<?xml version="1.0" encoding="shift_jis"?>\n<rss xmlns:g="http://base.google.com/ns/1.0">'
                      "<channel><item><g:id>X1</g:id><g:title>\u30ef\u30f3\u30d4\u30fc\u30b9</g:title>"
                      "<g:image_link>https://cdn.shop.test/1.jpg</g:image_link></item></channel></rss>"
                      ).encode("shift_jis"), [("X1", 1)], [], [(1, 1, 0, False)]),
    ("utf16.xml", ('<?xml version="1.0" encoding="UTF-16"?>\n<rss xmlns:g="http://base.google.com/ns/1.0">'
                   "<channel><item><g:id>X1</g:id><g:image_link>https://cdn.shop.test/1.jpg</g:image_link></item>"
                   "</channel></rss>").encode("utf-16"), [("X1", 1)], [], [(1, 1, 0, False)]),
    # An unknown encoding: one fatal dead letter, not a crash of the job.
    ("bogus.xml", b'<?xml version="1.0" encoding="no-such-codec"?>\n<rss/>', [], [(1, "INVALID_ENCODING")],
     [(1, 0, 1, True)]),
    # Well-formed, but no <item> / <entry>: said, not silently read as zero products.
    ("products.xml", b"<feed><product><id>X1</id></product></feed>", [], [(0, "MALFORMED_XML")], [(1, 0, 1, True)]),
    # A header that is not UTF-8: the file is refused, not read with its first row as the header.
    ("badheader.tsv", HEADER.replace("title", "titl\xe9").encode("latin-1") + (row("F1") + row("F2")).encode(),
     [], [(1, "INVALID_ENCODING")], [(1, 0, 1, True)]),
])
def test_hostile_farfetch_feeds(tmp_path, name, content, records, dead, stats):
    run(tmp_path, "farfetch", name, content, dict(records=records, dead=dead, stats=stats))


def test_over_long_lines_are_dead_lettered_without_reading_them_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 1000)
    content = (json.dumps(article("A1")) + "\n" + json.dumps({"id": "A2", "pad": "x" * 5000}) + "\n"
               + json.dumps(article("A3")) + "\n").encode()
    run(tmp_path, "zalando", "long.jsonl", content,
        dict(records=[("A1", 1), ("A3", 1)], dead=[(2, "LINE_TOO_LONG")], stats=[(3, 2, 1, False)]))
