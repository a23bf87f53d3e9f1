"""Content validators: a short string per fetched image that says whether it changed since.

The next run compares it instead of downloading and decoding the image again (incremental
runs, :mod:`pipeline.reuse`):

* http(s): the response's ``ETag`` (``etag:<value>``), else its ``Last-Modified``
  (``last-modified:<date>``), sent back as ``If-None-Match`` / ``If-Modified-Since``; a 304
  answer means unchanged and carries no body. A server that sends neither gives no validator
  (such images are fetched and scored every run);
* local files and object stores: the size and the modification time
  (``file:size=<bytes>;mtime_ns=<ns>``), from ``os.stat`` or Beam ``FileSystems`` metadata.

Plain functions, no I/O.
"""

from __future__ import annotations

_ETAG, _LAST_MODIFIED = "etag:", "last-modified:"


def http_validator(etag: str | None, last_modified: str | None) -> str | None:
    """The validator of an HTTP response (its ETag wins over Last-Modified), or None."""
    if etag:
        return _ETAG + etag
    if last_modified:
        return _LAST_MODIFIED + last_modified
    return None


def conditional_headers(validator: str | None) -> dict[str, str]:
    """The request headers that ask a server whether an HTTP validator still holds."""
    if validator and validator.startswith(_ETAG):
        return {"If-None-Match": validator[len(_ETAG):]}
    if validator and validator.startswith(_LAST_MODIFIED):
        return {"If-Modified-Since": validator[len(_LAST_MODIFIED):]}
    return {}


def file_validator(size: int, mtime_ns: int | None) -> str | None:
    """The validator of a file or object: its size and modification time (None without a time)."""
    if not mtime_ns:
        return None
    return f"file:size={size};mtime_ns={mtime_ns}"
