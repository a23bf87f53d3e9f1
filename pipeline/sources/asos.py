"""ASOS product documents: JSON Lines.

Modelled on ASOS's public product API: ``id``, ``productCode``, ``name``, ``brandName``,
``gender`` ("Men"/"Women"), ``productType{id,name}`` and ``images[]`` with ``url`` (often
without a scheme, e.g. ``images.asos-media.com/...``: read as https), ``isPrimary`` and
``imageType``.
"""

from __future__ import annotations

from pipeline.records import DeadLetter, ImageRecord, ImageRole, Reason
from pipeline.sources.base import Decoder, RecordError, UnitContext, require, text, values
from pipeline.sources.framing import frame_json

ROLES = {"model": ImageRole.MODEL, "catwalk": ImageRole.MODEL, "product": ImageRole.PACKSHOT,
         "still": ImageRole.PACKSHOT, "packshot": ImageRole.PACKSHOT, "detail": ImageRole.DETAIL}


class AsosDecoder(Decoder):
    def frame(self, stream, path):
        return frame_json(stream, path)

    def parse(self, payload: dict, ctx: UnitContext) -> list[ImageRecord | DeadLetter]:
        product_id = require(payload, "id")
        images = payload.get("images") if isinstance(payload.get("images"), list) else []
        if not images:
            raise RecordError(Reason.NO_IMAGES, f"product {product_id} has no images")
        product_type = payload.get("productType") if isinstance(payload.get("productType"), dict) else {}
        common = dict(
            variant_id=text(payload.get("productCode")),
            title=text(payload.get("name")),
            brand=text(payload.get("brandName")),
            raw_category=values(product_type.get("name")),
            raw_gender=values(payload.get("gender")),
        )
        out: list[ImageRecord | DeadLetter] = []
        for index, image in enumerate(images, start=1):
            url = text(image.get("url")) if isinstance(image, dict) else None
            if url is None:
                out.append(ctx.dead_letter(Reason.MISSING_FIELD, f"image {index} of {product_id} has no url",
                                           product_id=product_id))
                continue
            role_raw = text(image.get("imageType"))
            role = ROLES.get((role_raw or "").lower(), ImageRole.OTHER) if role_raw else None
            primary = image.get("isPrimary")
            out.append(ctx.image(
                product_id=product_id, position=index, uri=url, schemeless_is_https=True,
                image_role=role.value if role else None, image_role_raw=role_raw,
                is_primary=primary if isinstance(primary, bool) else None,
                **common,
            ))
        return out
