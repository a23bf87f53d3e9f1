"""build_manifest: the reconciliation check fails when any count does not add up."""

from __future__ import annotations

from types import SimpleNamespace

from pipeline.manifest import build_manifest


def manifest(counts: dict) -> dict:
    config = SimpleNamespace(retailers=("shop",), run_id="r", run_date="2026-01-01", started_at="t", output="/o",
                             sources=(), models=())
    return build_manifest(config=config, counts=list(counts.items()), file_stats=[], written=[],
                          finished_at="t", versions={})


BALANCED = {("records_in", "shop"): 10, ("images", "shop"): 7, ("duplicates", "shop"): 1,
            ("dead_letter", "shop", "read", "NO_IMAGES"): 1, ("dead_letter", "shop", "fetch", "HTTP_4XX"): 1,
            ("product_images", "shop"): 7, ("products", "shop"): 4, ("images_new", "shop"): 7}


def test_balanced_counts_reconcile():
    m = manifest(BALANCED)
    assert m["reconciled"] is True
    assert m["counts"]["read_errors"] == {"shop": 1}
    assert m["counts"]["dead_letter_by_stage"] == {"shop": {"read": 1, "fetch": 1}}


def test_a_lost_image_or_a_lost_product_breaks_the_reconciliation():
    assert manifest({**BALANCED, ("images", "shop"): 6})["reconciled"] is False
    assert manifest({**BALANCED, ("product_images", "shop"): 6})["reconciled"] is False


def test_reused_images_count_as_images_and_every_image_is_reused_rescored_or_new():
    incremental = {**{k: n for k, n in BALANCED.items() if k[0] != "images_new"}, ("images_reused", "shop"): 5,
                   ("images_rescored", "shop"): 1, ("images_new", "shop"): 1, ("vanished_products", "shop"): 2}
    m = manifest(incremental)
    assert m["reconciled"] is True
    assert m["reconciliation"]["shop"] | {"ok": None} == {
        "records_in": 10, "images": 7, "dead_letter": 2, "duplicates": 1, "product_images": 7,
        "reused": 5, "rescored": 1, "new": 1, "ok": None}
    assert (m["counts"]["images_reused"], m["counts"]["vanished_products"]) == ({"shop": 5}, {"shop": 2})
    assert manifest({**incremental, ("images_rescored", "shop"): 0})["reconciled"] is False  # an image unaccounted


def _schema_section(text: str, heading: str) -> str:
    """The text of docs/schema.md under ``## heading``, up to the next ``## `` heading."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_schema_doc_lists_every_dead_letter_reason_and_schema_column():
    """docs/schema.md's dead-letter reasons and table columns are the code's (records.py, tables.py)."""
    import re
    from pathlib import Path

    from pipeline.records import Reason
    from schemas.tables import DEAD_LETTER, IMAGES, PRODUCTS, REVIEW

    doc = (Path(__file__).resolve().parents[1] / "docs" / "schema.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `reason` |"))
    assert set(re.findall(r"`([A-Z0-9_]+)`", row)) == {r.value for r in Reason}
    for table in (IMAGES, PRODUCTS, REVIEW, DEAD_LETTER):
        documented = set(re.findall(r"`([a-z0-9_]+)`", _schema_section(doc, table.name)))
        assert {f.name for f in table.schema} - documented == set(), table.name
