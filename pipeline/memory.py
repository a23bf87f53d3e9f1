"""Process memory tuning for long runs over many images (glibc only; a no-op elsewhere).

Decoded images and model batches are large, short-lived buffers (150 KB for one 224 px image).
glibc's malloc raises its mmap threshold dynamically after such buffers are freed, after which
they come from per-thread heap arenas that fragment and rarely shrink: resident memory then
grows with the number of images processed. A fixed threshold keeps large buffers on mmap (memory
goes back to the OS when freed), and two arenas bound the per-thread heaps.

The two kinds of process want different settings (benchmarks/README.md, "Memory model"):

* the launcher holds every collection that crosses a stage boundary, so its memory grows per
  record: a fixed 64 KiB threshold keeps that growth smallest;
* the workers decode and score. Through ONNX Runtime (its own arena holds the model's tensors)
  a fixed 1 MiB keeps decode buffers on the heap and the rest mapped. TensorFlow's batch tensors
  (1 to 32 MB) would be mapped, page-faulted and unmapped on every batch under a fixed threshold
  (half of its workers' CPU time in the kernel): its workers keep glibc's dynamic threshold.
  Both keep two arenas.

``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own variable) fixes the threshold for all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

LAUNCHER_MMAP_THRESHOLD = 64 * 1024  # bytes
WORKER_MMAP_THRESHOLDS = {"onnxruntime": 1024 * 1024}  # engine -> fixed threshold; others: glibc's dynamic one
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_LOG = logging.getLogger(__name__)
_tuned = False  # set once per process: the first call's role wins


def mmap_threshold(default: int | None) -> int | None:
    """The fixed threshold for this process: ``MALLOC_MMAP_THRESHOLD_`` where the environment
    sets it (an operator's setting), else ``default`` (None: glibc's dynamic threshold)."""
    try:
        return int(os.environ.get("MALLOC_MMAP_THRESHOLD_") or 0) or default
    except ValueError:
        return default


def tune_child_processes(engine: str | None, arena_max: int = 2) -> None:
    """The settings of workers scoring through ``engine`` (None: no model), from their start, for
    processes this one spawns (DirectRunner workers): set in the environment, which glibc reads
    at a process's start and :func:`tune_malloc` in the worker reads again."""
    if engine in WORKER_MMAP_THRESHOLDS:
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(WORKER_MMAP_THRESHOLDS[engine]))
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arena_max))


def tune_malloc(threshold: int | None = None, arena_max: int = 2) -> bool:
    """Apply the settings to this process; True when glibc accepted them. ``threshold``: a fixed
    mmap threshold, None for a worker's (which its launcher put in the environment, or left
    dynamic). The first call in a process decides: a launcher tunes itself with
    :data:`LAUNCHER_MMAP_THRESHOLD` before running stages in process, whose own calls then change
    nothing; later calls return True."""
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    fixed = mmap_threshold(threshold)
    ok = (fixed is None or mallopt(_M_MMAP_THRESHOLD, fixed) == 1) and mallopt(_M_ARENA_MAX, arena_max) == 1
    _tuned = ok
    if not ok:
        _LOG.debug("mallopt refused the settings: memory tuning skipped")
    return ok
