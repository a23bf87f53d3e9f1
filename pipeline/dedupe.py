"""DeduplicateImages: one row per (retailer, product id, image URI).

Catalog dumps repeat images: feed variants (sizes, colours) share pictures, and dumps get
concatenated. The first occurrence in source order is kept; every other one becomes a
:class:`~pipeline.records.Duplicate` on a second output, counted in the run manifest.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.records import Duplicate, ImageRecord

DUPLICATES = "duplicates"
METRICS_NAMESPACE = "fashion_enrich.dedupe"


class _FirstAndCount(beam.CombineFn):
    """Keeps the earliest record (by source order) and the others' positions, not the records."""

    def create_accumulator(self):
        return (None, [])

    def add_input(self, acc, record):
        return self.merge_accumulators([acc, (record, [])])

    def merge_accumulators(self, accumulators):
        kept, dropped = None, []
        for record, others in accumulators:
            dropped.extend(others)
            if record is None:
                continue
            if kept is None:
                kept = record
            elif record.order_key() < kept.order_key():
                dropped.append((kept.source_file, kept.source_line))
                kept = record
            else:
                dropped.append((record.source_file, record.source_line))
        return (kept, dropped)

    def extract_output(self, acc):
        return acc


class _Split(beam.DoFn):
    def process(self, element):
        _, (kept, dropped) = element
        yield kept
        for source_file, source_line in dropped:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates").inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES, Duplicate(
                retailer=kept.retailer, product_id=kept.product_id, image_uri=kept.image_uri,
                source_file=source_file, source_line=source_line,
                kept_source_file=kept.source_file, kept_source_line=kept.source_line))


class DeduplicateImages(beam.PTransform):
    """Returns a tagged tuple: main output unique ``ImageRecord``s, ``duplicates``."""

    def expand(self, records):
        return (
            records
            | "KeyByImage" >> beam.Map(lambda r: (r.dedupe_key(), r)).with_output_types(
                beam.typehints.Tuple[beam.typehints.Tuple[str, str, str], ImageRecord])
            | "FirstPerKey" >> beam.CombinePerKey(_FirstAndCount())
            | "Split" >> beam.ParDo(_Split()).with_outputs(DUPLICATES, main="unique")
        )
