"""Run manifest: counts computed from the data itself, and the reconciliation check.

Every stage's output is turned into small count keys (``("images", retailer)``,
``("dead_letter", retailer, stage, reason)``...) and counted with Beam, so the manifest is
derived from what was actually written, not from what code meant to write. The central
check: records read from the sources (image records + read errors) equal images written +
later dead letters + duplicates, and the products' image counts add up to the images.
Incremental runs: every image row is reused, rescored or new (their counts add up to the
images, reused ones included), and vanished products are counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import apache_beam as beam

from pipeline.product_rules import colour_source
from pipeline.records import CategoryRule, DeadLetter, Duplicate, FileStats, ImageRecord, Stage, WrittenFile

TOP_UNMAPPED = 50


def source_events(item) -> list[tuple]:
    """Keys for everything a source emitted (image records and read errors)."""
    return [("records_in", item.retailer)]


def image_events(record: ImageRecord) -> list[tuple]:
    keys = [("images", record.retailer), ("category_rule", record.retailer, record.category_rule)]
    if record.category_rule in (CategoryRule.UNMAPPED.value, CategoryRule.OUT_OF_SCOPE.value):
        keys.append((record.category_rule.lower(), record.retailer, record.category_match or ""))
    if record.gender is None:
        keys.append(("unmapped_gender", record.retailer, " | ".join(record.raw_gender) or "<missing>"))
    if record.age_group is None:
        keys.append(("unmapped_age_group", record.retailer, " | ".join(record.raw_age_group) or "<missing>"))
    if record.cache_hit:
        keys.append(("cache_hits", record.retailer))
    keys.append((f"images_{(record.reuse_status or 'NEW').lower()}", record.retailer))
    return keys


def vanished_events(product_key: tuple[str, str]) -> list[tuple]:
    """A product of the previous run that is not in this run's dump."""
    return [("vanished_products", product_key[0])]


def previous_events(read: tuple[str, str]) -> list[tuple]:
    """One stored image row read from the previous run: (retailer, its run_date)."""
    return [("previous_rows", read[0], read[1])]


def unreadable_events(unreadable: tuple[str, str, str]) -> list[tuple]:
    """A previous run's images file that could not be read: (retailer, path, reason)."""
    return [("previous_unreadable", *unreadable)]


def product_events(product) -> list[tuple]:
    # One key per image the product was built from: their count must equal the images written.
    keys = [("products", product.retailer)] + [("product_images", product.retailer)] * product.image_count
    if product.category_agreement:
        keys.append(("category_agreement", product.retailer, product.category_agreement))
    if product.gender_agreement:
        keys.append(("gender_agreement", product.retailer, product.gender_agreement))
    if product.age_group_agreement:
        keys.append(("age_group_agreement", product.retailer, product.age_group_agreement))
    if product.category_low_confidence:
        keys.append(("category_low_confidence", product.retailer))
    keys += [("review_reason", product.retailer, reason) for reason in product.review_reasons]
    if product.needs_review:
        keys += [("needs_review", product.retailer), ("review_tier", product.retailer, product.review_tier_name)]
    if product.duplicate_group:
        keys.append(("near_duplicate_products", product.retailer))
    return keys


def dead_letter_events(item: DeadLetter) -> list[tuple]:
    return [("dead_letter", item.retailer, item.stage, item.reason)]


def duplicate_events(item: Duplicate) -> list[tuple]:
    return [("duplicates", item.retailer)]


def _ones(item, fn) -> list[tuple[tuple, int]]:
    return [(key, 1) for key in fn(item)]


class CountEvents(beam.PTransform):
    """{name: (pcoll, key_fn)} -> one element: the list of (key, count) over all of them.
    ``counted``: lists of (key, count) already counted elsewhere (carried products), added in."""

    def __init__(self, sources: dict[str, tuple[beam.PCollection, object]], *, counted: beam.PCollection | None = None):
        super().__init__()
        self._sources, self._counted = sources, counted

    def expand(self, pbegin):
        keyed = [pcoll | f"Keys{name}" >> beam.FlatMap(_ones, fn) for name, (pcoll, fn) in self._sources.items()]
        if self._counted is not None:
            keyed.append(self._counted | "Counted" >> beam.FlatMap(lambda pairs: pairs))
        return (
            keyed
            | "Flatten" >> beam.Flatten()
            | "Count" >> beam.CombinePerKey(sum)
            | "Gather" >> beam.combiners.ToList()
        )


def _per_retailer(counter: dict[tuple, int], kind: str) -> dict[str, dict[str, int]]:
    """{retailer: {value: count}} for keys shaped (kind, retailer, value)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for key, n in sorted(counter.items()):
        if key[0] == kind:
            out[key[1]][key[2]] = n
    return dict(out)


def _unreadable(counter: dict[tuple, int]) -> list[dict]:
    """[{retailer, path, reason}] of the previous run's files that could not be read."""
    return [{"retailer": key[1], "path": key[2], "reason": key[3]}
            for key in sorted(counter) if key[0] == "previous_unreadable"]


def _top(counter: dict[tuple, int], kind: str) -> dict[str, dict[str, int]]:
    per_retailer: dict[str, Counter] = defaultdict(Counter)
    for key, n in counter.items():
        if key[0] == kind:
            per_retailer[key[1]][key[2]] += n
    return {r: dict(c.most_common(TOP_UNMAPPED)) for r, c in sorted(per_retailer.items())}


def build_manifest(*, config, counts: list[tuple[tuple, int]], file_stats: list[FileStats],
                   written: list[WrittenFile], finished_at: str, versions: dict[str, str]) -> dict:
    """The manifest dict for one run (pure: tests call it directly)."""
    counter = Counter()
    for key, n in counts:  # a sharded run's passes each count their own events
        counter[tuple(key)] += n

    def per_retailer(kind: str) -> dict[str, int]:
        return {r: counter.get((kind, r), 0) for r in config.retailers}

    records_in, images, duplicates = per_retailer("records_in"), per_retailer("images"), per_retailer("duplicates")
    product_images = per_retailer("product_images")
    reuse = {kind: per_retailer(f"images_{kind}") for kind in ("reused", "rescored", "new")}
    dead = Counter()
    dead_by_reason: dict[str, Counter] = {r: Counter() for r in config.retailers}
    dead_by_stage: dict[str, Counter] = {r: Counter() for r in config.retailers}
    read_errors = Counter()
    for key, n in counter.items():
        if key[0] == "dead_letter":
            _, retailer, stage, reason = key
            dead[retailer] += n
            dead_by_reason.setdefault(retailer, Counter())[reason] += n
            dead_by_stage.setdefault(retailer, Counter())[stage] += n
            if stage == Stage.READ.value:
                read_errors[retailer] += n
    reconciliation = {
        r: {
            "records_in": records_in[r],
            "images": images[r],
            "dead_letter": dead[r],
            "duplicates": duplicates[r],
            "product_images": product_images[r],
            **{kind: reuse[kind][r] for kind in reuse},
            "ok": (records_in[r] == images[r] + dead[r] + duplicates[r] and product_images[r] == images[r]
                   and sum(reuse[kind][r] for kind in reuse) == images[r]),
        }
        for r in config.retailers
    }
    files_by_retailer: dict[str, list[dict]] = defaultdict(list)
    for stats in sorted(file_stats, key=lambda s: s.source_file):
        files_by_retailer[stats.retailer].append({
            "file": stats.source_file, "units": stats.units, "blank": stats.blank, "products": stats.products,
            "records": stats.records, "errors": stats.errors, "aborted": stats.aborted})
    tables: dict[str, dict] = defaultdict(lambda: {"rows": 0, "files": []})
    for f in sorted(written, key=lambda w: (w.table, w.partition, w.shard)):
        tables[f.table]["rows"] += f.rows
        tables[f.table]["files"].append({"partition": f.partition, "path": f.path, "rows": f.rows})
    return {
        "run_id": config.run_id,
        "run_date": config.run_date,
        "started_at": config.started_at,
        "finished_at": finished_at,
        "versions": versions,
        "models": {m.task: {"model_id": m.model_id, "path": m.path, "head": m.head, "image_size": m.image_size,
                            "temperature": m.temperature,
                            "classes": list(m.classes)} for m in config.models},
        "colour_source": colour_source([m.task for m in config.models]),
        "engine": getattr(config, "engine", None),
        "output": config.output,
        "previous": {"output": config.previous, "partitions": _per_retailer(counter, "previous_rows"),
                     "unreadable": _unreadable(counter)}
        if getattr(config, "previous", None) else None,
        "sources": [
            {"retailer": s.retailer, "pattern": s.pattern, "mapping": s.mapping.path,
             "files": files_by_retailer.get(s.retailer, [])}
            for s in config.sources
        ],
        "counts": {
            "records_in": records_in,
            "read_errors": {r: read_errors[r] for r in config.retailers},
            "duplicates": duplicates,
            "images": images,
            "dead_letter": {r: dead[r] for r in config.retailers},
            "dead_letter_by_reason": {r: dict(c.most_common()) for r, c in dead_by_reason.items()},
            "dead_letter_by_stage": {r: dict(c.most_common()) for r, c in dead_by_stage.items()},
            "cache_hits": per_retailer("cache_hits"),
            **{f"images_{kind}": reuse[kind] for kind in reuse},
            "vanished_products": per_retailer("vanished_products"),
            "products": per_retailer("products"),
            "category_agreement": _per_retailer(counter, "category_agreement"),
            "gender_agreement": _per_retailer(counter, "gender_agreement"),
            "age_group_agreement": _per_retailer(counter, "age_group_agreement"),
            "category_low_confidence": per_retailer("category_low_confidence"),
            "category_rule": _per_retailer(counter, "category_rule"),
            "needs_review": per_retailer("needs_review"),  # = rows of the review table
            "near_duplicate_products": per_retailer("near_duplicate_products"),
            "review_reasons": _per_retailer(counter, "review_reason"),
            "review_tiers": _per_retailer(counter, "review_tier"),
        },
        "unmapped": {
            "category": _top(counter, "unmapped"),
            "out_of_scope": _top(counter, "out_of_scope"),
            "gender": _top(counter, "unmapped_gender"),
            "age_group": _top(counter, "unmapped_age_group"),
        },
        "tables": dict(tables),
        "reconciliation": reconciliation,
        "reconciled": all(v["ok"] for v in reconciliation.values()),
    }
