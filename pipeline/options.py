"""Command-line options -> one frozen, validated :class:`RunConfig`.

The flags are defined in :mod:`pipeline.flags`: ``FashionEnrichOptions`` is a Beam
``PipelineOptions`` view, so the project's flags and Beam's own (``--runner``,
``--direct_num_workers``, Dataflow flags...) share one command line.
``RunConfig.from_options`` validates everything a user can get wrong (missing inputs,
bad mapping files, unknown retailers, a malformed date) before any pipeline is built, and
raises :class:`~pipeline.flags.ConfigError` with a one-line message. The catalogs to read
(``--source``, the named retailers, the shipped samples) resolve in :mod:`pipeline.source_config`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.flags import ConfigError, FashionEnrichOptions
from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.inference_config import InferenceConfig
from pipeline.machine import DIRECT_RUNNERS, worker_cores
from pipeline.model_choice import MODEL_TASKS, choose_models
from pipeline.model_info import ModelInfo
from pipeline.onnx_engine import resolve_engine
from pipeline.product_rules import AggregateConfig
from pipeline.source_config import SourceConfig, resolve_sources
from schemas.mapping import RetailerMapping, load_mapping
from schemas.taxonomy import TaxonomyError, load_taxonomy


@dataclass(frozen=True)
class RunConfig:
    sources: tuple[SourceConfig, ...]
    output: str
    run_date: str
    run_id: str
    started_at: str
    shards_per_partition: int = 1
    taxonomy_path: str | None = None
    fetch: FetchConfig = FetchConfig()
    decode: DecodeConfig = DecodeConfig()
    decode_threads: int = 2
    threads_auto: bool = False  # decode and TF threads sized by the run (not --decode-threads / --tf-threads)
    extra_roots: tuple[str, ...] = ()  # --allowed-root folders: local images outside the dumps' folders
    models: tuple[ModelInfo, ...] = ()
    inference: InferenceConfig = InferenceConfig()
    aggregate: AggregateConfig = AggregateConfig()
    progress_interval_s: float = 60.0  # 0: no progress lines
    inference_hints: tuple[tuple[str, str], ...] = ()  # Beam resource hints on the inference step only
    previous: str | None = None  # an output whose latest run's unchanged images are reused (pipeline/reuse.py)
    records_per_shard: int = 10_000  # DirectRunner: above it, one pipeline per hash shard (pipeline/sharded.py); 0 off

    def __post_init__(self):
        if not self.sources:
            raise ConfigError("no inputs")
        names = [s.retailer for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"retailer {dupes[0]} is given more than once (use one glob per retailer)")
        try:
            dt.date.fromisoformat(self.run_date)
        except ValueError as exc:
            raise ConfigError(f"--run-date must be YYYY-MM-DD, got {self.run_date!r}") from exc
        if not 1 <= self.shards_per_partition <= 1024:
            raise ConfigError("--shards-per-partition must be between 1 and 1024")
        if not 1 <= self.decode_threads <= 64:
            raise ConfigError("--decode-threads must be between 1 and 64")
        if self.progress_interval_s < 0:
            raise ConfigError("--progress-interval must be >= 0")
        if self.records_per_shard < 0:
            raise ConfigError("--records-per-shard must be >= 0 (0: never shard)")

    @property
    def mappings(self) -> dict[str, RetailerMapping]:
        return {s.retailer: s.mapping for s in self.sources}

    @property
    def retailers(self) -> tuple[str, ...]:
        return tuple(s.retailer for s in self.sources)

    @property
    def engine(self) -> str | None:
        """The engine the models are scored with; None for a run without models."""
        return self.inference.engine if self.models else None

    def model(self, task: str) -> ModelInfo | None:
        return next((m for m in self.models if m.task == task), None)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["sources"] = [{"retailer": s.retailer, "pattern": s.pattern, "mapping": s.mapping.path}
                           for s in self.sources]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        sources = tuple(SourceConfig(s["retailer"], s["pattern"], load_mapping(s["mapping"]))
                        for s in data.pop("sources"))
        data["extra_roots"] = tuple(data["extra_roots"])
        data["inference_hints"] = tuple(tuple(h) for h in data["inference_hints"])
        fetch = data.pop("fetch")
        fetch["allowed_roots"] = tuple(fetch["allowed_roots"])
        decode = data.pop("decode")
        decode["formats"] = tuple(decode["formats"])
        models = tuple(ModelInfo.read(m["path"], head=m.get("head")) for m in data.pop("models"))
        return cls(sources=sources, fetch=FetchConfig(**fetch), decode=DecodeConfig(**decode), models=models,
                   inference=InferenceConfig(**data.pop("inference")),
                   aggregate=_aggregate_from_json(data.pop("aggregate")), **data)

    @classmethod
    def from_options(cls, options: PipelineOptions, *, now: dt.datetime | None = None,
                     match_remote: bool = True) -> RunConfig:
        """``match_remote=False``: object-store input patterns are taken as given, not matched
        (a Dataflow dry run on a machine that cannot reach the store)."""
        opts = options.view_as(FashionEnrichOptions)
        now = now or dt.datetime.now(dt.UTC)
        try:
            taxonomy = load_taxonomy(opts.taxonomy)
        except (OSError, TaxonomyError) as exc:
            raise ConfigError(f"bad taxonomy file: {exc}") from exc
        sources, roots = resolve_sources(opts, taxonomy, match_remote=match_remote)
        run_date = opts.run_date or now.date().isoformat()
        models = _models(opts)
        cores = worker_cores(options)
        local = options.view_as(StandardOptions).runner in DIRECT_RUNNERS
        # Images are decoded once, at the largest model input; smaller models score a downscaled copy.
        size = max(m.image_size for m in models) if models else (opts.image_size or DecodeConfig().size)
        if opts.image_size and opts.image_size != size:
            raise ConfigError(f"--image-size {opts.image_size} differs from the models' (largest) input size {size}")
        extra_roots = tuple(sorted(os.path.abspath(r) for r in opts.allowed_root or ()))
        try:
            fetch = FetchConfig(
                read_timeout_s=opts.fetch_timeout, max_retries=opts.fetch_retries, max_bytes=opts.max_image_bytes,
                concurrency=opts.fetch_concurrency, cache=opts.image_cache,
                allow_private_addresses=opts.allow_private_addresses,
                allowed_roots=tuple(sorted(roots | set(extra_roots))))
            decode = DecodeConfig(size=size, max_pixels=opts.max_image_pixels,
                                  min_side=opts.min_image_side)
            inference = InferenceConfig(min_batch_size=opts.min_batch_size, max_batch_size=opts.max_batch_size,
                                        model_copies=opts.model_copies, large_model=opts.large_model,
                                        intra_op_threads=_tf_threads(opts, cores),
                                        inter_op_threads=opts.tf_inter_op_threads, steps=opts.inference_steps,
                                        engine=resolve_engine(opts.engine, models, size, local)[0])
            aggregate = AggregateConfig(person_filter=not opts.no_person_filter,
                                        person_threshold=opts.person_threshold,
                                        min_category_confidence=opts.min_category_confidence,
                                        min_gender_confidence=opts.min_gender_confidence,
                                        min_age_group_confidence=opts.min_age_group_confidence,
                                        review_thresholds=_per_field(opts.review_threshold, "--review-threshold"),
                                        error_rates=_per_field(opts.label_error_rate, "--label-error-rate"),
                                        title_evidence=not opts.no_title_evidence)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return cls(
            sources=sources,
            output=opts.output if "://" in opts.output else os.path.abspath(opts.output),
            run_date=run_date,
            run_id=f"{run_date}T{now:%H%M%S}-{uuid.uuid4().hex[:8]}",
            started_at=now.isoformat(timespec="seconds"),
            shards_per_partition=opts.shards_per_partition,
            taxonomy_path=opts.taxonomy,
            fetch=fetch,
            decode=decode,
            decode_threads=(cores or 2) if opts.decode_threads is None else opts.decode_threads,
            threads_auto=opts.decode_threads is None and opts.tf_threads is None,
            extra_roots=extra_roots,
            models=models,
            inference=inference,
            aggregate=aggregate,
            progress_interval_s=opts.progress_interval,
            inference_hints=_inference_hints(opts, bool(models)),
            previous=_previous(opts.previous),
            records_per_shard=opts.records_per_shard,
        )


def _previous(path: str | None) -> str | None:
    if not path or "://" in path:
        return path or None
    if not os.path.isdir(path):
        raise ConfigError(f"--previous {path}: no such output folder")
    return os.path.abspath(path)


def _models(opts) -> tuple[ModelInfo, ...]:
    """The models of the command line (:mod:`pipeline.model_choice`)."""
    try:
        return choose_models(profile=opts.models, multitask=opts.multitask_model,
                             single={task: getattr(opts, f"{task}_model") for task in MODEL_TASKS})
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _aggregate_from_json(data: dict) -> AggregateConfig:
    return AggregateConfig(**{**data, **{name: tuple(tuple(t) for t in data[name])
                                         for name in ("review_thresholds", "error_rates")}})


_REVIEW_RE = re.compile(r"^(?:(?P<retailer>[A-Za-z0-9_-]+):)?(?P<field>[a-z_]+)=(?P<value>[0-9.]+)$")


def _tf_threads(opts, cores: int) -> int:
    """TensorFlow's intra-op threads: ``--tf-threads``; else the worker's cores, except with
    ``--large-model`` (one worker serves the models to all: TensorFlow's default, all cores)."""
    if opts.tf_threads is not None:
        return opts.tf_threads
    return 0 if opts.large_model else cores


def _per_field(specs, flag: str) -> tuple[tuple[str, str, float], ...]:
    """``[RETAILER:]FIELD=VALUE`` settings as (retailer or "*", field, value)."""
    found = []
    for spec in specs or ():
        match = _REVIEW_RE.match(spec)
        if not match:
            raise ConfigError(f"{flag} must look like [RETAILER:]FIELD=VALUE, got {spec!r}")
        found.append((match["retailer"] or "*", match["field"], float(match["value"])))
    return tuple(found)


def _inference_hints(opts, has_models: bool) -> tuple[tuple[str, str], ...]:
    """Beam resource hints for the inference step (validated by Beam's own parsers)."""
    from apache_beam.transforms.resources import parse_resource_hints

    hints = tuple((name, value) for name, value in (("accelerator", opts.inference_accelerator),
                                                    ("min_ram", opts.inference_min_ram)) if value)
    if hints and not has_models:
        raise ConfigError("--inference-accelerator / --inference-min-ram given but no model runs")
    try:
        parse_resource_hints(dict(hints))
    except ValueError as exc:
        raise ConfigError(f"bad inference resource hint: {exc}") from exc
    return hints
