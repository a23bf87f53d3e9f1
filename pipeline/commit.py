"""The run's commit: this run's staged files replace its ``run_date=D/retailer=R`` partitions,
then the manifest is written, last, as the commit record.

It can run twice (a retried bundle) and be killed at any point. Each partition is committed on
its own, by a plan that a second attempt finds half done and finishes:

1. the partition's staged files are moved into a hidden sibling folder
   ``run_date=D/_commit-<run>-retailer=R`` (readers skip names starting with ``_``: pyarrow,
   pandas, DuckDB, Spark, BigQuery's Hive layout); a staged file already moved is skipped;
2. that folder and the partition are **exchanged atomically** (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``; where the file system has no such call, two renames, with the partition
   absent in between for the time of one rename), and the previous partition, now hidden, is
   deleted. A second attempt that finds no hidden folder and this run's files in the partition
   has nothing left to do.

A reader listing a local partition therefore sees the previous complete files or the new
complete ones, never a mix and (with ``renameat2``) never none. Object stores (``gs://``) have no
folders to exchange: the new objects are copied in first, then the previous ones deleted, so a
reader listing during those seconds can see both; the manifest's file list is the consistent
view there. A run killed in the middle leaves each partition old or new and no manifest; hidden
leftovers are ignored by readers and removed by the next commit of the same partitions. A run
holds a lock on a local output from start to end (:func:`output_lock`): a second run on the same
output fails at once instead of committing over the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import os
import posixpath
import shutil

from apache_beam.io.filesystems import FileSystems

from pipeline.records import WrittenFile
from schemas.tables import TABLES, TableSpec

PENDING, PREVIOUS = "_commit-", "_previous-"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
LOCK = "_fashion-enrich.lock"  # in a local output: held by the run writing to it


@contextlib.contextmanager
def output_lock(output: str):
    """Hold ``<output>/_fashion-enrich.lock`` (an exclusive ``flock``, released by the system if
    the process dies) for the whole run; another run on the same local output meanwhile fails at
    once, in one line. Object stores have no lock: one run per ``gs://`` output at a time."""
    from pipeline.options import ConfigError

    if "://" in output:
        yield
        return
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, LOCK), "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise ConfigError(f"another fashion-enrich run is writing to {output} ({holder}); "
                              "wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def exchange(a: str, b: str, aside: str) -> bool:
    """Swap two local paths in one atomic step (True), else (the file system or C library has no
    ``renameat2``) with three renames through ``aside`` (False: ``b`` is absent for the time of
    one rename)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and renameat2(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE) == 0:
        return True
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)
    return False


def final_name(written: WrittenFile, run_id: str) -> str:
    return f"part-{written.shard:05d}-{run_id.rsplit('-', 1)[-1]}.parquet"


def _commit_local(folder: str, files: list[WrittenFile], run_id: str) -> None:
    parent, name = posixpath.split(folder.rstrip("/"))
    pending = posixpath.join(parent, f"{PENDING}{run_id}-{name}")
    previous = posixpath.join(parent, f"{PREVIOUS}{run_id}-{name}")
    if not files:  # no rows today: no partition, as a first run writes none
        if os.path.isdir(folder):
            os.rename(folder, previous)
    elif not (os.path.isdir(folder) and {final_name(f, run_id) for f in files} <= set(os.listdir(folder))):
        os.makedirs(pending, exist_ok=True)
        for f in files:  # an earlier attempt may have moved some already
            target = posixpath.join(pending, final_name(f, run_id))
            if os.path.exists(f.path):
                os.replace(f.path, target)
            elif not os.path.exists(target):
                raise FileNotFoundError(f"commit: staged file {f.path} is gone and was not moved to {target}")
        if os.path.isdir(folder):
            exchange(pending, folder, previous)  # the new partition in place, the previous one at ``pending``
        else:
            os.rename(pending, folder)
    for leftover in (pending, previous):  # the previous partition, now hidden, or an attempt's remains
        if os.path.isdir(leftover):
            shutil.rmtree(leftover)


def _remove_empty(*folders: str) -> None:
    """Each of ``folders`` in turn, while it is there and empty (a table with no rows today)."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def _commit_remote(folder: str, files: list[WrittenFile], run_id: str) -> None:
    targets = {posixpath.join(folder, final_name(f, run_id)) for f in files}
    for f in files:
        target = posixpath.join(folder, final_name(f, run_id))
        if FileSystems.exists(f.path):
            FileSystems.rename([f.path], [target])
        elif not FileSystems.exists(target):
            raise FileNotFoundError(f"commit: staged file {f.path} is gone and was not moved to {target}")
    try:
        found = [m.path for r in FileSystems.match([posixpath.join(folder, "*")]) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - nothing under the prefix
        found = []
    stale = [path for path in found if path not in targets]
    if stale:
        FileSystems.delete(stale)


def commit_partitions(output: str, run_date: str, run_id: str, retailers, written: list[WrittenFile]
                      ) -> list[WrittenFile]:
    """Replace every table's ``run_date``/retailer partition of ``retailers`` with this run's
    ``written`` files (module docstring); returns them at their final paths."""
    remote = "://" in output
    final = []
    for table in TABLES.values():
        for retailer in sorted(retailers):
            partition = TableSpec.partition(run_date, retailer)
            files = sorted((f for f in written if f.table == table.name and f.partition == partition),
                           key=lambda f: f.shard)
            folder = FileSystems.join(output, table.name, partition)
            if not remote and files:
                os.makedirs(posixpath.dirname(folder), exist_ok=True)
            (_commit_remote if remote else _commit_local)(folder, files, run_id)
            if not remote and not files:
                _remove_empty(posixpath.dirname(folder), posixpath.dirname(posixpath.dirname(folder)))
            final += [WrittenFile(table=f.table, partition=f.partition, shard=f.shard, rows=f.rows,
                                  path=FileSystems.join(folder, final_name(f, run_id))) for f in files]
    return final


def write_json(path: str, data: dict) -> None:
    """``data`` as JSON at ``path``: locally written aside and renamed over (a reader never sees
    half a manifest); on object stores one object write, atomic by itself."""
    payload = json.dumps(data, indent=2, sort_keys=False, default=str).encode("utf-8")
    if "://" in path:
        with FileSystems.create(path) as fh:
            fh.write(payload)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    aside = f"{path}.{os.getpid()}.tmp"
    with open(aside, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(aside, path)
