"""The XML feed framer: one malformed item is dead-lettered alone, the items after it are read,
entities stay refused, and the feed's skeleton is still checked."""

from __future__ import annotations

import io

import pytest

from pipeline.records import Reason
from pipeline.sources import framing, xml_feed
from pipeline.sources.framing import RawUnit, UnitError
from pipeline.sources.xml_feed import frame_xml

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>\n'
TAIL = "</channel></rss>\n"


def item(i, extra: str = "") -> str:
    return f"<item><g:id>{i}</g:id><g:image_link>https://cdn.shop.test/{i}.jpg</g:image_link>{extra}</item>\n"


def units(content: str | bytes):
    data = content.encode("utf-8") if isinstance(content, str) else content
    out = []
    for unit in frame_xml(io.BytesIO(data)):
        if isinstance(unit, RawUnit):
            out.append((unit.line, unit.payload.get("id")))
        else:
            out.append((unit.line, unit.reason.value, unit.fatal))
    return out


def test_a_well_formed_feed_gives_every_item_with_its_line():
    assert units(HEAD + item("A") + item("B") + TAIL) == [(3, "A"), (4, "B")]


@pytest.mark.parametrize("broken", [
    "<item><g:id>X</g:id><g:image_link>u</g:title></item>\n",  # mismatched tag
    "<item><g:id>X &nbsp; Y</g:id></item>\n",  # an entity the feed does not define
    "<item><g:id>X</g:id><h:brand>unbound prefix</h:brand></item>\n",
    "<item><g:id>X</g:id>< g:title>t</g:title></item>\n",  # not a tag
    "<item><g:id>X</g:id><g:title>a < b</g:title></item>\n",
])
def test_a_malformed_item_is_dead_lettered_alone(broken):
    assert units(HEAD + item("A") + broken + item("B") + TAIL) == [
        (3, "A"), (4, "MALFORMED_XML", False), (5, "B")]


def test_an_item_not_closed_before_the_next_one_is_skipped_and_reading_resumes():
    content = HEAD + item("A") + "<item><g:id>X</g:id>\n<g:title>open\n" + item("B") + item("C") + TAIL
    assert units(content) == [(3, "A"), (4, "MALFORMED_XML", False), (6, "B"), (7, "C")]


def test_markup_inside_cdata_and_comments_is_text_not_an_item_boundary():
    cdata = "<g:description><![CDATA[<b>Bold</b> </item> <item> & more]]></g:description>"
    content = (HEAD + "<!-- <item><g:id>COMMENTED</g:id></item> -->\n" + item("A", cdata)
               + item("B", "<!-- </item> -->") + TAIL)
    assert units(content) == [(4, "A"), (5, "B")]
    payload = next(u for u in frame_xml(io.BytesIO(content.encode())) if isinstance(u, RawUnit)).payload
    assert payload["description"] == "<b>Bold</b> </item> <item> & more"


def test_entity_declarations_are_refused_and_nothing_is_expanded():
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
            '<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n' + item("A", "<g:title>&b;</g:title>") + TAIL)
    assert units(bomb) == [(2, "MALFORMED_XML", True)]
    external = ('<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "http://127.0.0.1:9/feed.dtd">\n'
                '<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n'
                + item("A", "<g:title>&ext;</g:title>") + item("B") + TAIL)
    assert units(external) == [(4, "MALFORMED_XML", False), (5, "B")]  # never fetched, the item is malformed


def test_a_feed_cut_inside_an_item_or_after_the_last_item_says_so():
    assert units(HEAD + item("A") + "<item><g:id>B</g:id>\n") == [(3, "A"), (4, "MALFORMED_XML", True)]
    cut = units(HEAD + item("A") + item("B"))  # the root element is never closed
    assert cut[:2] == [(3, "A"), (4, "B")] and cut[2][1:] == ("MALFORMED_XML", True)


def test_a_skeleton_fault_ends_the_file_after_the_items_before_it():
    assert units(HEAD + item("A") + "<oops></channel>\n" + item("B") + TAIL)[:1] == [(3, "A")]
    assert units(HEAD + item("A") + "<oops></channel>\n" + item("B") + TAIL)[1][1:] == ("MALFORMED_XML", True)


def test_self_closing_items_atom_entries_and_a_default_namespace():
    atom = ('<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">\n'
            "<entry><g:id>A</g:id></entry>\n<entry/>\n<atom:entry xmlns:atom='http://www.w3.org/2005/Atom'>"
            "<g:id>B</g:id></atom:entry>\n</feed>")
    assert units(atom) == [(2, "A"), (3, None), (4, "B")]


def test_item_boundaries_across_read_chunks(monkeypatch):
    monkeypatch.setattr(xml_feed, "CHUNK_BYTES", 7)  # every tag is cut somewhere
    content = HEAD + item("A") + "<item><g:id>X</g:id>\n" + item("B", "<![CDATA[x]]><!-- c -->") + "<item/>\n" + TAIL
    assert units(content) == [(3, "A"), (4, "MALFORMED_XML", False), (5, "B"), (6, None)]


def test_an_over_long_item_is_skipped_without_losing_the_next(monkeypatch):
    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 2000)
    monkeypatch.setattr(xml_feed, "CHUNK_BYTES", 512)
    content = HEAD + item("A") + item("BIG", "<g:title>" + "x" * 10_000 + "</g:title>") + item("C") + TAIL
    assert units(content) == [(3, "A"), (4, "LINE_TOO_LONG", False), (5, "C")]


def test_feeds_in_other_encodings_are_transcoded_and_unknown_ones_refused():
    latin = (HEAD.replace("UTF-8", "ISO-8859-1") + item("A", "<g:title>Robe d'\u00e9t\u00e9</g:title>") + TAIL)
    unit = next(frame_xml(io.BytesIO(latin.encode("latin-1"))))
    assert isinstance(unit, RawUnit) and unit.payload["title"] == "Robe d'\u00e9t\u00e9"
    bogus = units(HEAD.replace("UTF-8", "no-such-codec") + item("A") + TAIL)
    assert bogus == [(1, Reason.INVALID_ENCODING.value, True)]
    broken = HEAD.replace("UTF-8", "shift_jis").encode() + b"<item><g:id>\xff\xff</g:id></item>" + TAIL.encode()
    assert [u for u in frame_xml(io.BytesIO(broken)) if isinstance(u, UnitError)][0].reason == Reason.INVALID_ENCODING


def test_mutated_feeds_always_end_in_units_or_dead_letters(monkeypatch):
    """Random cuts and insertions: the framer ends every time (an alarm fails a loop), raises
    nothing, yields only units and errors, and a fatal error is the last thing it yields."""
    import random
    import signal

    monkeypatch.setattr(xml_feed, "CHUNK_BYTES", 64)
    rng = random.Random(19)
    base = HEAD + "".join(item(f"I{i}", "<g:description><![CDATA[a<b>]]></g:description><!-- c -->")
                          for i in range(8)) + TAIL
    pieces = ["<", ">", "</item>", "<item>", "<!--", "]]>", "<![CDATA[", "&", "\n", "</channel>", "<!ENTITY"]

    def timeout(*_):
        raise TimeoutError("the framer did not finish")

    previous = signal.signal(signal.SIGALRM, timeout)
    try:
        for _ in range(300):
            text = base
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(text))
                roll = rng.random()
                if roll < 0.4:
                    text = text[:at] + text[at + rng.randint(1, 30):]
                elif roll < 0.8:
                    text = text[:at] + rng.choice(pieces) + text[at:]
                else:
                    text = text[:at]
            signal.alarm(10)
            got = list(frame_xml(io.BytesIO(text.encode())))
            signal.alarm(0)
            assert all(isinstance(u, RawUnit | UnitError) for u in got)
            assert sum(isinstance(u, UnitError) and u.fatal for u in got) <= 1
            assert not got or not any(isinstance(u, UnitError) and u.fatal for u in got[:-1])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
