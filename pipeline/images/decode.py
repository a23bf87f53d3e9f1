"""Bytes -> validated RGB image -> model-ready array. THE preprocessing function.

``decode_and_preprocess`` is used by the inference pipeline and by training data preparation
alike, so both see identical pixels. Steps:

1. sniff the magic bytes (a Content-Type header is not trusted): NOT_AN_IMAGE;
2. open lazily and check the header: format allowed (UNSUPPORTED_FORMAT), width x height
   within ``max_pixels`` (DECOMPRESSION_BOMB, before any pixel is decoded), both sides at least
   ``min_side`` (TOO_SMALL);
3. JPEG only: ``Image.draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale directly (DCT
   scaling), never below the target size: 5-6x faster on large retailer photos;
4. full decode; truncated or corrupt data raises: CORRUPT_IMAGE;
5. EXIF orientation applied; CMYK / palette / greyscale converted to RGB; transparency
   composited onto white;
6. resize keeping the aspect ratio so the LONGER side equals ``size`` (bilinear, antialiased),
   then PAD to a square with white, centred. Padding rather than cropping keeps the whole
   garment (shoe tips, dress hems, bag handles); product photos have white backgrounds, so the
   padding looks like more background.

The result is a ``uint8`` array of shape (size, size, 3). Scaling to the network's input range
(e.g. /255 or ``preprocess_input``) happens inside the model, so arrays stay small in the
pipeline.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.images.config import PAD_COLOR, DecodeConfig
from pipeline.records import Reason

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


class ImageError(Exception):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray  # (size, size, 3) uint8
    width: int  # original size, after EXIF orientation
    height: int
    format: str
    phash: str | None = None  # pipeline.images.features, filled by LoadImages
    colour: str | None = None
    colour_no_skin: str | None = None


def sniff(data: bytes) -> str | None:
    """Image format from the magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, PAD_COLOR + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, P, L, 1, I;16, YCbCr...


def resize_and_pad(img: Image.Image, size: int) -> np.ndarray:
    """Longer side to ``size`` (aspect kept), centred on a white ``size`` x ``size`` square."""
    width, height = img.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new != img.size:
        img = img.resize(new, Image.Resampling.BILINEAR)
    if new == (size, size):
        return np.asarray(img, dtype=np.uint8)
    canvas = Image.new("RGB", (size, size), PAD_COLOR)
    canvas.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def decode_and_preprocess(data: bytes, config: DecodeConfig) -> Decoded:
    """Validate and decode image bytes into a model-ready array, or raise :class:`ImageError`."""
    sniffed = sniff(data)
    if sniffed is None:
        head = data[:16]
        raise ImageError(Reason.NOT_AN_IMAGE, f"bytes are not a known image format (starts {head!r})")
    if sniffed not in config.formats:
        raise ImageError(Reason.UNSUPPORTED_FORMAT, f"{sniffed} is not an accepted format")
    try:  # our own max_pixels check below runs first; Pillow's (about 179 M pixels) is a backstop
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(Reason.DECOMPRESSION_BOMB, str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(Reason.CORRUPT_IMAGE, f"cannot parse {sniffed} header: {exc}") from exc
    width, height = img.size
    if width * height > config.max_pixels:
        raise ImageError(Reason.DECOMPRESSION_BOMB,
                         f"{width}x{height} = {width * height} pixels exceeds the limit of {config.max_pixels}")
    if min(width, height) < config.min_side:
        raise ImageError(Reason.TOO_SMALL, f"{width}x{height} is below the minimum side of {config.min_side}")
    fmt = img.format or sniffed
    try:
        orientation = img.getexif().get(0x0112, 1)
        if fmt == "JPEG":
            # Keep the decoded size >= the target on both sides (sides swap under EXIF rotation).
            img.draft("RGB", (config.size, config.size))
        img.load()
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(Reason.CORRUPT_IMAGE, f"{fmt} data is truncated or corrupt: {exc}") from exc
    out_w, out_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return Decoded(resize_and_pad(rgb, config.size), out_w, out_h, fmt)
