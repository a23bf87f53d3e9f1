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
            ("product_images", "shop"): 7, ("products", "shop"): 4}


def test_balanced_counts_reconcile():
    m = manifest(BALANCED)
    assert m["reconciled"] is True
    assert m["counts"]["read_errors"] == {"shop": 1}
    assert m["counts"]["dead_letter_by_stage"] == {"shop": {"read": 1, "fetch": 1}}


def test_a_lost_image_or_a_lost_product_breaks_the_reconciliation():
    assert manifest({**BALANCED, ("images", "shop"): 6})["reconciled"] is False
    assert manifest({**BALANCED, ("product_images", "shop"): 6})["reconciled"] is False
