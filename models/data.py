"""Training data from labelled catalogs, through the enrichment pipeline's own stages.

``build_prepare_pipeline`` reads dumps with the same sources, taxonomy mapping,
de-duplication and image stage (``LoadImages``: the one preprocessing function) as
``fashion-enrich run``, joins optional weak person labels, and runs a tensorflow-transform
``preprocessing_fn`` with ``tft_beam.AnalyzeAndTransformDataset``: one full pass computes the
label vocabularies (category classes under ``min_count`` images dropped, the study's floor)
and maps labels to ids. It writes::

    <out>/data/part-*.tfrecord.gz   image (uint8 bytes), label ids, product key, retailer
    <out>/transform_fn/             the TFT transform output: the label vocabularies that define a
                                    model's classes (its labels.json and card) and the id mapping
    <out>/prepared.json             image size, counts, sources

``load_prepared`` reads it back as numpy arrays for training.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.build import load_catalog
from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.machine import local_runner
from pipeline.source_config import SourceConfig

LABEL_TASKS = ("category", "gender", "age_group", "colour")  # string labels: vocabularies computed by TFT
TASKS = LABEL_TASKS + ("person",)  # person: 0 / 1 from weak labels, -1 unknown
UNKNOWN = -1


@dataclass(frozen=True)
class PrepareConfig:
    sources: tuple[SourceConfig, ...]
    out: str
    image_size: int = 64
    category_min_count: int = 100
    person_labels: tuple[tuple[str, str], ...] = ()  # (retailer, CSV with id + person_weak)
    extra_roots: tuple[str, ...] = ()
    fetch: FetchConfig = FetchConfig()
    decode_threads: int = 2
    taxonomy_path: str | None = None  # a custom taxonomy (--taxonomy); None: the shipped one
    command: str = ""  # the command line, recorded in prepared.json (and so in every model card)

    @property
    def decode(self) -> DecodeConfig:
        return DecodeConfig(size=self.image_size)


def read_person_labels(path: str) -> dict[str, int]:
    """``id -> 1 (PERSON) / 0 (PRODUCT)`` from a CSV with ``id`` and ``person_weak`` columns."""
    with FileSystems.open(path) as fh:
        rows = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
        return {r["id"]: int(r["person_weak"].strip().upper() == "PERSON") for r in rows
                if r.get("id") and r.get("person_weak")}


def to_instance(element, person: dict) -> dict:
    """(record, array) -> the raw TFT instance."""
    record, array = element
    label = person.get(record.retailer, {}).get(record.product_id, UNKNOWN)
    return {
        "image": array.tobytes(),
        "category": record.category or "",
        "gender": record.gender or "",
        "age_group": record.age_group or "",
        "colour": record.retailer_colour or "",
        "person": label,
        "product_key": f"{record.retailer}/{record.product_id}",
        "group": f"{record.retailer}/{record.group_id or record.product_id}",
        "sha256": record.image_sha256 or "",
        "retailer": record.retailer,
    }


def raw_feature_spec() -> dict:
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([], tf.string)
            for name in LABEL_TASKS + ("image", "product_key", "group", "sha256", "retailer")}
    spec["person"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def make_preprocessing_fn(min_counts: dict[str, int]):
    """The TFT preprocessing_fn: vocabularies over the non-empty labels, labels -> ids (-1 if
    missing or below the task's minimum count); images and keys pass through."""

    def preprocessing_fn(inputs):
        import tensorflow as tf
        import tensorflow_transform as tft

        outputs = {name: inputs[name] for name in ("image", "product_key", "group", "sha256", "retailer", "person")}
        for task in LABEL_TASKS:
            labels = inputs[task]
            present = tf.not_equal(labels, "")
            known = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(labels, present), tf.cast(present, tf.int64))
            threshold = min_counts.get(task, 1)  # TFT's "no threshold" is None, not 1
            vocab = tft.vocabulary(known, frequency_threshold=threshold if threshold > 1 else None, vocab_filename=task)
            outputs[f"{task}_id"] = tft.apply_vocabulary(labels, vocab, default_value=UNKNOWN)
        return outputs

    return preprocessing_fn


def build_prepare_pipeline(p: beam.Pipeline, cfg: PrepareConfig, *, temp_dir: str | None = None):
    """Adds the preparation steps to ``p``; returns the dead-letter PCollection."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    catalog = load_catalog(p, cfg.sources, extra_roots=cfg.extra_roots, taxonomy_path=cfg.taxonomy_path,
                           fetch=cfg.fetch, decode=cfg.decode, decode_threads=cfg.decode_threads)
    person = {retailer: read_person_labels(path) for retailer, path in cfg.person_labels}
    raw = catalog.images | "ToInstances" >> beam.Map(to_instance, person)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    with tft_beam.Context(temp_dir=temp_dir or tempfile.mkdtemp(prefix="tft-")):
        (transformed, transformed_metadata), transform_fn = (
            (raw, metadata) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                make_preprocessing_fn({"category": cfg.category_min_count})))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(FileSystems.join(cfg.out, "transform_fn"))
    coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
    _ = (transformed
         | "Encode" >> beam.Map(coder.encode)
         | "WriteExamples" >> beam.io.WriteToTFRecord(FileSystems.join(cfg.out, "data", "part"),
                                                      file_name_suffix=".tfrecord.gz"))
    dead = (catalog.read_dead_letter, catalog.image_dead_letter) | "AllDeadLetters" >> beam.Flatten()
    _ = (dead | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(dataclasses.asdict(d)))
         | "WriteDeadLetters" >> beam.io.WriteToText(FileSystems.join(cfg.out, "dead_letter"),
                                                     file_name_suffix=".jsonl"))
    return dead


def prepare(cfg: PrepareConfig, *, pipeline_args: list[str] | None = None) -> dict:
    """Run the preparation pipeline, then write and return ``prepared.json``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(pipeline_args or [])
    with beam.Pipeline(runner=local_runner(options), options=options) as p:
        build_prepare_pipeline(p, cfg)
    data = load_prepared_arrays(cfg.out, cfg.image_size)
    dead: dict[str, int] = {}
    for match in FileSystems.match([FileSystems.join(cfg.out, "dead_letter*.jsonl")])[0].metadata_list:
        with FileSystems.open(match.path) as fh:
            for line in io.TextIOWrapper(fh, encoding="utf-8"):
                reason = json.loads(line)["reason"]
                dead[reason] = dead.get(reason, 0) + 1
    info = {
        "image_size": cfg.image_size,
        "examples": int(len(data.product_keys)),
        "products": int(len(set(data.product_keys))),
        "dead_letter": dead,
        "category_min_count": cfg.category_min_count,
        "sources": [{"retailer": s.retailer, "pattern": s.pattern, "mapping": s.mapping.path} for s in cfg.sources],
        "person_labels": [list(p) for p in cfg.person_labels],
        "taxonomy": cfg.taxonomy_path,  # None: the shipped schemas/taxonomy.yaml
        "command": cfg.command,
        "labelled": {t: int((data.labels[t] >= 0).sum()) for t in TASKS},
        "vocabularies": data.vocabularies,
    }
    with FileSystems.create(FileSystems.join(cfg.out, "prepared.json")) as fh:
        fh.write(json.dumps(info, indent=2).encode("utf-8"))
    return info


@dataclass(frozen=True)
class Prepared:
    images: np.ndarray  # (n, size, size, 3) uint8
    labels: dict[str, np.ndarray]  # task -> int64 ids, -1 unknown
    product_keys: np.ndarray  # (n,) str
    retailers: np.ndarray  # (n,) str
    groups: np.ndarray  # (n,) str: cross-validation groups (product, or the mapping's group column)
    sha256: np.ndarray  # (n,) str: content hash of the source image bytes
    vocabularies: dict[str, list[str]]
    image_size: int
    taxonomy_path: str | None = None  # the taxonomy the labels were mapped onto (None: the shipped one)

    def classes(self, task: str) -> list[str]:
        return ["PRODUCT", "PERSON"] if task == "person" else self.vocabularies[task]


def load_prepared(folder: str) -> Prepared:
    """Read a prepared folder into memory (14k images at 64 px are ~170 MB)."""
    with open(os.path.join(folder, "prepared.json"), encoding="utf-8") as fh:
        info = json.load(fh)
    return dataclasses.replace(load_prepared_arrays(folder, int(info["image_size"])),
                               taxonomy_path=info.get("taxonomy"))


def load_prepared_arrays(folder: str, size: int) -> Prepared:
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(os.path.join(folder, "transform_fn"))
    spec = output.transformed_feature_spec()
    files = sorted(tf.io.gfile.glob(os.path.join(folder, "data", "part-*")))
    images, keys, retailers, groups, hashes, labels = [], [], [], [], [], {t: [] for t in TASKS}
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        batch = tf.io.parse_example(raw, spec)
        images.append(np.frombuffer(b"".join(batch["image"].numpy()), dtype=np.uint8).reshape(-1, size, size, 3))
        keys.extend(k.decode() for k in batch["product_key"].numpy())
        retailers.extend(r.decode() for r in batch["retailer"].numpy())
        if "group" in batch:  # folders prepared before groups were recorded fall back to products
            groups.extend(g.decode() for g in batch["group"].numpy())
            hashes.extend(h.decode() for h in batch["sha256"].numpy())
        labels["person"].append(batch["person"].numpy())
        for task in LABEL_TASKS:
            labels[task].append(batch[f"{task}_id"].numpy())
    vocabularies = {t: [v.decode() for v in output.vocabulary_by_name(t)] for t in LABEL_TASKS}
    empty = np.zeros((0, size, size, 3), dtype=np.uint8)
    return Prepared(
        images=np.concatenate(images) if images else empty,
        labels={t: np.concatenate(v).astype(np.int64) if v else np.zeros(0, np.int64) for t, v in labels.items()},
        product_keys=np.array(keys), retailers=np.array(retailers), groups=np.array(groups or keys),
        sha256=np.array(hashes or [""] * len(keys)), vocabularies=vocabularies, image_size=size)
