"""``fakegs://bucket/key``: an object store for tests, with GCS semantics, on a local folder.

Like GCS it has no directories (``has_dirs`` False, ``mkdirs`` a no-op, a delete of a
prefix ends in '/'), so code that only works on local paths fails here the way it would on
gs://. Registered by importing this module (Beam finds FileSystem subclasses by scheme);
objects live under the folder named by ``FAKE_OBJECT_STORE_ROOT``.
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

ROOT_ENV = "FAKE_OBJECT_STORE_ROOT"
PREFIX = "fakegs://"


class FakeObjectStore(FileSystem):
    @classmethod
    def scheme(cls):
        return "fakegs"

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._disk = LocalFileSystem(pipeline_options)

    @staticmethod
    def _root() -> str:
        return os.environ[ROOT_ENV]

    def _local(self, path: str) -> str:
        if not path.startswith(PREFIX):
            raise ValueError(f"not a {PREFIX} path: {path}")
        return os.path.join(self._root(), path[len(PREFIX):])

    def _remote(self, local: str) -> str:
        return PREFIX + os.path.relpath(local, self._root()).replace(os.sep, "/")

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # object stores have no folders

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        prefix = self._local(dir_or_prefix)
        for folder, _, files in os.walk(self._root()):
            for name in files:
                local = os.path.join(folder, name)
                if local.startswith(prefix):
                    yield FileMetadata(self._remote(local), os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        local = self._local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return self._disk.create(local, mime_type, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._disk.open(self._local(path), mime_type, compression_type)

    def copy(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
            shutil.copyfile(self._local(src), self._local(dst))

    def rename(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
            os.replace(self._local(src), self._local(dst))

    def exists(self, path):
        return os.path.isfile(self._local(path)) or any(True for _ in self._list(path.rstrip("/") + "/"))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def delete(self, paths):
        errors = {}
        for path in paths:
            local = self._local(path)
            if path.endswith("/"):  # a prefix: every object under it, like GCS
                shutil.rmtree(local, ignore_errors=True)
            elif os.path.isfile(local):
                os.remove(local)
            else:
                errors[path] = FileNotFoundError(path)
        if errors:
            raise BeamIOError("delete failed", errors)
