"""Progress lines during a run: each worker logs how many elements a stage has seen so far.

A side branch (it emits nothing), so it does not change the graph's outputs. Every worker
logs for itself at most once per ``interval_s`` seconds; the end-of-run totals come from the
manifest, not from these lines.
"""

from __future__ import annotations

import logging
import os
import re
import time

import apache_beam as beam

LOGGER = "fashion_enrich.progress"
PREFIX = "progress "
# Where the multi-processing DirectRunner re-logs its workers' records ('Worker: <LogEntry>').
_WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"


class _CountAndLog(beam.DoFn):
    def __init__(self, stage: str, interval_s: float):
        self._stage, self._interval_s = stage, interval_s

    def setup(self):
        self._log = logging.getLogger(LOGGER)
        self._seen = 0
        self._started = self._last = None

    def process(self, element):
        self._seen += 1
        now = time.monotonic()
        if self._started is None:
            self._started = self._last = now
        if now - self._last >= self._interval_s:
            self._last = now
            self._log.info(PREFIX + "[worker %d] %s: %d so far, %.1f/s", os.getpid(), self._stage, self._seen,
                           self._seen / max(now - self._started, 1e-9))
        return ()


class LogProgress(beam.PTransform):
    """Logs a worker-local running count of ``pcoll`` at most every ``interval_s`` seconds (0: at
    every element; the run's ``--progress-interval 0`` leaves this transform out instead)."""

    def __init__(self, stage: str, interval_s: float = 60.0):
        super().__init__()
        self._stage, self._interval_s = stage, interval_s

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_CountAndLog(self._stage, self._interval_s))


# Worker warnings that say nothing about the run (the DirectRunner's own environment).
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_BEAM_MEMORY_WARNING = "Resource module is not available"  # RunInference without PyTorch, each model load
_BENIGN = (_BEAM_MEMORY_WARNING, "Discarding unparseable args", "No semi_persistent_directory")


class _WorkerLogFilter(logging.Filter):
    """Workers' records re-logged by the multi-processing DirectRunner: progress lines become plain
    messages, known environment chatter and other INFO records are dropped, real warnings stay
    (as their message, not the whole log entry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        entry = record.args[0] if isinstance(record.args, tuple) and record.args else ""
        found = _MESSAGE.search(entry) if isinstance(entry, str) else None
        if not found:
            return record.levelno >= logging.WARNING
        message = re.sub(r"\\(.)", r"\1", found.group(1))
        if message.startswith(PREFIX):
            record.name, record.msg, record.args = LOGGER, message, ()
            return True
        if record.levelno < logging.WARNING or message.startswith(_BENIGN):
            return False
        record.msg, record.args = "worker: %s", (message,)
        return True


class _BenignFilter(logging.Filter):
    """Beam's RunInference warns on every model load that it cannot measure memory when its
    optional PyTorch-based model manager is not installed (it then also drops ``resource``):
    environment chatter, not a problem of the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_BEAM_MEMORY_WARNING)
                    and record.pathname.replace("\\", "/").endswith("apache_beam/ml/inference/base.py"))


def show_progress(benign_filtered: bool = True) -> None:
    """Print progress lines at INFO in this process, including those of multi-processing workers;
    ``benign_filtered=False`` (``--verbose``) keeps Beam's known-benign warnings."""
    root = logging.getLogger()
    if benign_filtered and not any(isinstance(f, _BenignFilter) for f in root.filters):
        root.addFilter(_BenignFilter())
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    worker = logging.getLogger(_WORKER_LOGGER)
    if not any(isinstance(f, _WorkerLogFilter) for f in worker.filters):
        worker.addFilter(_WorkerLogFilter())
    worker.setLevel(logging.INFO)
