"""The ``fashion-enrich`` command line: one subcommand per entry of :data:`COMMANDS`.

Each subcommand lives with its code (``run``: :mod:`pipeline.job`, ``nightly`` and ``dataflow``:
this folder, the training commands: :mod:`models.cli`) and is imported only when called.
Parsing, config and graph are separate: ``run`` turns argv into a validated
:class:`~pipeline.options.RunConfig`, hands a Beam pipeline to
:func:`~pipeline.build.build_pipeline`, runs it and prints a short summary. User errors are
printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = """fashion-enrich <command> [options]

commands:
  run        enrich catalog dumps into partitioned Parquet (default: the shipped samples)
  nightly    'run' with one-machine defaults, a summary, and exit 3 above a dead-letter share
  dataflow   'run' on Dataflow with GPU workers (see docs/operations.md, "Running on Dataflow with GPUs")
  inspect    terminal summary of a run's output (counts, distributions, review queue, dead letters)
  report     self-contained HTML report of a run's output, with plots and thumbnails
  taxonomy   print the category hierarchy
  mapping    draft a retailer's mapping file from its images, or audit the one in force
  prepare    labelled catalogs -> training data (images, label ids, TFT vocabularies)
  train      grouped k-fold training of a model on prepared data, and its export
  evaluate   metrics and plots of an exported model on prepared data
  calibrate  fit an exported model's temperature on its held-out fold (stored in its card)
  onnx       add a checked model.onnx to exported models (ONNX Runtime scores them on CPU)

'fashion-enrich run --help' lists the run options; other Beam options pass through.
-v, --verbose (anywhere; or FASHION_ENRICH_VERBOSE=1): keep TensorFlow's native log lines and log at INFO."""


def _run(argv: list[str]) -> int:
    from pipeline.job import run_job
    from pipeline.options import FashionEnrichOptions
    from pipeline.summary import format_summary

    if "-h" in argv or "--help" in argv:
        parser = argparse.ArgumentParser(prog="fashion-enrich run")
        FashionEnrichOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    result = run_job(argv)
    print(format_summary(result.manifest, result.seconds))
    return 0 if result.manifest["reconciled"] else 1


def _nightly(argv: list[str]) -> int:
    from runners.nightly import main as nightly_main

    return nightly_main(argv)


def _dataflow(argv: list[str]) -> int:
    from runners.dataflow import main as dataflow_main

    return dataflow_main(argv)


def _inspect(argv: list[str]) -> int:
    from pipeline.inspect_output import format_summary, summarize

    parser = argparse.ArgumentParser(prog="fashion-enrich inspect")
    parser.add_argument("output", help="a fashion-enrich output folder (local or gs://)")
    parser.add_argument("--run-date", "--run_date", dest="run_date", default=None,
                        help="YYYY-MM-DD (default: the latest run)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = summarize(args.output, args.run_date)
    if args.json:
        import json

        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0


def _report(argv: list[str]) -> int:
    from apache_beam.io.filesystems import FileSystems

    from pipeline.report import build_report

    parser = argparse.ArgumentParser(prog="fashion-enrich report")
    parser.add_argument("output", help="a fashion-enrich output folder (local or gs://)")
    parser.add_argument("--html", required=True, help="the HTML file to write (local or gs://)")
    parser.add_argument("--run-date", "--run_date", dest="run_date", default=None)
    parser.add_argument("--queue-rows", "--queue_rows", "--disagreements", dest="queue_rows", type=int, default=20,
                        help="rows shown per review-queue tier (--disagreements: its former name)")
    args = parser.parse_args(argv)
    page = build_report(args.output, args.run_date, limit=args.queue_rows)
    with FileSystems.create(args.html) as fh:
        fh.write(page.encode("utf-8"))
    print(f"report: {args.html} ({len(page) / 1024:.0f} KB)")
    return 0


def _taxonomy(argv: list[str]) -> int:
    from schemas.taxonomy import load_taxonomy

    parser = argparse.ArgumentParser(prog="fashion-enrich taxonomy")
    parser.add_argument("--file", default=None, help="taxonomy YAML (default: the shipped one)")
    parser.add_argument("--paths", action="store_true", help="print one full path per line")
    args = parser.parse_args(argv)
    taxonomy = load_taxonomy(args.file)
    if args.paths:
        print("\n".join(taxonomy.path_string(n) for n in taxonomy.names))
    else:
        print(taxonomy.render_tree())
    print(f"({len(taxonomy)} nodes; genders: {', '.join(taxonomy.genders)}; "
          f"age groups: {', '.join(taxonomy.age_groups)})")
    return 0


def _mapping(argv: list[str]) -> int:
    from pipeline.mapping_command import mapping_main

    return mapping_main(argv)


def _prepare(argv: list[str]) -> int:
    from models.cli import prepare_main

    return prepare_main(argv)


def _train(argv: list[str]) -> int:
    from models.cli import train_main

    return train_main(argv)


def _calibrate(argv: list[str]) -> int:
    from models.cli import calibrate_main

    return calibrate_main(argv)


def _evaluate(argv: list[str]) -> int:
    from models.cli import evaluate_main

    return evaluate_main(argv)


def _onnx(argv: list[str]) -> int:
    from models.cli import onnx_main

    return onnx_main(argv)


COMMANDS = {"run": _run, "nightly": _nightly, "dataflow": _dataflow, "inspect": _inspect, "report": _report,
            "taxonomy": _taxonomy, "mapping": _mapping, "prepare": _prepare, "train": _train, "evaluate": _evaluate,
            "calibrate": _calibrate, "onnx": _onnx}


def main(argv: list[str] | None = None) -> int:
    from pipeline.options import ConfigError
    from pipeline.quiet import quiet_python_loggers, verbose_requested
    from schemas.mapping import MappingError
    from schemas.taxonomy import TaxonomyError

    verbose, argv = verbose_requested(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fashion-enrich: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        quiet_python_loggers()
    if command in ("run", "nightly", "dataflow") or (command == "mapping" and "--source" in rest):
        from pipeline.progress import show_progress

        show_progress(benign_filtered=not verbose)
    try:
        return COMMANDS[command](rest)
    except (ConfigError, MappingError, TaxonomyError) as exc:
        print(f"fashion-enrich {command}: error: {exc}", file=sys.stderr)
        return 2


def console_main() -> None:
    """The ``fashion-enrich`` executable: :func:`main` with TensorFlow's native lines filtered
    out of stderr unless verbose (:mod:`pipeline.quiet`)."""
    from pipeline.quiet import quiet_native_logs, verbose_requested

    if not verbose_requested(sys.argv[1:])[0]:
        quiet_native_logs()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
