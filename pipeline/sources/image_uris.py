"""Which image URIs a catalog record may carry, resolved against its dump's location.

Allowed: http(s) and ``gs://`` URIs, and local paths that stay inside the dump's own folder
(or, for absolute paths, one of the run's ``--allowed-root`` folders); a dump on an object
store resolves its relative paths under its own prefix. Anything else (other schemes, paths
leaving the folder, malformed URIs) raises :class:`ForbiddenUri`: the record is dead-lettered
as ``FORBIDDEN_URI`` before anything is fetched.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

from apache_beam.io.filesystems import FileSystems

ALLOWED_SCHEMES = ("http", "https", "gs")
_HOST_LIKE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?/", re.IGNORECASE)
# RFC 3986 scheme: a colon before any '/' (so "javascript:x", "data:..." and "mailto:" count too).
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)


class ForbiddenUri(ValueError):
    """An image URI a record may not carry (the record is dead-lettered, nothing is fetched)."""


def dump_folder(path: str) -> str:
    return posixpath.dirname(path) if "://" in path else FileSystems.split(path)[0]


def resolve_image_uri(raw: str, dump_dir: str, *, schemeless_is_https: bool = False,
                      extra_roots: tuple[str, ...] = ()) -> str:
    try:
        return _resolve_image_uri(raw, dump_dir, schemeless_is_https=schemeless_is_https, extra_roots=extra_roots)
    except ValueError as exc:  # urlsplit on "http://[::1/x" and friends
        if isinstance(exc, ForbiddenUri):
            raise
        raise ForbiddenUri(f"malformed URI {str(raw)[:200]!r}: {exc}") from exc


def _within(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolve_image_uri(raw: str, dump_dir: str, *, schemeless_is_https: bool = False,
                       extra_roots: tuple[str, ...] = ()) -> str:
    """Absolute image URI, or :class:`ForbiddenUri`.

    Allowed: http(s) and gs URIs, and file paths (relative, absolute or ``file://``) that stay
    inside the dump's own folder or, for absolute paths, one of ``extra_roots`` (the run's
    ``--allowed-root`` folders). ``schemeless_is_https`` treats ``host.tld/path`` as https
    (ASOS writes image URLs without a scheme).
    """
    uri = (raw or "").strip()
    if not uri:
        raise ForbiddenUri("empty image URI")
    if uri.startswith("//"):
        uri = "https:" + uri
    elif schemeless_is_https and "://" not in uri and _HOST_LIKE.match(uri):
        uri = "https://" + uri
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if scheme in ALLOWED_SCHEMES:
        if scheme in ("http", "https") and not urlsplit(uri).hostname:
            raise ForbiddenUri(f"URI has no host: {uri!r}")
        return uri
    if scheme and scheme != "file":
        raise ForbiddenUri(f"scheme {scheme!r} is not allowed (allowed: {', '.join(ALLOWED_SCHEMES)}, local files)")
    path = urlsplit(uri).path if scheme == "file" else uri
    relative = posixpath.normpath(path)
    if not posixpath.isabs(path) and (relative == ".." or relative.startswith("../")):
        raise ForbiddenUri(f"path {path!r} leaves the dump's folder")
    if "://" in dump_dir:  # dump on gs://: relative paths resolve under the same prefix
        if path.startswith("/"):
            raise ForbiddenUri(f"absolute path {path!r} in a remote dump")
        parts = urlsplit(dump_dir)
        base = posixpath.normpath("/" + parts.path.lstrip("/"))  # "/" for a bucket root
        resolved = posixpath.normpath(posixpath.join(base, path))
        if not resolved.startswith(base.rstrip("/") + "/"):
            raise ForbiddenUri(f"path {path!r} leaves the dump's folder")
        return f"{parts.scheme}://{parts.netloc}{resolved}"
    base = posixpath.normpath(posixpath.abspath(dump_dir))
    resolved = posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(base, path))
    if not any(_within(resolved, root) for root in (base, *extra_roots)):
        raise ForbiddenUri(f"path {path!r} is outside the dump's folder {base} and the allowed roots")
    return resolved
