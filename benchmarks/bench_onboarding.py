"""Onboarding benchmark: a mapping drafted from the images against the hand-written one.

For each catalog of ``../shared/data`` (Myntra: a three-level path, gender words with Boys/Girls;
Clothing: 20 single-level labels and a kids flag, another vocabulary), the shipped mapping file is
stripped of its ``category``, ``gender`` and ``age_group`` sections, the real ``fashion-enrich run``
scores the catalog through it, and ``fashion-enrich mapping draft`` drafts those sections from the
run's output. Each drafted rule is compared with the hand mapping, weighted by products:

* values with >= 20 products: the share of their products whose drafted node is the hand
  mapping's (exact), or its parent or child (related); values the hand mapping leaves out of
  scope count apart;
* values with < 5 products: how many were mapped (none should be);
* every gender and age value: drafted against hand-mapped.

Then ``fashion-enrich mapping audit`` runs against the hand mapping (its findings are printed).

**Out-of-fold models.** The shipped model was trained on these images; with ``--cv-run RUN`` (a
multi-task training output that kept its ``checkpoints/``) each fold's model scores the products
it held out (one run per fold, ``models.fold_export``), and the draft reads the three outputs as
one catalog. Without it, one run with the shipped model (in-sample: optimistic, said so).

    python benchmarks/bench_onboarding.py --cv-run mt-oof
    python benchmarks/bench_onboarding.py                    # shipped model, in-sample
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_label_errors import _read, _write, export_folds  # noqa: E402

from pipeline.taxonomy import map_age_group, map_category, map_gender  # noqa: E402
from schemas.mapping import builtin_mapping_file, load_mapping, normalize_key  # noqa: E402
from schemas.taxonomy import Relation, load_taxonomy  # noqa: E402

CATALOGS = {  # retailer -> (csv under the data folder, its category columns, gender column, age column)
    "myntra": ("myntra/styles.csv", ("masterCategory", "subCategory", "articleType"), "gender", None),
    "clothing": ("clothing/images.csv", ("label",), None, "kids"),
}


def unfinished_folds(cv_run: str, train_args: str, work: Path, folds: list[int],
                     reference: str = "default:category") -> tuple[dict[int, str], dict[str, int]]:
    """Exports of the finished folds of a training run cut short (no card, no out-of-fold file
    yet): each fold's checkpoint with the card, vocabulary, temperatures and label quality of
    ``reference`` (an export of the same recipe and data), and the fold of every product,
    recomputed from the training's own arguments (``models.folds.split``)."""
    import shlex
    import shutil

    from models.cli import _train_config, _train_parser
    from models.data import load_prepared
    from models.export import serving_copy
    from models.folds import split
    from models.multitask_fit import load_checkpoint
    from pipeline.model_info import resolve_model_path

    cfg = _train_config(_train_parser().parse_args(shlex.split(train_args)))
    data = load_prepared(cfg.data)
    index, _, _, fold_per_example = split(data, cfg)
    fold_of = {str(key): int(fold) for key, fold in zip(data.product_keys[index], fold_per_example)}
    source = Path(resolve_model_path(reference))
    exports = {}
    for fold in folds:
        out = work / "models" / f"fold{fold + 1}"
        out.mkdir(parents=True, exist_ok=True)
        serving_copy(load_checkpoint(str(Path(cv_run) / "checkpoints"), fold, compile=False)).save(
            str(out / "model.keras"))
        for name in ("model_card.json", "labels.json", "label_quality.json"):
            shutil.copy(source / name, out / name)
        shutil.copytree(source / "transform_fn", out / "transform_fn", dirs_exist_ok=True)
        card = json.loads((out / "model_card.json").read_text())
        card["model_id"] = f"{Path(cv_run).name}-fold{fold + 1}"
        (out / "model_card.json").write_text(json.dumps(card, indent=2))
        exports[fold] = str(out)
    return exports, fold_of


def stripped_mapping(retailer: str, folder: Path) -> Path:
    doc = yaml.safe_load(builtin_mapping_file(retailer).read_text())
    for section in ("category", "gender", "age_group"):
        doc.pop(section, None)
    path = folder / f"{retailer}-source-only.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(retailer: str, csv: Path, mapping: Path, shared: Path, output: Path, model: str | None) -> float:
    command = ["fashion-enrich", "run", "--output", str(output), "--progress-interval", "0",
               "--source", f"{retailer}={csv}:{mapping}", "--allowed-root", str(shared / retailer / "images")]
    if model:
        command += ["--multitask-model", model]
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def score(retailer: str, rows: list[dict], draft_path: Path) -> dict:
    """The drafted mapping against the hand mapping, value by value, weighted by products."""
    taxonomy = load_taxonomy()
    hand, draft = load_mapping(builtin_mapping_file(retailer)), load_mapping(draft_path)
    _, columns, gender_column, age_column = CATALOGS[retailer]
    values = Counter(" > ".join(r[c] for c in columns) for r in rows)
    bands = {"20+": Counter(), "5-19": Counter(), "<5": Counter()}
    wrong = []
    for value, n in values.items():
        band = "20+" if n >= 20 else "5-19" if n >= 5 else "<5"
        said = map_category(hand, taxonomy, (value,), None)
        drafted = draft.exact.get(normalize_key(value))
        bands[band]["products"] += n
        bands[band]["values"] += 1
        if drafted:
            bands[band]["mapped_values"] += 1
            bands[band]["mapped_products"] += n
        if said.node is None:
            bands[band]["out_of_scope_products"] += n
            bands[band]["out_of_scope_mapped"] += n if drafted else 0
            continue
        bands[band]["in_scope_products"] += n
        if drafted == said.node:
            bands[band]["exact"] += n
        relation = taxonomy.relation(said.node, drafted) if drafted else None
        if relation in (Relation.SAME, Relation.PARENT, Relation.CHILD):
            bands[band]["parent_child"] += n
        if relation is not None and relation != Relation.UNRELATED:
            bands[band]["related"] += n
        elif band == "20+":
            wrong.append((n, value, said.node, drafted))
    labels = {}
    for name, column, apply in (("gender", gender_column, "gender"), ("age_group", age_column or gender_column, "age")):
        if not column:
            continue
        for value, n in Counter(r[column] for r in rows).most_common():
            if apply == "gender":
                truth, got = map_gender(hand, (value,)), map_gender(draft, (value,))
            else:
                raw = ((value,), ()) if age_column else ((), (value,))
                truth, got = map_age_group(hand, *raw), map_age_group(draft, *raw)
            labels.setdefault(name, []).append({"value": value, "products": n, "hand": truth, "draft": got})
    return {"bands": {k: dict(v) for k, v in bands.items()}, "wrong_20plus": sorted(wrong, reverse=True),
            "labels": labels}


def report(retailer: str, result: dict) -> None:
    b = result["bands"]["20+"]
    scope = b.get("in_scope_products", 0)
    print(f"\n{retailer}: values with >= 20 products: {b.get('values', 0)} values, {b.get('products', 0):,} products "
          f"({scope:,} in scope)")
    print(f"  drafted node = hand node: {b.get('exact', 0) / scope:.1%} of in-scope products (target >= 85 %)")
    print(f"  drafted node = hand node, its parent or its child: {b.get('parent_child', 0) / scope:.1%} "
          f"(target >= 95 %); on its branch (any ancestor or descendant): {b.get('related', 0) / scope:.1%}")
    print(f"  out of scope in the hand mapping: {b.get('out_of_scope_products', 0):,} products, "
          f"{b.get('out_of_scope_mapped', 0):,} of them mapped by the draft")
    for band in ("5-19", "<5"):
        c = result["bands"][band]
        print(f"  values with {band} products: {c.get('values', 0)}, mapped {c.get('mapped_values', 0)}"
              + (f", related {c.get('related', 0) / c['in_scope_products']:.1%} of in-scope products"
                 if band == "5-19" and c.get("in_scope_products") else ""))
    for n, value, said, drafted in result["wrong_20plus"][:8]:
        print(f"    {n:>5} {value!r}: hand {said}, draft {drafted or 'unmapped'}")
    for name, rows in result["labels"].items():
        right = sum(1 for r in rows if r["hand"] == r["draft"])
        print(f"  {name} values: {right} of {len(rows)} as the hand mapping: "
              + ", ".join(f"{r['value']} ({r['products']}) {r['draft'] or 'unmapped'}"
                          + ("" if r["hand"] == r["draft"] else f" [hand {r['hand']}]") for r in rows))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cv-run", default=None, help="multi-task training output with checkpoints/ (out-of-fold)")
    parser.add_argument("--work", default=None, help="work folder (default: a new temp folder, kept)")
    parser.add_argument("--retailer", action="append", choices=sorted(CATALOGS), default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--unfinished", default=None, metavar="TRAIN_ARGS",
                        help="--cv-run is a training run cut short: its 'fashion-enrich train' arguments (to "
                             "recompute the folds); only --folds are scored, with the shipped export's calibration")
    parser.add_argument("--folds", default=None, help="with --unfinished: the finished folds, e.g. 1 or 1,2")
    parser.add_argument("--keep-runs", action="store_true",
                        help="with --work: reuse the runs an earlier call left there (draft and score again)")
    args = parser.parse_args(argv)
    shared = Path(args.data).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="fashion-enrich-onboarding-"))
    models, fold_of = {0: None}, {}
    if args.cv_run and args.unfinished:
        models, fold_of = unfinished_folds(args.cv_run, args.unfinished, work,
                                           [int(f) - 1 for f in (args.folds or "1").split(",")])
    elif args.cv_run:
        import numpy as np

        models = export_folds(args.cv_run, work)
        oof = np.load(Path(args.cv_run) / "cv_report" / "out_of_fold.npz")
        fold_of = dict(zip(oof["product"].tolist(), oof["fold"].tolist()))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          + ("out-of-fold models" if args.cv_run else "IN-SAMPLE (the shipped model was trained on these images)")
          + (f"; fold(s) {args.folds or 1} of a run cut short, over the products they held out"
             if args.unfinished else ""))
    results = {}
    for retailer in args.retailer or sorted(CATALOGS):
        csv_name, _, _, _ = CATALOGS[retailer]
        header, rows = _read(shared / csv_name)
        mapping = stripped_mapping(retailer, work)
        id_column = "id" if retailer == "myntra" else "image"
        outputs, seconds, scored = [], 0.0, []
        for fold, model in models.items():
            folder = work / retailer / f"fold{fold + 1}"
            rows_of_fold = [r for r in rows if fold_of.get(f"{retailer}/{r[id_column]}", 0) == fold]
            _write(folder / "dump.csv", header, rows_of_fold)
            scored.extend(rows_of_fold)
            if not (folder / "images").exists():
                (folder / "images").symlink_to(shared / retailer / "images")
            outputs.append(folder / "out")
            if not (args.keep_runs and (outputs[-1] / "manifest.json").exists()):
                seconds += run(retailer, folder / "dump.csv", mapping, shared, outputs[-1], model)
        draft = work / retailer / "draft.yaml"
        started = time.time()
        subprocess.run(["fashion-enrich", "mapping", "draft", *map(str, outputs), "--retailer", retailer,
                        "--mapping", str(mapping), "--out", str(draft)], check=True, stdout=subprocess.DEVNULL)
        drafting = time.time() - started
        audit = subprocess.run(["fashion-enrich", "mapping", "audit", *map(str, outputs), "--retailer", retailer,
                                "--mapping", str(builtin_mapping_file(retailer)), "--top", "12"],
                               check=True, capture_output=True, text=True).stdout
        results[retailer] = score(retailer, scored, draft)  # the products the runs scored
        results[retailer].update(run_seconds=seconds, draft_seconds=drafting, draft=str(draft))
        report(retailer, results[retailer])
        print(f"  runs {seconds:.0f} s, draft {drafting:.1f} s; drafted file {draft}")
        print("  audit against the hand mapping:\n    " + "\n    ".join(audit.strip().splitlines()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
