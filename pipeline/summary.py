"""The one-screen summary printed at the end of a run, computed from its manifest alone."""

from __future__ import annotations

from collections import Counter

from pipeline.product_rules import ReviewTier

STAGES = ("read", "fetch", "decode", "inference")


def dead_letter_share(manifest: dict) -> float:
    """Dead-lettered records over records in (duplicates are not failures)."""
    counts = manifest["counts"]
    records = sum(counts["records_in"].values())
    return sum(counts["dead_letter"].values()) / records if records else 0.0


def top_reasons(manifest: dict, n: int = 5) -> list[tuple[str, int]]:
    """The most frequent dead-letter reasons over all retailers."""
    total: Counter[str] = Counter()
    for by_reason in manifest["counts"]["dead_letter_by_reason"].values():
        total.update(by_reason)
    return total.most_common(n)


def format_summary(manifest: dict, seconds: float) -> str:
    counts = manifest["counts"]
    stages = counts["dead_letter_by_stage"]
    lines = [f"run {manifest['run_id']} -> {manifest['output']}  ({seconds:.1f} s)",
             f"{'retailer':<12}{'records in':>11}{'read err':>9}{'dupes':>7}{'fetch err':>10}{'decode err':>11}"
             f"{'infer err':>10}{'images':>8}{'products':>9}  reconciled"]
    for retailer, rec in manifest["reconciliation"].items():
        by_stage = stages.get(retailer, {})
        lines.append(f"{retailer:<12}{rec['records_in']:>11}{by_stage.get('read', 0):>9}{rec['duplicates']:>7}"
                     f"{by_stage.get('fetch', 0):>10}{by_stage.get('decode', 0):>11}"
                     f"{by_stage.get('inference', 0):>10}{rec['images']:>8}{counts['products'].get(retailer, 0):>9}"
                     f"  {'yes' if rec['ok'] else 'NO'}")
    images = sum(counts["images"].values())
    records = sum(counts["records_in"].values())
    lines.append(f"throughput: {images / seconds if seconds else 0:.1f} images/s, "
                 f"{records / seconds if seconds else 0:.1f} records/s; "
                 f"dead-letter share {dead_letter_share(manifest):.1%}")
    model_ids = {task: m["model_id"] for task, m in (manifest.get("models") or {}).items()}
    lines.append("models: " + (models_line(model_ids) or "none (retailer labels only)"))
    agreement = {r: c for r, c in counts.get("category_agreement", {}).items() if c}
    if agreement:
        lines.append("model vs retailer category: " + "; ".join(
            f"{r}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for r, c in agreement.items()))
    tiers: Counter[str] = Counter()
    for by_tier in counts.get("review_tiers", {}).values():
        tiers.update(by_tier)
    queued, products = sum(tiers.values()), sum(counts["products"].values())
    lines.append(f"review queue: {queued} products ({queued / products if products else 0:.1%})" + "".join(
        f"; {name} {tiers[name]}" for name in ReviewTier.__members__ if tiers.get(name)))
    previous = manifest.get("previous")
    if previous:
        total = {kind: sum(counts[f"images_{kind}"].values()) for kind in ("reused", "rescored", "new")}
        dates = sorted({d for by_date in previous["partitions"].values() for d in by_date})
        lines.append(f"reuse: {total['reused']} reused, {total['rescored']} rescored, {total['new']} new; "
                     f"{sum(counts['vanished_products'].values())} products vanished "
                     f"(previous run: {', '.join(dates) or 'none found'} in {previous['output']})")
        for bad in previous.get("unreadable") or ():
            lines.append(f"previous output damaged: {bad['path']} could not be read ({bad['reason']}); "
                         "its images were scored again")
    reasons = top_reasons(manifest)
    if reasons:
        lines.append("top dead-letter reasons: " + ", ".join(f"{reason} {n}" for reason, n in reasons))
    unmapped = {r: v for r, v in manifest["unmapped"]["category"].items() if v}
    if unmapped:
        lines.append("unmapped categories: " + "; ".join(
            f"{r}: " + ", ".join(f"{k!r} {v}" for k, v in list(c.items())[:5]) for r, c in unmapped.items()))
    lines.append(f"manifest: {manifest['output']}/manifest.json")
    return "\n".join(lines)


def models_line(model_ids: dict[str, str]) -> str:
    """{task: model id} -> ``person+category+gender M1, age_group M2``: the heads one export
    serves, named once."""
    by_model: dict[str, list[str]] = {}
    for task, model_id in model_ids.items():
        by_model.setdefault(model_id, []).append(task)
    return ", ".join(f"{'+'.join(tasks)} {model_id}" for model_id, tasks in by_model.items())
