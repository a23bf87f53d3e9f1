"""Retailer sources: one decoder per dump format, and ``ReadRetailer`` to pick the right one.

Each yields one normalized :class:`~pipeline.records.ImageRecord` per product image.
"""

from __future__ import annotations

from pipeline.sources.asos import AsosDecoder
from pipeline.sources.base import DEAD_LETTER, FILE_STATS, Decoder, ReadDump
from pipeline.sources.farfetch import FarfetchDecoder
from pipeline.sources.generic import GenericDecoder
from pipeline.sources.zalando import ZalandoDecoder
from schemas.mapping import SourceSpec

__all__ = ["DEAD_LETTER", "FILE_STATS", "ReadDump", "decoder_for"]

_BUILTIN = {"zalando": ZalandoDecoder, "asos": AsosDecoder, "farfetch": FarfetchDecoder}


def decoder_for(spec: SourceSpec) -> Decoder:
    """The decoder for a mapping file's ``source`` section."""
    if spec.is_generic:
        return GenericDecoder(spec.format, spec.columns)
    return _BUILTIN[spec.format]()
