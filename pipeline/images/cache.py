"""ImageCache: fetched bytes keyed by URI, with the validators needed to revalidate them.

Nightly reruns see mostly unchanged images. Each entry stores the bytes plus the response's
ETag / Last-Modified; the fetcher sends them back as If-None-Match / If-Modified-Since and a
304 answer reuses the cached bytes. Works on a local folder or a gs:// prefix (FileSystems).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    data: bytes
    etag: str | None
    last_modified: str | None


class ImageCache:
    def __init__(self, root: str):
        self._root = root.rstrip("/")

    def _paths(self, uri: str) -> tuple[str, str]:
        from apache_beam.io.filesystems import FileSystems

        key = hashlib.sha256(uri.encode("utf-8")).hexdigest()
        base = FileSystems.join(self._root, key[:2], key)
        return base + ".bin", base + ".json"

    def get(self, uri: str) -> CacheEntry | None:
        from apache_beam.io.filesystems import FileSystems

        data_path, meta_path = self._paths(uri)
        try:
            with FileSystems.open(meta_path, compression_type="uncompressed") as fh:
                meta = json.loads(fh.read())
            with FileSystems.open(data_path, compression_type="uncompressed") as fh:
                data = fh.read()
        except (OSError, ValueError):
            return None  # no entry, or a half-written one: fetch afresh
        if not isinstance(meta, dict) or meta.get("uri") != uri or meta.get("bytes") != len(data):
            return None
        if not meta.get("etag") and not meta.get("last_modified"):
            return None  # nothing to revalidate with
        return CacheEntry(data, meta.get("etag"), meta.get("last_modified"))

    def put(self, uri: str, data: bytes, *, etag: str | None, last_modified: str | None) -> None:
        from apache_beam.io.filesystems import FileSystems

        if not etag and not last_modified:
            return
        data_path, meta_path = self._paths(uri)
        meta = json.dumps({"uri": uri, "bytes": len(data), "etag": etag, "last_modified": last_modified}).encode()
        for path, payload in ((data_path, data), (meta_path, meta)):  # bytes first: meta marks the entry whole
            temp = f"{path}.{uuid.uuid4().hex}.tmp"  # write aside, then rename: readers never see half a file
            with FileSystems.create(temp, compression_type="uncompressed") as fh:
                fh.write(payload)
            FileSystems.rename([temp], [path])
