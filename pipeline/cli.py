"""The ``fashion-enrich`` command line: ``run`` and ``taxonomy``.

Parsing, config and graph are separate: this module turns argv into a validated
:class:`~pipeline.options.RunConfig`, hands a Beam pipeline to
:func:`~pipeline.build.build_pipeline`, runs it and prints a short summary. User errors are
printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

USAGE = """fashion-enrich <command> [options]

commands:
  run        enrich catalog dumps into partitioned Parquet (default: the shipped samples)
  taxonomy   print the category hierarchy
  prepare    labelled catalogs -> training data (images, label ids, TFT vocabularies)
  train      grouped k-fold training of a model on prepared data, and its export
  evaluate   metrics and plots of an exported model on prepared data

'fashion-enrich run --help' lists the run options; other Beam options pass through."""


def _run(argv: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.build import build_pipeline
    from pipeline.options import FashionEnrichOptions, RunConfig
    from pipeline.sinks import manifest_paths

    if "-h" in argv or "--help" in argv:
        parser = argparse.ArgumentParser(prog="fashion-enrich run")
        FashionEnrichOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    options = PipelineOptions(argv)
    config = RunConfig.from_options(options)
    _check_writable(config.output)
    started = time.monotonic()
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, config)
    seconds = time.monotonic() - started
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(manifest_paths(config.output, config.run_date, config.run_id)[1]) as fh:
        manifest = json.loads(fh.read())
    _print_summary(manifest, seconds)
    return 0 if manifest["reconciled"] else 1


def _check_writable(output: str) -> None:
    """Fail early, in one line, when the output folder cannot be written."""
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


def _print_summary(manifest: dict, seconds: float) -> None:
    counts = manifest["counts"]
    stages = counts["dead_letter_by_stage"]
    print(f"run {manifest['run_id']} -> {manifest['output']}  ({seconds:.1f} s)")
    print(f"{'retailer':<12}{'records in':>11}{'read err':>9}{'dupes':>7}{'fetch err':>10}{'decode err':>11}"
          f"{'infer err':>10}{'images':>8}{'products':>9}  reconciled")
    for retailer, rec in manifest["reconciliation"].items():
        by_stage = stages.get(retailer, {})
        print(f"{retailer:<12}{rec['records_in']:>11}{by_stage.get('read', 0):>9}{rec['duplicates']:>7}"
              f"{by_stage.get('fetch', 0):>10}{by_stage.get('decode', 0):>11}{by_stage.get('inference', 0):>10}"
              f"{rec['images']:>8}{counts['products'].get(retailer, 0):>9}  {'yes' if rec['ok'] else 'NO'}")
    models = manifest.get("models") or {}
    print("models: " + (", ".join(f"{t} {m['model_id']}" for t, m in models.items()) or "none (retailer labels only)"))
    agreement = {r: c for r, c in counts.get("category_agreement", {}).items() if c}
    if agreement:
        print("model vs retailer category: " + "; ".join(
            f"{r}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for r, c in agreement.items()))
    reasons = {r: c for r, c in counts["dead_letter_by_reason"].items() if c}
    if reasons:
        print("dead-letter reasons: " + "; ".join(
            f"{r}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for r, c in reasons.items()))
    unmapped = {r: v for r, v in manifest["unmapped"]["category"].items() if v}
    if unmapped:
        print("unmapped categories: " + "; ".join(
            f"{r}: " + ", ".join(f"{k!r} {v}" for k, v in list(c.items())[:5]) for r, c in unmapped.items()))
    print(f"manifest: {manifest['output']}/manifest.json")


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


def _prepare(argv: list[str]) -> int:
    from models.cli import prepare_main

    return prepare_main(argv)


def _train(argv: list[str]) -> int:
    from models.cli import train_main

    return train_main(argv)


def _evaluate(argv: list[str]) -> int:
    from models.cli import evaluate_main

    return evaluate_main(argv)


COMMANDS = {"run": _run, "taxonomy": _taxonomy, "prepare": _prepare, "train": _train, "evaluate": _evaluate}


def main(argv: list[str] | None = None) -> int:
    from pipeline.options import ConfigError
    from schemas.mapping import MappingError
    from schemas.taxonomy import TaxonomyError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fashion-enrich: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[command](rest)
    except (ConfigError, MappingError, TaxonomyError) as exc:
        print(f"fashion-enrich {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
