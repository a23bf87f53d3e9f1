"""Reading image files: local paths under the allowed roots, and object stores (``gs://``)
through Beam ``FileSystems``; plain Python, used by :class:`~pipeline.images.fetch.Fetcher`.

A local path is read only when its real path (symlinks resolved) lies under an allowed root.
Resolving every component of every path (an lstat each) cost more than reading a small image's
metadata, so each folder's real path is remembered with the identity (device, inode) of the
folder it resolved to, and checked against a fresh ``stat`` of the folder on every use: a folder,
or one above it, replaced by a symlink since then resolves to another directory and is resolved
anew. A symlinked file itself is always resolved in full.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from stat import S_ISDIR, S_ISLNK
from urllib.parse import urlsplit

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.images.config import FetchConfig
from pipeline.images.validators import file_validator
from pipeline.records import Reason

OBJECT_STORES = ("gs",)  # read through Beam FileSystems (tests add a fake store)
_FOLDERS_REMEMBERED = 4096


class FetchError(Exception):
    def __init__(self, reason: Reason, message: str, *, status: int | None = None, attempts: int = 0,
                 retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.status, self.attempts, self.retry_after = reason, status, attempts, retry_after


@dataclass(frozen=True)
class Fetched:
    data: bytes
    status: int | None  # HTTP status (200, or 304 when served from the cache); None for files
    attempts: int
    millis: float
    cache_hit: bool = False
    validator: str | None = None  # ETag / Last-Modified, or size + mtime (pipeline.images.validators)
    not_modified: bool = False  # the validator given to fetch() still holds: no body was read


class FileReader:
    """Local files and object-store objects, with the size limit and validators of ``config``."""

    def __init__(self, config: FetchConfig):
        self._cfg = config
        self._roots = tuple(os.path.realpath(r) for r in config.allowed_roots)
        self._folders: dict[str, tuple[str, int, int]] = {}  # folder -> (real path, device, inode)

    def _real_folder(self, folder: str) -> str:
        """``os.path.realpath(folder)``, remembered while the folder still resolves to the same directory."""
        try:
            found = os.stat(folder)
        except OSError:
            return os.path.realpath(folder)  # nothing there: the file's own check reports it
        known = self._folders.get(folder)
        if known is not None and (known[1], known[2]) == (found.st_dev, found.st_ino):
            return known[0]
        real = os.path.realpath(folder)  # resolves the folder's symlinks before any '..'
        if S_ISDIR(found.st_mode):
            if len(self._folders) >= _FOLDERS_REMEMBERED:
                self._folders.clear()
            self._folders[folder] = (real, found.st_dev, found.st_ino)
        return real

    def _resolve(self, path: str) -> tuple[str, os.stat_result | None]:
        """(``os.path.realpath(path)``, the file's stat when it is not a symlink: its lstat)."""
        folder, name = os.path.split(path if os.path.isabs(path) else os.path.join(os.getcwd(), path))
        if name in ("", ".", ".."):
            return os.path.realpath(path), None
        real = os.path.join(self._real_folder(folder), name)
        try:
            found = os.lstat(real)
        except OSError:
            return real, None  # reported by the stat that follows
        return (os.path.realpath(real), None) if S_ISLNK(found.st_mode) else (real, found)

    def read_local(self, uri: str, validator: str | None, body: bool = True) -> tuple[bytes | None, str | None]:
        """(bytes, or None when ``validator`` still holds (empty without ``body``); the file's validator)."""
        path = urlsplit(uri).path if uri.startswith("file:") else uri
        real, known = self._resolve(path)
        if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in self._roots):
            raise FetchError(Reason.FORBIDDEN_URI, f"local path {path!r} is outside the allowed roots")
        try:  # os.stat, not FileSystems.match: a glob match costs more than decoding a small JPEG
            stat = known if known is not None else os.stat(real)
            if stat.st_size > self._cfg.max_bytes:
                raise FetchError(Reason.TOO_LARGE, f"file is {stat.st_size} bytes, limit {self._cfg.max_bytes}")
            current = file_validator(stat.st_size, stat.st_mtime_ns)  # taken before reading: a later change shows
            if validator is not None and validator == current:
                return None, current
            if not body:
                return b"", current
            with FileSystems.open(real, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                return fh.read(self._cfg.max_bytes + 1), current
        except OSError as exc:
            raise FetchError(Reason.NOT_FOUND, f"cannot read {path}: {exc.strerror or exc}") from exc

    def read_object(self, path: str, validator: str | None, body: bool = True) -> tuple[bytes | None, str | None]:
        """:meth:`read_local` for an object-store path (its metadata through ``FileSystems.match``)."""
        try:
            match = FileSystems.match([path])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - filesystem errors vary by backend
            raise FetchError(Reason.NOT_FOUND, f"cannot list {path}: {exc}") from exc
        if not match:
            raise FetchError(Reason.NOT_FOUND, f"no such file: {path}")
        if match[0].size_in_bytes > self._cfg.max_bytes:
            raise FetchError(Reason.TOO_LARGE, f"file is {match[0].size_in_bytes} bytes, limit {self._cfg.max_bytes}")
        current = file_validator(match[0].size_in_bytes, int((match[0].last_updated_in_seconds or 0) * 1e9))
        if validator is not None and validator == current:
            return None, current
        if not body:
            return b"", current
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                return fh.read(self._cfg.max_bytes + 1), current
        except OSError as exc:
            raise FetchError(Reason.NOT_FOUND, f"cannot read {path}: {exc}") from exc
