"""One image, outside Beam: the path training data preparation uses.

It is the same :class:`~pipeline.images.fetch.Fetcher` and the same
:func:`~pipeline.images.decode.decode_and_preprocess` that ``LoadImages`` runs in the
pipeline, so a model is trained on exactly the pixels it will see at inference.
"""

from __future__ import annotations

from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.images.decode import Decoded, decode_and_preprocess
from pipeline.images.fetch import Fetcher


def load_image(uri: str, *, decode: DecodeConfig, fetch: FetchConfig | None = None,
               fetcher: Fetcher | None = None) -> Decoded:
    """Fetch and preprocess one image; raises FetchError or ImageError."""
    own = fetcher is None
    fetcher = fetcher or Fetcher(fetch or FetchConfig())
    try:
        return decode_and_preprocess(fetcher.fetch(uri).data, decode)
    finally:
        if own:
            fetcher.close()
