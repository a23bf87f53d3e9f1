"""Run one enrichment job from a command line: options -> config -> graph -> run -> manifest.

Shared by ``fashion-enrich run`` and the runners in ``runners/`` (which only add their
environment's defaults and their own exit policy).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class JobResult:
    config: object  # pipeline.options.RunConfig
    manifest: dict
    seconds: float


def run_job(argv: list[str]) -> JobResult:
    """Validate ``argv``, build the graph on a Beam pipeline, run it to the end, read the manifest."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipeline.build import build_pipeline
    from pipeline.commit import output_lock
    from pipeline.machine import local_runner
    from pipeline.options import RunConfig
    from pipeline.sharded import may_need_shards

    options = PipelineOptions(argv)
    config = RunConfig.from_options(options)
    check_writable(config.output)
    with output_lock(config.output):  # one run at a time on a local output
        if may_need_shards(config, options.view_as(StandardOptions).runner):
            result = run_sharded_job(options, config)
            if result is not None:
                return result
        p = beam.Pipeline(runner=local_runner(options), options=options)
        build_pipeline(p, config)
        return run_pipeline(p, config)


def run_sharded_job(options, config) -> JobResult | None:
    """The run as a sequence of Beam pipelines over hash shards of its products
    (:mod:`pipeline.sharded`); None when one shard is enough (nothing was committed). The shard
    and band passes run with the run's own options; the other passes, small beside them, run on
    the in-process DirectRunner (no worker processes to start)."""
    import copy

    import apache_beam as beam
    from apache_beam.options.pipeline_options import DirectOptions

    from pipeline.machine import local_runner
    from pipeline.memory import LAUNCHER_MMAP_THRESHOLD, tune_child_processes, tune_malloc
    from pipeline.sharded import run_sharded

    tune_malloc(LAUNCHER_MMAP_THRESHOLD)  # before anything sets the workers' threshold in the environment
    tune_child_processes(config.engine)
    light = copy.deepcopy(options)
    light.view_as(DirectOptions).direct_running_mode = "in_memory"

    def run(build, *, heavy: bool) -> None:
        chosen = options if heavy else light
        p = beam.Pipeline(runner=local_runner(chosen), options=chosen)
        build(p)
        p.run().wait_until_finish()

    started = time.monotonic()
    if not run_sharded(config, run):
        return None
    return JobResult(config=config, manifest=read_manifest(config), seconds=time.monotonic() - started)


def run_pipeline(p, config) -> JobResult:
    """Run a pipeline that ``build_pipeline`` built for ``config`` to the end; read its manifest.
    (The Dataflow runner builds and validates its graph itself, then hands it over here.)"""
    from pipeline.memory import LAUNCHER_MMAP_THRESHOLD, tune_child_processes, tune_malloc

    tune_malloc(LAUNCHER_MMAP_THRESHOLD)  # this process holds the DirectRunner's shuffled data
    tune_child_processes(config.engine)
    started = time.monotonic()
    p.run().wait_until_finish()  # the manifest is read below: always wait
    seconds = time.monotonic() - started
    return JobResult(config=config, manifest=read_manifest(config), seconds=seconds)


def read_manifest(config) -> dict:
    """The manifest that the run of ``config`` committed."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.sinks import manifest_paths

    with FileSystems.open(manifest_paths(config.output, config.run_date, config.run_id)[1]) as fh:
        return json.loads(fh.read())


def check_writable(output: str) -> None:
    """Fail early, in one line, when a local output folder cannot be written."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.options import ConfigError

    if "://" in output:
        return  # object stores: permissions show at write time, in the runner's logs
    probe = FileSystems.join(output, f".write-test-{os.getpid()}")
    try:
        os.makedirs(output, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write to output folder {output}: {exc.strerror or exc}") from exc
