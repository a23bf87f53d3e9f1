"""Validated settings of the image stage: fetching (FetchConfig) and decoding (DecodeConfig)."""

from __future__ import annotations

from dataclasses import dataclass

PAD_COLOR = (255, 255, 255)  # product photos sit on white: pad with white, not black


@dataclass(frozen=True)
class FetchConfig:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 60.0  # whole body, against slow-drip servers
    max_retries: int = 3  # retries after the first attempt (connection errors, timeouts, 429, 5xx)
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    allow_private_addresses: bool = False  # SSRF guard: refuse private/loopback/link-local hosts
    allowed_roots: tuple[str, ...] = ()  # local folders images may be read from
    concurrency: int = 16  # concurrent fetches per DoFn instance
    cache: str | None = None  # folder or gs:// prefix; ETag / Last-Modified revalidation
    user_agent: str = "fashion-enrich/0.1 (+catalog enrichment)"

    def __post_init__(self):
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_retries < 0 or self.max_redirects < 0:
            raise ValueError("max_retries and max_redirects must be >= 0")
        if self.max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1024")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be between 1 and 256")


@dataclass(frozen=True)
class DecodeConfig:
    """How bytes become a model-ready array (shared by training and inference)."""

    size: int = 224  # output is size x size x 3, uint8
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked from the header before decoding
    min_side: int = 32  # smaller images are TOO_SMALL
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

    def __post_init__(self):
        if not 8 <= self.size <= 2048:
            raise ValueError("size must be between 8 and 2048")
        if self.max_pixels < self.size * self.size:
            raise ValueError("max_pixels must allow at least one size x size image")
        if self.min_side < 1:
            raise ValueError("min_side must be >= 1")
