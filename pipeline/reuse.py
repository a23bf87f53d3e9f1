"""Incremental runs: match today's image records with the previous run's stored rows.

``run --previous OUTPUT`` (``nightly`` by default, on its own output) reads, per retailer of
the run, the latest ``run_date`` partition of ``OUTPUT/images`` (each file by column, in batches), and
joins it with today's de-duplicated image records by (retailer, product id, image URI) in a
``CoGroupByKey``, so the previous table is never held in one place. Each record leaves as
``(record, stored record or None)`` with ``reuse_status`` set:

* ``NEW``: no stored row; fetched, decoded and scored as in a full run;
* ``RESCORED``, with a stored record: the stored row has a validator and was made with the same
  taxonomy version, image settings and model ids (:func:`enriched_with`). The image stage then
  fetches conditionally (:mod:`pipeline.images.transforms`): unchanged, the stored row is reused
  (``REUSED``); changed, the new bytes are decoded and scored;
* ``RESCORED``, without one: a stored row made otherwise (another model, an older output
  without validators): fetched and scored afresh.

Products of the previous run that are not in today's dump at all are counted as vanished and
not carried forward. The previous rows are read before this run's partitions are replaced
(the commit waits for every write, and the writes for this join), so a rerun of the same date
on the same output reuses its own rows.
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.pickled import replaced
from pipeline.records import ImageRecord
from pipeline.stored import ReuseStatus, fault, partition_of, records_from_batch
from schemas.tables import IMAGES

_LOG = logging.getLogger(__name__)


def enriched_with(config) -> str:
    """What an image row depends on besides the image (stored as ``images.enriched_with``): the
    taxonomy version, the image settings and every model's id and calibration temperature."""
    from schemas.taxonomy import load_taxonomy

    decode = config.decode
    return json.dumps({
        "taxonomy": str(load_taxonomy(config.taxonomy_path).version),
        "image": [decode.size, decode.min_side, decode.max_pixels, config.fetch.max_bytes],
        "models": {m.task: f"{m.model_id}@{m.temperature:g}" for m in config.models},
    }, sort_keys=True, separators=(",", ":"))


def latest_partition_files(retailer: str, output: str) -> list[str]:
    """The Parquet files of the retailer's latest ``run_date`` partition of ``output``'s images
    table (none when the output has no such partition)."""
    pattern = FileSystems.join(output, "images", "run_date=*", f"retailer={retailer}", "*.parquet")
    try:
        paths = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
    except Exception as exc:  # noqa: BLE001 - no such folder (first run) reads as "nothing to reuse"
        _LOG.info("no previous images for %s under %s: %s", retailer, output, exc)
        return []
    by_date: dict[str, list[str]] = {}
    for path in paths:
        by_date.setdefault(partition_of(path)[0], []).append(path)
    return sorted(by_date[max(by_date)]) if by_date else []


def read_stored(path: str, batch_rows: int = 4096):
    """(run_date, stored ImageRecord) for each row of one images-table file, read by column in
    batches of ``batch_rows`` (:func:`~pipeline.stored.records_from_batch`). A column this
    version writes with another type makes the file unreadable (ValueError): its rows would not
    be this table's."""
    run_date, retailer = partition_of(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        stored = pq.ParquetFile(fh)
        expected = IMAGES.schema
        for field in stored.schema_arrow:
            if field.name in expected.names and not field.type.equals(expected.field(field.name).type):
                raise ValueError(f"column {field.name} is {field.type}, the images table's is "
                                 f"{expected.field(field.name).type}")
        for batch in stored.iter_batches(batch_size=batch_rows):
            for record in records_from_batch(batch, retailer):
                yield run_date, record


UNREADABLE = "unreadable"


class _ReadStoredFn(beam.DoFn):
    """path -> its stored rows; a file that cannot be read (truncated, gone since it was listed,
    not an images table) -> (retailer, path, reason) on the ``unreadable`` output, after the
    rows read before the fault: the night goes on and its images are scored again."""

    def process(self, path: str):
        try:
            yield from read_stored(path)
        except Exception as exc:  # noqa: BLE001 - any fault of one previous file costs only its reuse
            reason = fault(exc)
            _LOG.warning("previous output: cannot read %s (%s); its images are scored again", path, reason)
            beam.metrics.Metrics.counter("fashion_enrich.reuse", "previous_files_unreadable").inc()
            yield beam.pvalue.TaggedOutput(UNREADABLE, (partition_of(path)[1], path, reason))


def previous_image_files(output: str, retailers: tuple[str, ...]) -> list[str]:
    """Every file an incremental run reads as its previous rows: each retailer's latest partition."""
    return [path for retailer in sorted(retailers) for path in latest_partition_files(retailer, output)]


class ReadPrevious(beam.PTransform):
    """pbegin -> ``{"rows": (run_date, stored ImageRecord) for each retailer's latest images
    partition, or for ``files`` when the caller listed them (:func:`previous_image_files`),
    "unreadable": (retailer, path, reason) per file that could not be read}``."""

    def __init__(self, output: str, retailers: tuple[str, ...], files: list[str] | None = None):
        super().__init__()
        self._output, self._retailers = output, tuple(sorted(retailers))
        self._files = None if files is None else list(files)

    def expand(self, pbegin):
        if self._files is not None:
            listed = pbegin | "Files" >> beam.Create(self._files)
        else:
            listed = (pbegin
                      | "Retailers" >> beam.Create(self._retailers)
                      | "LatestPartition" >> beam.FlatMap(latest_partition_files, self._output))
        read = (listed
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadStored" >> beam.ParDo(_ReadStoredFn()).with_outputs(UNREADABLE, main="rows"))
        return {"rows": read.rows, UNREADABLE: read[UNREADABLE]}


def reusable(stored: ImageRecord, key: str) -> bool:
    """Whether a stored row may be reused if its image is unchanged: it has a validator and was
    made the same way (``key``: :func:`enriched_with`)."""
    return bool(stored.image_validator) and stored.enriched_with == key


def _reusable(stored: ImageRecord, key: str) -> ImageRecord | None:
    return stored if reusable(stored, key) else None


def _classify(element):
    _, grouped = element
    stored = list(grouped["previous"])
    status = ReuseStatus.RESCORED if stored else ReuseStatus.NEW
    reusable = next((s for s in stored if s is not None), None)
    for record in grouped["record"]:  # one, after de-duplication; none for a vanished image
        yield replaced(record, reuse_status=status.value), reusable


def _sum_pairs(pairs) -> tuple[int, int]:
    pairs = list(pairs)
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


class MatchPrevious(beam.PTransform):
    """``{"unique": de-duplicated ImageRecords, "records": every record the sources emitted,
    "previous": (run_date, stored ImageRecord) of the previous rows (:class:`ReadPrevious`)}`` ->

    ``{"candidates": (record with reuse_status, stored record or None), "vanished": (retailer,
    product_id) of previous products not in the dump, "read": (retailer, run_date) per stored row}``.
    ``key``: the run's :func:`enriched_with`.
    """

    def __init__(self, key: str):
        super().__init__()
        self._key = key

    def expand(self, inputs):
        unique, records, previous = inputs["unique"], inputs["records"], inputs["previous"]
        key = self._key
        joined = (
            {"record": unique | "KeyRecords" >> beam.Map(lambda r: (r.dedupe_key(), r)),
             "previous": previous | "KeyStored" >> beam.MapTuple(lambda _, s: (s.dedupe_key(), _reusable(s, key)))}
            | "JoinByImage" >> beam.CoGroupByKey()
        )
        product = ((previous | "PreviousProducts" >> beam.MapTuple(lambda _, s: ((s.retailer, s.product_id), (1, 0))),
                    records | "DumpProducts" >> beam.Map(lambda r: ((r.retailer, r.product_id), (0, 1))))
                   | "AllProducts" >> beam.Flatten()
                   | "CountPerProduct" >> beam.CombinePerKey(_sum_pairs))
        return {
            "candidates": joined | "Classify" >> beam.FlatMap(_classify),
            "vanished": product | "Vanished" >> beam.FlatMapTuple(
                lambda product_key, n: [product_key] if n[0] and not n[1] else []),
            "read": previous | "PartitionsRead" >> beam.MapTuple(lambda run_date, s: (s.retailer, run_date)),
        }
