"""``fashion-enrich mapping draft|audit``: onboarding a retailer's vocabulary from its images.

::

    fashion-enrich mapping draft OUTPUT [OUTPUT ...] [--retailer NAME] [--mapping FILE] [--out FILE]
    fashion-enrich mapping draft --source NAME=DUMP:MAPPING.yaml [--work DIR] [--out FILE] [run options]
    fashion-enrich mapping audit OUTPUT [OUTPUT ...] [--retailer NAME] [--json]

``draft`` reads a run's output (or runs ``fashion-enrich run`` itself into ``--work`` on a dump
whose mapping file may hold only its ``source:`` section) and writes a mapping file that
``--source NAME=DUMP:FILE`` reads as it is (:mod:`pipeline.mapping_draft`). ``audit`` lists the
values whose mapping in force the images dispute. Both print a terminal table.
"""

from __future__ import annotations

import argparse
import json
import sys

USAGE = "fashion-enrich mapping {draft,audit} ..."


def _parser(command: str, *, runs: bool = False) -> argparse.ArgumentParser:
    """The command's parser; ``runs``: draft --source, whose other arguments go to 'run'."""
    from pipeline.mapping_votes import MIN_PRODUCTS

    parser = argparse.ArgumentParser(prog=f"fashion-enrich mapping {command}")
    if not runs:
        parser.add_argument("outputs", nargs="*" if command == "draft" else "+", metavar="OUTPUT",
                            help="fashion-enrich output folders (local or gs://), read as one catalog: each one's "
                                 "latest run")
    parser.add_argument("--retailer", default=None, help="the retailer to read (needed when an output holds several)")
    parser.add_argument("--min-products", dest="min_products", type=int, default=MIN_PRODUCTS,
                        help="values with fewer products are never mapped automatically")
    parser.add_argument("--taxonomy", default=None, help="taxonomy YAML (default: the shipped one)")
    parser.add_argument("--top", type=int, default=40, help="rows of the terminal table")
    parser.add_argument("--mapping", default=None,
                        help="the retailer's mapping file (default: the one the run used, from its manifest): "
                             "draft keeps its source/description/colour sections, audit checks its rules")
    if command == "draft":
        parser.add_argument("--source", default=None, metavar="NAME=DUMP:MAPPING.yaml",
                            help="run on this dump first (its mapping may hold only a source: section)")
        parser.add_argument("--work", default="fashion-enrich-onboarding",
                            help="with --source: the run's output folder")
        parser.add_argument("--out", default=None, help="the drafted mapping file (default: NAME-draft.yaml)")
    else:
        parser.add_argument("--json", action="store_true", help="print every finding as JSON")
    return parser


def mapping_main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("draft", "audit"):
        if argv and argv[0] in ("-h", "--help"):
            print(f"{USAGE}\n\n  draft  write a mapping file drafted from the images (with --source, it takes "
                  "every 'run' option too)\n  audit  the values whose mapping in force the images dispute\n")
            for command in ("draft", "audit"):
                print(_parser(command).format_help())
            return 0
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    command = argv[0]
    runs = command == "draft" and any(a == "--source" or a.startswith("--source=") for a in argv[1:])
    parser = _parser(command, runs=runs)
    args, rest = parser.parse_known_args(argv[1:])
    if rest and not runs:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.outputs = getattr(args, "outputs", [])
    return _draft(args, rest) if command == "draft" else _audit(args)


def _read(args, *, with_mapping: bool):
    from pipeline.mapping_evidence import category_values, evidence, read_products
    from schemas.mapping import load_mapping
    from schemas.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(args.taxonomy)
    frame, retailer, classes = read_products(args.outputs, args.retailer)
    path = args.mapping or _mapping_of(args.outputs[0], retailer)
    mapping = load_mapping(path, taxonomy=taxonomy) if with_mapping and path else None
    found = evidence(frame, taxonomy, mapping=mapping, min_products=args.min_products)
    return found, retailer, taxonomy, mapping, path, category_values(frame), classes


def _draft(args, run_args: list[str]) -> int:
    import yaml

    from pipeline.mapping_draft import draft_mapping, format_draft, held_back
    from pipeline.options import ConfigError
    from schemas.mapping import normalize_key, parse_mapping

    if args.source:
        name = args.source.split("=", 1)[0]
        _run(args.source, args.work, run_args + (["--taxonomy", args.taxonomy] if args.taxonomy else []))
        args.outputs, args.retailer = [args.work], args.retailer or name
    elif not args.outputs:
        raise ConfigError("give the OUTPUT folders of a run, or --source NAME=DUMP:MAPPING.yaml to run one")
    evidences, retailer, taxonomy, _, path, values, _ = _read(args, with_mapping=False)
    base = _base_mapping(path, taxonomy)
    if not base.get("source"):
        raise ConfigError(f"no mapping file with a source: section known for {retailer}: give --mapping")
    held = held_back(evidences, taxonomy, product_values=values, out_of_scope=[
        normalize_key(v) for v in (base.get("category") or {}).get("out_of_scope") or ()])
    text = draft_mapping(evidences, retailer=retailer, base=base, held=held,
                         origin=f"{len(values):,} products of " + ", ".join(args.outputs))
    parse_mapping(yaml.safe_load(text), taxonomy=taxonomy, path="the drafted mapping")  # read as it is
    out = args.out or f"{retailer}-draft.yaml"
    _write(out, text)
    print(format_draft(evidences, top=args.top))
    print(f"drafted mapping: {out}  (use: --source {retailer}=DUMP:{out})")
    return 0


def _audit(args) -> int:
    from pipeline.mapping_audit import audit_mapping, format_audit
    from pipeline.options import ConfigError

    evidences, retailer, taxonomy, mapping, path, values, classes = _read(args, with_mapping=True)
    if mapping is None:
        raise ConfigError(f"no mapping file known for {retailer}: give --mapping")
    findings = audit_mapping(evidences, taxonomy, mapping, classes)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        print(f"mapping audit: {retailer} ({path}), {len(values):,} products")
        print(format_audit(findings, top=args.top))
    return 0


def _run(source: str, work: str, run_args: list[str]) -> None:
    from pipeline.job import run_job
    from pipeline.summary import format_summary

    result = run_job(["--source", source, "--output", work, *run_args])
    print(format_summary(result.manifest, result.seconds))


def _mapping_of(output: str, retailer: str) -> str | None:
    from pipeline.inspect_output import read_manifest

    return next((s.get("mapping") for s in read_manifest(output).get("sources", [])
                 if s.get("retailer") == retailer), None)


def _base_mapping(path: str | None, taxonomy) -> dict:
    import yaml
    from apache_beam.io.filesystems import FileSystems

    from schemas.mapping import load_mapping

    if not path:
        return {}
    load_mapping(path, taxonomy=taxonomy)  # a valid mapping, or one line on what is wrong with it
    with FileSystems.open(path) as fh:
        return yaml.safe_load(fh.read().decode("utf-8")) or {}


def _write(path: str, text: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as fh:
        fh.write(text.encode("utf-8"))
