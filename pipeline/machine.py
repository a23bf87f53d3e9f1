"""What a run's machine and runner give each worker: the DirectRunner's names, the cores.

Plain Python; Beam's options are read, never changed.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

FN_API_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner", "FnApiRunner")  # run by local_runner
DIRECT_RUNNERS = (*FN_API_RUNNERS, "BundleBasedDirectRunner")


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


def local_runner(options: PipelineOptions):
    """The runner for a run on this machine: Beam's FnApiRunner, built as the DirectRunner builds
    it for a batch pipeline (the pipeline options passed to its workers; ``--direct_running_mode``
    and ``--direct_num_workers`` honoured), for ``--runner`` unset, DirectRunner or FnApiRunner;
    None (the options' own runner) for any other. Beam 2.77's DirectRunner first tries its Prism
    runner on pipelines Prism supports, and Prism downloads a runner binary from GitHub at run
    time, with no timeout: a nightly job must neither reach the network nor change runner when it
    can (where it cannot, the attempt costs a failed download per pass before the fallback)."""
    runner = options.view_as(StandardOptions).runner
    if runner is not None and runner.lower() not in {name.lower() for name in FN_API_RUNNERS if name}:
        return None  # BundleBasedDirectRunner, when asked for by name, and the other runners: their own
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
