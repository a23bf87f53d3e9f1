"""Zalando article dumps: JSON Lines (or one JSON array) of articles.

Modelled on Zalando's public article data: ``id``, ``name``, ``brand{key,name}``,
``categoryKeys[]``, ``genders[]`` (MALE/FEMALE), ``ageGroups[]`` (ADULT/TEEN/CHILD/BABY) and
``media.images[]`` with ``orderNumber``, ``type`` (MODEL, NON_MODEL, ...) and one URL per size.
"""

from __future__ import annotations

from pipeline.records import DeadLetter, ImageRecord, ImageRole, Reason
from pipeline.sources.base import Decoder, RecordError, UnitContext, require, text, values
from pipeline.sources.framing import frame_json

# Largest first: the pipeline wants the best image the retailer offers.
URL_KEYS = ("largeHdUrl", "largeUrl", "mediumHdUrl", "mediumUrl", "smallHdUrl", "smallUrl",
            "thumbnailHdUrl", "thumbnailUrl", "url")
ROLES = {"MODEL": ImageRole.MODEL, "NON_MODEL": ImageRole.PACKSHOT, "PRODUCT": ImageRole.PACKSHOT,
         "DETAIL": ImageRole.DETAIL, "STYLE": ImageRole.MODEL}


class ZalandoDecoder(Decoder):
    def frame(self, stream, path):
        return frame_json(stream, path)

    def parse(self, payload: dict, ctx: UnitContext) -> list[ImageRecord | DeadLetter]:
        product_id = require(payload, "id")
        media = payload.get("media") if isinstance(payload.get("media"), dict) else {}
        images = media.get("images") if isinstance(media.get("images"), list) else []
        if not images:
            raise RecordError(Reason.NO_IMAGES, f"article {product_id} has no media.images")
        brand = payload.get("brand") if isinstance(payload.get("brand"), dict) else {}
        common = dict(
            title=text(payload.get("name")),
            brand=text(brand.get("name")) or text(brand.get("key")) or text(payload.get("brand")),
            raw_category=values(payload.get("categoryKeys")),
            raw_gender=values(payload.get("genders")),
            raw_age_group=values(payload.get("ageGroups")),
        )
        out: list[ImageRecord | DeadLetter] = []
        for index, image in enumerate(images, start=1):
            url = next((text(image.get(k)) for k in URL_KEYS if isinstance(image, dict) and text(image.get(k))), None)
            if url is None:
                out.append(ctx.dead_letter(Reason.MISSING_FIELD, f"image {index} of {product_id} has no URL",
                                           product_id=product_id))
                continue
            order = image.get("orderNumber")
            role_raw = text(image.get("type"))
            role = ROLES.get((role_raw or "").upper(), ImageRole.OTHER) if role_raw else None
            out.append(ctx.image(
                product_id=product_id,
                position=order if type(order) is int and 0 < order < 2**31 else index,
                uri=url,
                image_role=role.value if role else None,
                image_role_raw=role_raw,
                **common,
            ))
        return out
