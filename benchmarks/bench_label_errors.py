"""Label-error benchmark: known, seeded errors injected into a copy of ``../shared/data``'s
retailer labels, the real pipeline run over it, and the review queue scored against them.
Prints figures; asserts nothing.

Injected (each share of the products that can take it, seeded):

* Myntra **category path swaps** (``--category-share``, 6 %): the product's
  ``masterCategory > subCategory > articleType`` replaced by another path of the catalog whose
  node is unrelated to the original's in the hierarchy (neither equal, ancestor nor descendant),
  half **near** (same ``masterCategory``) and half **far** (another one);
* Myntra **gender flips** (``--gender-share``, 4 %): Men <-> Women, Boys <-> Girls;
* Clothing **amateur-photo relabels** (``--amateur-share``, 6 %): the photo's label replaced by
  another label whose node is unrelated to the original's.

The copy holds new ``styles.csv`` / ``images.csv`` files beside links to the shared image folders
(read through ``--allowed-root``); the shared data is never written.

**Out-of-fold models.** The shipped default model was trained on these images, so it would judge
them in-sample. With ``--cv-run RUN`` (a ``fashion-enrich train --task multitask`` output that kept
its ``checkpoints/``), each fold's model is exported with the temperature and label quality of the
other folds' held-out predictions (``models.fold_export``), and every product is scored by
the model of the fold that held it out: one ``fashion-enrich run`` per fold, over that fold's
products. Without ``--cv-run`` one run scores everything with the shipped models (in-sample:
optimistic, said in the output).

Per field: precision and recall of the flags (a ``<FIELD>_DISAGREE`` or ``<FIELD>_CONFUSABLE``
reason), recall per kind of error; the queue: its share of the products, rows per tier, and the
share of real errors in its first 50 / 100 / 200 rows (the queue's own order: tier, then
priority); the age-group head against the retailer's own age labels (KIDS recall and precision,
macro F1).

    python benchmarks/bench_label_errors.py --cv-run mt-oof            # out-of-fold models
    python benchmarks/bench_label_errors.py --cv-run mt-oof --run-arg=--no-title-evidence  # the images alone
    python benchmarks/bench_label_errors.py                              # the shipped models (in-sample)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.label_quality import FLAGGABLE  # noqa: E402
from pipeline.taxonomy import map_category  # noqa: E402
from schemas.mapping import builtin_mapping_file, load_mapping  # noqa: E402
from schemas.taxonomy import Relation, load_taxonomy  # noqa: E402

MYNTRA_PATH = ("masterCategory", "subCategory", "articleType")
GENDER_FLIP = {"Men": "Women", "Women": "Men", "Boys": "Girls", "Girls": "Boys"}
FIELDS = ("category", "gender")


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or ()), list(reader)


def _write(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _unrelated(taxonomy, a: str, b: str) -> bool:
    return taxonomy.relation(a, b) == Relation.UNRELATED


def inject(myntra: list[dict], clothing: list[dict], *, seed: int, category_share: float, gender_share: float,
           amateur_share: float) -> dict[tuple[str, str], dict[str, str]]:
    """Injects errors into the rows in place; returns (retailer, product id) -> {field: kind}."""
    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy()
    maps = {r: load_mapping(builtin_mapping_file(r), taxonomy=taxonomy) for r in ("myntra", "clothing")}

    def node(retailer: str, values: tuple[str, ...]) -> str | None:  # as the generic source joins a path
        return map_category(maps[retailer], taxonomy, (" > ".join(v for v in values if v),), None).node

    truth: dict[tuple[str, str], dict[str, str]] = {}
    nodes = [node("myntra", tuple(r[c] for c in MYNTRA_PATH)) for r in myntra]
    paths = sorted({(tuple(r[c] for c in MYNTRA_PATH), n) for r, n in zip(myntra, nodes) if n})
    eligible = [i for i, n in enumerate(nodes) if n]
    for i in rng.choice(eligible, int(category_share * len(eligible)), replace=False):
        row, original = myntra[i], nodes[i]
        near = bool(rng.random() < 0.5)
        def candidates(same_master: bool, original=original, master=row["masterCategory"]):
            return [p for p, n in paths if _unrelated(taxonomy, original, n) and (p[0] == master) == same_master]

        choices = candidates(near)
        if not choices:  # nothing near (or far) enough: the other kind
            near = not near
            choices = candidates(near)
        row.update(zip(MYNTRA_PATH, choices[rng.integers(len(choices))]))
        truth.setdefault(("myntra", row["id"]), {})["category"] = "near" if near else "far"
    flippable = [i for i, r in enumerate(myntra) if r["gender"] in GENDER_FLIP]
    for i in rng.choice(flippable, int(gender_share * len(flippable)), replace=False):
        myntra[i]["gender"] = GENDER_FLIP[myntra[i]["gender"]]
        truth.setdefault(("myntra", myntra[i]["id"]), {})["gender"] = "flip"
    labels = sorted({r["label"] for r in clothing if node("clothing", (r["label"],))})
    eligible = [i for i, r in enumerate(clothing) if r["label"] in labels]
    for i in rng.choice(eligible, int(amateur_share * len(eligible)), replace=False):
        original = node("clothing", (clothing[i]["label"],))
        choices = [label for label in labels if _unrelated(taxonomy, original, node("clothing", (label,)))]
        clothing[i]["label"] = choices[rng.integers(len(choices))]
        truth.setdefault(("clothing", clothing[i]["image"]), {})["category"] = "amateur"
    return truth


def export_folds(cv_run: str, work: Path) -> dict[int, str]:
    """fold -> the folder of its export (models.fold_export)."""
    from models.fold_export import export_fold

    folders = {}
    for fold in sorted(set(np.load(Path(cv_run) / "cv_report" / "out_of_fold.npz")["fold"].tolist())):
        folders[fold] = str(work / "models" / f"fold{fold + 1}")
        export_fold(cv_run, fold, folders[fold])
    return folders


def _at_recall(score: np.ndarray, truth: np.ndarray, recall: float) -> dict:
    """Precision of the highest-scored rows that reach ``recall`` of ``truth``, and the score there
    (the --review-threshold that would give it); None where no score reaches it."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(truth[order])
    reached = np.nonzero((hits >= recall * truth.sum()) & (score[order] >= 0))[0]
    if not truth.sum() or not len(reached):
        return {"precision": None, "threshold": None}
    i = reached[0]
    return {"precision": float(hits[i] / (i + 1)), "threshold": float(score[order][i])}


def run_pipeline(folder: Path, shared: Path, output: Path, model: str | None, extra: list[str]) -> float:
    command = ["fashion-enrich", "run", "--output", str(output), "--progress-interval", "0",
               "--source", f"myntra={folder / 'myntra' / 'styles.csv'}",
               "--source", f"clothing={folder / 'clothing' / 'images.csv'}",
               "--allowed-root", str(shared / "myntra" / "images"),
               "--allowed-root", str(shared / "clothing" / "images")]
    if model:
        command += ["--multitask-model", model]
    command += extra
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def _frame(outputs: list[Path], table: str) -> pd.DataFrame:
    frames = [pd.read_parquet(out / table) for out in outputs if (out / table).exists()]
    frame = pd.concat(frames, ignore_index=True)
    frame["retailer"] = frame["retailer"].astype(str)
    return frame


def evaluate(outputs: list[Path], truth: dict[tuple[str, str], dict[str, str]]) -> dict:
    products, review = _frame(outputs, "products"), _frame(outputs, "review")
    key = list(zip(products["retailer"], products["product_id"]))
    reasons = products["review_reasons"].map(lambda r: set(r) if r is not None else set())
    result = {"products": len(products), "queue": len(review), "queue_share": len(review) / len(products)}
    for name in FIELDS:
        injected = np.array([name in truth.get(k, {}) for k in key])
        flagged = reasons.map(lambda r, n=name.upper(): f"{n}_DISAGREE" in r or f"{n}_CONFUSABLE" in r).to_numpy()
        hits = flagged & injected
        kinds = np.array([truth.get(k, {}).get(name, "") for k in key])
        flaggable = products[f"{name}_agreement"].isin(FLAGGABLE).to_numpy()
        wrong = products[f"{name}_error_probability"].fillna(-1).to_numpy()
        result[name] = {"injected": int(injected.sum()), "flagged": int(flagged.sum()),
                        "at_recall_0.8": _at_recall(np.where(flaggable, wrong, -1.0), injected, 0.8),
                        "precision": hits.sum() / max(flagged.sum(), 1), "recall": hits.sum() / max(injected.sum(), 1),
                        "recall_by_kind": {kind: float((flagged & (kinds == kind)).sum() / (kinds == kind).sum())
                                           for kind in sorted(set(kinds) - {""})},
                        "verdicts_of_injected": products.loc[injected, f"{name}_agreement"].value_counts().to_dict(),
                        "mean_error_probability_flagged": float(
                            products.loc[flagged, f"{name}_error_probability"].mean())}
    review = review.sort_values(["review_tier", "review_priority", "product_id"], ascending=[True, False, True])
    real = np.array([bool(truth.get(k)) for k in zip(review["retailer"], review["product_id"])])
    result["top"] = {n: float(real[:n].mean()) if len(real) >= n else None for n in (50, 100, 200)}
    result["tiers"] = {name: {"rows": int((review["review_tier_name"] == name).sum()),
                              "real_errors": float(real[(review["review_tier_name"] == name).to_numpy()].mean())}
                       for name in review["review_tier_name"].unique()}
    result["injected_products"] = sum(1 for k in key if truth.get(k))
    ages = products.dropna(subset=["age_group", "retailer_age_group"])
    kids = (ages["retailer_age_group"] == "KIDS").to_numpy()
    result["age_group"] = {"kids": int(kids.sum()), **_binary(kids, (ages["age_group"] == "KIDS").to_numpy()),
                           "flags": int(reasons.map(lambda r: "AGE_GROUP_DISAGREE" in r).sum())}
    clean = ~np.array([bool(truth.get(k)) for k in key])
    for name in FIELDS:
        compared = products[clean & products[f"retailer_{name}"].notna() & products[name].notna()]
        result[name]["model_accuracy_on_clean"] = float((compared[name] == compared[f"retailer_{name}"]).mean())
    return result


def age_group_cv(cv_run: str) -> dict:
    """KIDS against ADULT on the run's grouped cross-validation (per image): the argmax, and the
    decision threshold learned from the other folds' held-out predictions (models.label_quality)."""
    from models.label_quality import from_out_of_fold
    from pipeline.temperature import apply_temperature

    oof = dict(np.load(Path(cv_run) / "cv_report" / "out_of_fold.npz"))
    with open(Path(cv_run) / "labels.json", encoding="utf-8") as fh:
        classes = {task: tuple(names) for task, names in json.load(fh).items()}
    kids = classes["age_group"].index("KIDS")
    truth, argmax, decided = [], [], []
    for fold in sorted(set(oof["fold"].tolist())):
        quality, temperatures = from_out_of_fold(oof, classes, load_taxonomy(), rows=oof["fold"] != fold,
                                                 learned_from="")
        rows = (oof["fold"] == fold) & (oof["age_group_label"] >= 0)
        probs = apply_temperature(oof["age_group_scores"][rows], temperatures["age_group"])
        threshold = dict(quality["age_group"].decision).get("KIDS", 0.5)
        truth.append(oof["age_group_label"][rows] == kids)
        argmax.append(probs.argmax(axis=1) == kids)
        decided.append(probs[:, kids] >= threshold)
    truth = np.concatenate(truth)
    return {"images": int(len(truth)), "kids": int(truth.sum()),
            **{name: _binary(truth, np.concatenate(said)) for name, said in (("argmax", argmax), ("learned", decided))}}


def _binary(truth: np.ndarray, said: np.ndarray) -> dict:
    def f1(p, r):
        return 2 * p * r / (p + r) if p + r else 0.0

    recall, precision = (truth & said).sum() / max(truth.sum(), 1), (truth & said).sum() / max(said.sum(), 1)
    adult_recall, adult_precision = (~truth & ~said).sum() / max((~truth).sum(), 1), \
        (~truth & ~said).sum() / max((~said).sum(), 1)
    return {"kids_recall": float(recall), "kids_precision": float(precision), "adult_precision": float(adult_precision),
            "macro_f1": float((f1(precision, recall) + f1(adult_precision, adult_recall)) / 2)}


def report(result: dict, *, seconds: float, images: int, in_sample: bool) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; "
          f"{'IN-SAMPLE (shipped models trained on these images)' if in_sample else 'out-of-fold models'}")
    print(f"products {result['products']}, with injected errors {result['injected_products']}; "
          f"pipeline {seconds:.0f} s for {images} images ({images / seconds:.1f} img/s end to end)")
    print(f"{'field':<10}{'injected':>9}{'flagged':>9}{'precision':>11}{'recall':>8}  {'recall by kind':<34}"
          f"model acc. (clean)")
    for name in FIELDS:
        r = result[name]
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["recall_by_kind"].items())
        print(f"{name:<10}{r['injected']:>9}{r['flagged']:>9}{r['precision']:>11.3f}{r['recall']:>8.3f}  {kinds:<34}"
              f"{r['model_accuracy_on_clean']:.3f}")
        print(f"{'':<10}verdicts of the injected: {r['verdicts_of_injected']}; "
              f"mean estimated error probability of the flagged: {r['mean_error_probability_flagged']:.3f}")
        at = r["at_recall_0.8"]
        print(f"{'':<10}at recall 0.80 (--review-threshold {name}={at['threshold'] or 0:.3f}): precision "
              + ("-" if at["precision"] is None else f"{at['precision']:.3f}"))
    top = ", ".join(f"top {n}: {'-' if v is None else f'{v:.2f}'}" for n, v in result["top"].items())
    print(f"queue: {result['queue']} products ({result['queue_share']:.1%}); real errors {top}")
    for name, tier in result["tiers"].items():
        print(f"  {name}: {tier['rows']} rows, {tier['real_errors']:.2f} real errors")
    a = result["age_group"]
    print(f"age group (products, against the retailer's labels): KIDS {a['kids']}: recall {a['kids_recall']:.3f}, "
          f"precision {a['kids_precision']:.3f}; ADULT precision {a['adult_precision']:.3f}; macro F1 "
          f"{a['macro_f1']:.3f}; AGE_GROUP_DISAGREE flags {a['flags']}")
    cv = result.get("age_group_cv")
    if cv:
        for name, label in (("argmax", "argmax"), ("learned", "learned KIDS threshold")):
            m = cv[name]
            print(f"age group (grouped CV, {cv['images']} images, {cv['kids']} KIDS), {label}: KIDS recall "
                  f"{m['kids_recall']:.3f}, precision {m['kids_precision']:.3f}; ADULT precision "
                  f"{m['adult_precision']:.3f}; macro F1 {m['macro_f1']:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cv-run", default=None, help="multi-task training output with checkpoints/ (out-of-fold)")
    parser.add_argument("--work", default=None, help="work folder (default: a new temp folder, kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--category-share", type=float, default=0.06)
    parser.add_argument("--gender-share", type=float, default=0.04)
    parser.add_argument("--amateur-share", type=float, default=0.06)
    parser.add_argument("--sample", type=int, default=0, help="only the first N rows of each catalog (a quick run)")
    parser.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                        help="passed to fashion-enrich run, e.g. --run-arg=--no-title-evidence; repeatable")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    shared = Path(args.data).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="fashion-enrich-label-errors-"))
    header_m, myntra = _read(shared / "myntra" / "styles.csv")
    header_c, clothing = _read(shared / "clothing" / "images.csv")
    if args.sample:
        myntra, clothing = myntra[:args.sample], clothing[:args.sample]
    truth = inject(myntra, clothing, seed=args.seed, category_share=args.category_share,
                   gender_share=args.gender_share, amateur_share=args.amateur_share)
    if args.cv_run:
        models = export_folds(args.cv_run, work)
        oof = np.load(Path(args.cv_run) / "cv_report" / "out_of_fold.npz")
        fold_of = dict(zip(oof["product"].tolist(), oof["fold"].tolist()))
    else:
        models, fold_of = {0: None}, {}
    outputs, seconds = [], 0.0
    for fold, model in models.items():
        folder = work / f"fold{fold + 1}"
        _write(folder / "myntra" / "styles.csv", header_m,
               [r for r in myntra if fold_of.get(f"myntra/{r['id']}", 0) == fold])
        _write(folder / "clothing" / "images.csv", header_c,
               [r for r in clothing if fold_of.get(f"clothing/{r['image']}", 0) == fold])
        for retailer in ("myntra", "clothing"):
            link = folder / retailer / "images"
            if not link.exists():
                link.symlink_to(shared / retailer / "images")
        outputs.append(work / f"out{fold + 1}")
        seconds += run_pipeline(folder, shared, outputs[-1], model, args.run_arg)
        print(f"fold {fold + 1}: {outputs[-1]}", flush=True)
    result = evaluate(outputs, truth)
    if args.cv_run:
        result["age_group_cv"] = age_group_cv(args.cv_run)
    images = len(_frame(outputs, "images"))
    print(f"fashion-enrich run {' '.join(args.run_arg)}".rstrip())
    report(result, seconds=seconds, images=images, in_sample=not args.cv_run)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
