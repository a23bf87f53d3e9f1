"""``fashion-enrich inspect OUTPUT``: what one run wrote, read back from its Parquet and manifest.

Reads only the columns it needs, with pyarrow datasets over the Hive layout (partition
pruning on ``run_date``) and pyarrow's grouped aggregations, so a million-row output is
summarised in seconds. ``summarize`` returns plain data (tests compare it with pandas);
``format_summary`` renders it for the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.label_quality import COMPARED as VERDICTS  # a comparison was possible
from pipeline.summary import models_line

TABLES = ("images", "products", "dead_letter")
QUEUE_COLUMNS = ["product_id", "review_tier", "review_tier_name", "review_priority", "review_reasons", "title",
                 "primary_image_uri", *(f"{prefix}{f}{suffix}" for f in ("category", "gender", "age_group") for prefix,
                                        suffix in (("", ""), ("retailer_", ""), ("title_", ""),
                                                   ("", "_error_probability")))]
PARTITIONING = pa.schema([("run_date", pa.string()), ("retailer", pa.string())])


def read_manifest(output: str, run_date: str | None = None) -> dict:
    """The run's manifest: the latest run, or the latest run of ``run_date``."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.options import ConfigError

    def load(path: str) -> dict:
        try:
            with FileSystems.open(path) as fh:
                return json.loads(fh.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{output} does not look like a fashion-enrich output ({path}: {exc})") from exc

    if not run_date:
        return load(FileSystems.join(output, "manifest.json"))
    pattern = FileSystems.join(output, "manifests", f"run_date={run_date}", "*.json")
    found = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    if not found:
        raise ConfigError(f"no run for {run_date} under {output}/manifests")
    # The latest run of that date by when it finished (a date can be rerun on a later day).
    return max((load(path) for path in found), key=lambda m: (m.get("finished_at") or "", m["run_id"]))


def read_table(output: str, table: str, run_date: str, columns: list[str] | None = None) -> pa.Table:
    """One table's rows of ``run_date`` (partition columns included), or an empty table."""
    import pyarrow.dataset as ds
    from apache_beam.io.filesystems import FileSystems

    from pipeline.options import ConfigError
    from schemas.tables import TABLES as SPECS

    spec = SPECS[table]
    wanted = columns or [f.name for f in spec.schema]
    path = f"{output.rstrip('/')}/{table}"
    partition = f"{path}/run_date={run_date}"
    if not [m for r in FileSystems.match([f"{partition}/**.parquet"]) for m in r.metadata_list]:
        return pa.table({c: pa.array([], spec.schema.field(c).type if c in spec.schema.names else pa.string())
                         for c in wanted + ["retailer"]})  # the run wrote nothing to this table
    retailer = pa.schema([PARTITIONING.field("retailer")])
    schema = pa.schema(list(spec.schema) + list(retailer))  # the code's schema, not a guess from one file
    try:
        dataset = ds.dataset(partition, format="parquet", schema=schema,
                             partitioning=ds.partitioning(retailer, flavor="hive"))
        return dataset.to_table(columns=wanted + ["retailer"])
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read {partition}: {exc}") from exc


def _counts(table: pa.Table, *keys: str) -> list[dict]:
    if table.num_rows == 0:
        return []
    grouped = table.group_by(list(keys)).aggregate([([], "count_all")])
    return grouped.sort_by([("count_all", "descending")]).to_pylist()


def _nested(rows: list[dict], outer: str, inner: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        out[row[outer]][row[inner] if row[inner] is not None else "(none)"] = row["count_all"]
    return dict(out)


SUMMARY_PRODUCT_COLUMNS = ["category", "gender", "age_group", "colour", "category_agreement", "gender_agreement",
                           "age_group_agreement", "category_low_confidence", "category_score"]
AGREEMENT_FIELDS = ("category", "gender", "age_group")  # model vs retailer, per product


def summarize(output: str, run_date: str | None = None, *, examples: int = 2,
              manifest: dict | None = None, products: pa.Table | None = None) -> dict:
    """The run's figures. ``manifest`` and ``products``: the run's manifest and products table
    (at least ``SUMMARY_PRODUCT_COLUMNS`` and ``retailer``) when the caller has read them already."""
    manifest = manifest or read_manifest(output, run_date)
    run_date = manifest["run_date"]
    images = read_table(output, "images", run_date, ["category_rule", "raw_category"])
    if products is None:
        products = read_table(output, "products", run_date, SUMMARY_PRODUCT_COLUMNS)
    dead = read_table(output, "dead_letter", run_date, ["stage", "reason", "message", "source_file",
                                                         "source_line", "image_uri"])
    rows = {name: {r["retailer"]: r["count_all"] for r in _counts(t, "retailer")}
            for name, t in (("images", images), ("products", products), ("dead_letter", dead))}

    disagreement: dict[str, dict[str, float | None]] = defaultdict(dict)
    for field in AGREEMENT_FIELDS:
        for retailer, verdicts in _nested(_counts(products, "retailer", f"{field}_agreement"), "retailer",
                                          f"{field}_agreement").items():
            compared = sum(n for v, n in verdicts.items() if v in VERDICTS)
            disagreement[retailer][field] = verdicts.get("DISAGREE", 0) / compared if compared else None
    low = {r["retailer"]: r["count_all"] for r in _counts(
        products.filter(pc.equal(products["category_low_confidence"], True)), "retailer")}

    reasons = []
    for row in _counts(dead, "retailer", "stage", "reason"):
        same = pc.and_(pc.and_(pc.equal(dead["retailer"], row["retailer"]), pc.equal(dead["stage"], row["stage"])),
                       pc.equal(dead["reason"], row["reason"]))
        match = dead.filter(same).slice(0, examples)
        reasons.append({**{k: row[k] for k in ("retailer", "stage", "reason")}, "count": row["count_all"],
                        "examples": [{k: e[k] for k in ("message", "source_file", "source_line", "image_uri")}
                                     for e in match.to_pylist()]})

    review = read_table(output, "review", run_date, QUEUE_COLUMNS)
    tiers = _nested(_counts(review, "retailer", "review_tier_name"), "retailer", "review_tier_name")
    first = queue_order(review).slice(0, examples * 5).to_pylist()

    unmapped_rows = images.filter(pc.equal(images["category_rule"], "UNMAPPED"))
    unmapped: dict[str, dict[str, int]] = defaultdict(dict)
    if unmapped_rows.num_rows:
        joined = pc.binary_join(pc.fill_null(unmapped_rows["raw_category"], pa.scalar([], pa.list_(pa.string()))),
                                " > ")
        table = pa.table({"retailer": unmapped_rows["retailer"], "value": joined})
        for row in _counts(table, "retailer", "value"):  # most frequent first, within each retailer
            if len(unmapped[row["retailer"]]) < 10:
                unmapped[row["retailer"]][row["value"]] = row["count_all"]

    started = dt.datetime.fromisoformat(manifest["started_at"])
    finished = dt.datetime.fromisoformat(manifest["finished_at"]) if manifest.get("finished_at") else None
    seconds = (finished - started).total_seconds() if finished else None
    image_count = sum(manifest["counts"]["images"].values())
    return {
        "run_id": manifest["run_id"], "run_date": run_date, "output": output,
        "seconds": seconds, "images_per_second": image_count / seconds if seconds else None,
        "records_in": manifest["counts"]["records_in"], "reconciled": manifest["reconciled"],
        "models": {t: m["model_id"] for t, m in (manifest.get("models") or {}).items()},
        "rows": rows,
        "category_distribution": _nested(_counts(products, "retailer", "category"), "retailer", "category"),
        "gender_distribution": _nested(_counts(products, "retailer", "gender"), "retailer", "gender"),
        "age_group_distribution": _nested(_counts(products, "retailer", "age_group"), "retailer", "age_group"),
        "colour_distribution": _nested(_counts(products, "retailer", "colour"), "retailer", "colour"),
        "disagreement": dict(disagreement),
        "low_confidence_share": {r: low.get(r, 0) / n for r, n in rows["products"].items()},
        "review": {"rows": review.num_rows, "share": review.num_rows / max(sum(rows["products"].values()), 1),
                   "tiers": tiers, "first": first},
        "dead_letter_reasons": reasons,
        "unmapped_categories": dict(unmapped),
    }


def queue_order(review: pa.Table) -> pa.Table:
    """Review rows (any retailers) in the queue's order: by tier, then the highest priority first."""
    return review.sort_by([("review_tier", "ascending"), ("review_priority", "descending"),
                           ("product_id", "ascending")])


def disputed(row: dict) -> list[str]:
    """'field: retailer -> model[, title T] (P wrong)' for each field of a review row whose labels
    differ and that has an estimate."""
    return [f"{f}: {row[f'retailer_{f}'] or '-'} -> {row[f] or '-'}"
            + (f", title {row[f'title_{f}']}" if row.get(f"title_{f}") else "")
            + f" ({row[f'{f}_error_probability']:.2f})"
            for f in ("category", "gender", "age_group") if row.get(f"{f}_error_probability") is not None
            and row[f"retailer_{f}"] != row[f]]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_summary(s: dict, *, top: int = 8) -> str:
    lines = [f"run {s['run_id']} (run_date {s['run_date']}) in {s['output']}",
             f"reconciled: {'yes' if s['reconciled'] else 'NO'}; "
             + (f"{s['seconds']:.0f} s, {s['images_per_second']:.1f} images/s" if s["seconds"] else "duration unknown"),
             "models: " + (models_line(s["models"]) or "none"), "",
             f"{'retailer':<14}{'records in':>11}{'images':>9}{'products':>10}{'dead letters':>14}"
             f"{'cat. disagree':>15}{'gender disagree':>17}{'age disagree':>14}{'low conf.':>11}"]
    for retailer, records in s["records_in"].items():
        d = s["disagreement"].get(retailer, {})
        lines.append(f"{retailer:<14}{records:>11}{s['rows']['images'].get(retailer, 0):>9}"
                     f"{s['rows']['products'].get(retailer, 0):>10}{s['rows']['dead_letter'].get(retailer, 0):>14}"
                     f"{_share(d.get('category')):>15}{_share(d.get('gender')):>17}{_share(d.get('age_group')):>14}"
                     f"{_share(s['low_confidence_share'].get(retailer)):>11}")
    for title, key in (("categories (model, per product)", "category_distribution"),
                       ("genders (model, per product)", "gender_distribution"),
                       ("age groups (model, per product)", "age_group_distribution"),
                       ("colours (per product)", "colour_distribution")):
        if all(value == "(none)" for counts in s[key].values() for value in counts):
            continue  # a task no model served (and, for colour, no heuristic either)
        lines += ["", title + ":"]
        for retailer, counts in s[key].items():
            shown = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            lines.append(f"  {retailer}: " + ", ".join(f"{k} {v}" for k, v in shown)
                         + (" ..." if len(counts) > top else ""))
    review = s["review"]
    lines += ["", f"review queue: {review['rows']} products ({review['share']:.1%} of the products)"]
    for retailer, tiers in review["tiers"].items():
        lines.append(f"  {retailer}: " + ", ".join(f"{name} {n}" for name, n in tiers.items()))
    if review["first"]:
        lines.append("  first in the queue (tier, priority, product: field retailer -> model[, title] (P wrong)):")
    for row in review["first"]:
        lines.append(f"    {row['review_tier']} {row['review_priority']:.2f} {row['retailer']} {row['product_id']}: "
                     + ("; ".join(disputed(row)) or ", ".join(row["review_reasons"])))
    if s["dead_letter_reasons"]:
        lines += ["", "dead letters:"]
        for reason in s["dead_letter_reasons"]:
            lines.append(f"  {reason['retailer']} {reason['stage']}/{reason['reason']}: {reason['count']}")
            for e in reason["examples"]:
                where = f"{e['source_file']}:{e['source_line']}" if e["source_line"] is not None else e["source_file"]
                lines.append(f"      e.g. {where} {e['image_uri'] or ''} {(e['message'] or '')[:100]}".rstrip())
    if s["unmapped_categories"]:
        lines += ["", "unmapped retailer categories:"]
        for retailer, values in s["unmapped_categories"].items():
            lines.append(f"  {retailer}: " + ", ".join(f"{v!r} {n}" for v, n in values.items()))
    return "\n".join(lines)
