"""The image stage: fetch, validate, decode and preprocess product images (see LoadImages)."""

from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.images.decode import Decoded, ImageError, decode_and_preprocess
from pipeline.images.transforms import DEAD_LETTER, LoadImages

__all__ = ["DEAD_LETTER", "DecodeConfig", "Decoded", "FetchConfig", "ImageError", "LoadImages",
           "decode_and_preprocess"]
from pipeline.images.load import load_image  # noqa: E402

__all__ += ["load_image"]
