"""What a run's machine and runner give each worker: the DirectRunner's names, the cores.

Plain Python; Beam's options are read, never changed.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

DIRECT_RUNNERS = (None, "DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                  "FnApiRunner")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_cores(options: PipelineOptions) -> int:
    """The cores each worker process has: cores / ``--direct_num_workers`` on the multi-processing
    DirectRunner (its workers share one machine), else 0 (not known here: TensorFlow's default
    and 2 decode threads). Measured on Myntra with 2 workers on 2 cores: one TensorFlow and one
    decode thread per worker, instead of the defaults (2 each, 4 + 4 on 2 cores), ran 65 s
    instead of 82 s (benchmarks/README.md)."""
    runner = options.view_as(StandardOptions).runner
    direct = options.view_as(DirectOptions)
    if runner not in DIRECT_RUNNERS or direct.direct_running_mode != "multi_processing":
        return 0
    cpus = available_cores()
    workers = direct.direct_num_workers or cpus  # Beam: 0 workers means one per core
    return max(1, cpus // max(1, workers))
