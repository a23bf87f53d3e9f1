"""Farfetch product feeds in the Google Shopping format: TSV/CSV or RSS 2.0 XML.

Fields: ``id``, ``item_group_id``, ``title``, ``brand``, ``image_link``,
``additional_image_link`` (comma list, or repeated tags in XML), ``google_product_category``,
``product_type`` (" > " path), ``gender`` (male/female/unisex), ``age_group``. Feed items are
variants; the product is ``item_group_id`` (or ``id`` when absent), so variants that share
images become duplicates that the pipeline keeps once and counts.
"""

from __future__ import annotations

from pipeline.records import DeadLetter, ImageRecord, Reason
from pipeline.sources.base import Decoder, RecordError, UnitContext, require, strip_compression, text, values
from pipeline.sources.delimited import frame_delimited
from pipeline.sources.xml_feed import frame_xml


def _links(value) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        out.extend(part.strip() for part in (text(item) or "").split(","))
    return [link for link in out if link]


class FarfetchDecoder(Decoder):
    def frame(self, stream, path):
        name = strip_compression(path).lower()
        if name.endswith((".xml", ".rss")):
            return frame_xml(stream)
        return frame_delimited(stream, "," if name.endswith(".csv") else "\t")

    def parse(self, payload: dict, ctx: UnitContext) -> list[ImageRecord | DeadLetter]:
        variant_id = require(payload, "id")
        product_id = text(payload.get("item_group_id")) or variant_id
        links = _links(payload.get("image_link")) + _links(payload.get("additional_image_link"))
        if not links:
            raise RecordError(Reason.NO_IMAGES, f"item {variant_id} has no image_link")
        common = dict(
            variant_id=variant_id,
            title=text(payload.get("title")),
            brand=text(payload.get("brand")),
            raw_category=values(payload.get("product_type")) + values(payload.get("google_product_category")),
            raw_gender=values(payload.get("gender")),
            raw_age_group=values(payload.get("age_group")),
        )
        # In Google Shopping feeds image_link is the main image; additional links follow it.
        return [ctx.image(product_id=product_id, position=i, uri=link, is_primary=i == 1, **common)
                for i, link in enumerate(links, start=1)]
