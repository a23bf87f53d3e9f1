"""Nightly job on one machine: the multi-processing DirectRunner sized to the machine, today's
run-date partition, a one-screen summary, and an exit code a cron job can alert on.

    fashion-enrich nightly [--max-dead-letter-share 0.05] [--workers N] [--full] [any 'run' option]

Incremental by default: unchanged images of the output's previous run are reused
(``run --previous OUTPUT``, :mod:`pipeline.reuse`); ``--full`` fetches and scores everything.
Catalogs of more than ``--records-per-shard`` image records run as one Beam pipeline per hash
shard of their products, so memory stays bounded (:mod:`pipeline.sharded`).

Exit codes: 0 ok; 1 counts did not reconcile; 2 bad command line or input files;
3 the dead-letter share exceeded ``--max-dead-letter-share``; 4 the job itself failed
(an exception in the pipeline, an unwritable output...: the message is on stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_OK, EXIT_NOT_RECONCILED, EXIT_DEAD_LETTER, EXIT_FAILED = 0, 1, 3, 4
DEFAULT_MAX_DEAD_LETTER_SHARE = 0.05
GIB_PER_WORKER = 2.0  # TensorFlow, three models and in-flight batches per worker process, with margin


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def default_workers(cpus: int | None = None, memory_gib: float | None = None) -> int:
    """One worker process per core, fewer when memory would not hold them."""
    if cpus is None:
        from pipeline.machine import available_cores

        cpus = available_cores()
    memory_gib = _memory_gib() if memory_gib is None else memory_gib
    return max(1, min(cpus, int(memory_gib // GIB_PER_WORKER)))


def direct_args(argv: list[str], workers: int) -> list[str]:
    """``argv`` with the nightly DirectRunner defaults added where the user did not set them."""
    given = {a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    defaults = {"runner": "DirectRunner", "direct_running_mode": "multi_processing",
                "direct_num_workers": str(workers)}
    return [f"--{k}={v}" for k, v in defaults.items() if k not in given] + list(argv)


def reuse_args(argv: list[str], full: bool) -> list[str]:
    """``argv`` with ``--previous`` set to the output folder (reuse its previous run), unless ``full``,
    or given, or the output does not exist yet (the first night)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.flags import FashionEnrichOptions
    from pipeline.options import ConfigError

    given = PipelineOptions(argv).view_as(FashionEnrichOptions)
    if full and given.previous:
        raise ConfigError("--full and --previous exclude each other")
    if full or given.previous:
        return list(argv)
    if "://" not in given.output and not os.path.isdir(given.output):
        return list(argv)
    return [*argv, f"--previous={given.output}"]


def verdict(manifest: dict, max_share: float) -> tuple[int, str]:
    from pipeline.summary import dead_letter_share

    share = dead_letter_share(manifest)
    if not manifest["reconciled"]:
        return EXIT_NOT_RECONCILED, "FAILED: record counts do not reconcile (see manifest reconciliation)"
    if share > max_share:
        return EXIT_DEAD_LETTER, f"FAILED: dead-letter share {share:.1%} exceeds {max_share:.1%}"
    return EXIT_OK, f"OK: dead-letter share {share:.1%} (limit {max_share:.1%})"


def main(argv: list[str]) -> int:
    from pipeline.job import run_job
    from pipeline.summary import format_summary

    parser = argparse.ArgumentParser(prog="fashion-enrich nightly", add_help=False,
                                     description="the enrichment run with nightly defaults; other options "
                                                 "are 'fashion-enrich run' options")
    parser.add_argument("--max-dead-letter-share", "--max_dead_letter_share", dest="max_share", type=float,
                        default=DEFAULT_MAX_DEAD_LETTER_SHARE,
                        help="exit 3 when dead letters / records in exceeds this share")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: sized to the machine)")
    parser.add_argument("--full", "--no-reuse", dest="full", action="store_true",
                        help="fetch, decode and score every image (default: reuse the output's unchanged images)")
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nplus every 'fashion-enrich run' option (fashion-enrich run --help)")
        return EXIT_OK
    from pipeline.options import ConfigError

    if not 0 <= args.max_share <= 1:
        raise ConfigError("--max-dead-letter-share must be between 0 and 1")
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    try:
        result = run_job(direct_args(reuse_args(rest, args.full), args.workers or default_workers()))
    except ConfigError:
        raise  # exit 2, one line (runners.cli)
    except Exception as exc:  # noqa: BLE001 - a cron job needs a distinct code, not a traceback
        logging.getLogger(__name__).debug("job failed", exc_info=True)
        print(f"fashion-enrich nightly: FAILED: {type(exc).__name__}: {str(exc)[:2000]}", file=sys.stderr)
        return EXIT_FAILED
    code, line = verdict(result.manifest, args.max_share)
    print(format_summary(result.manifest, result.seconds))
    print(line)
    return code
