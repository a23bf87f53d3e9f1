"""The flags of ``fashion-enrich run``: :class:`FashionEnrichOptions`, a Beam ``PipelineOptions``
view, so they share one command line with Beam's own (``--runner``, Dataflow flags...). Each flag
has a dashed and an underscored spelling; the defaults of the image flags are those of
:class:`~pipeline.images.config.FetchConfig` and :class:`~pipeline.images.config.DecodeConfig`.
Only the definition lives here: :meth:`pipeline.options.RunConfig.from_options` validates the values.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.images.config import DecodeConfig, FetchConfig
from pipeline.model_choice import MODEL_TASKS  # each has a --TASK-model flag
from pipeline.model_profiles import DEFAULT_PROFILE, PROFILES
from pipeline.onnx_engine import ENGINES
from schemas.mapping import builtin_retailers


class ConfigError(ValueError):
    """A user error in the command line or its files; printed as one line."""


DEFAULT_OUTPUT = "./fashion-enrich-output"
NAMED_RETAILERS = ("zalando", "asos", "farfetch")


class FashionEnrichOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        for name in NAMED_RETAILERS:
            parser.add_argument(f"--{name}", default=None, metavar="PATH",
                                help=f"{name} dump: file, glob, local or gs://, optionally .gz")
        parser.add_argument("--source", action="append", default=None, metavar="NAME=PATH[:MAPPING]",
                            help="any retailer through a mapping file (built-in mapping used when MAPPING is "
                                 f"omitted; built-in: {', '.join(builtin_retailers())}); repeatable")
        parser.add_argument("--output", default=DEFAULT_OUTPUT, help="output folder (local or gs://)")
        parser.add_argument("--previous", default=None, metavar="OUTPUT",
                            help="reuse the unchanged images of this output's latest run (incremental run)")
        parser.add_argument("--run_date", "--run-date", dest="run_date", default=None,
                            help="partition date YYYY-MM-DD (default: today, UTC)")
        parser.add_argument("--shards_per_partition", "--shards-per-partition", dest="shards_per_partition",
                            type=int, default=1, help="Parquet files per (table, run_date, retailer)")
        parser.add_argument("--records_per_shard", "--records-per-shard", dest="records_per_shard", type=int,
                            default=10_000, metavar="N",
                            help="DirectRunner: run catalogs of more image records as one pipeline per hash "
                                 "shard of about N records, so memory stays bounded (0: one pipeline)")
        parser.add_argument("--taxonomy", default=None, help="taxonomy YAML (default: the shipped one)")
        images = FetchConfig()
        decode = DecodeConfig()
        parser.add_argument("--image_size", "--image-size", dest="image_size", type=int, default=None,
                            help=f"model input side in pixels (default: the models' size, else {decode.size})")
        parser.add_argument("--max_image_pixels", "--max-image-pixels", dest="max_image_pixels", type=int,
                            default=decode.max_pixels, help="decompression-bomb guard (width x height)")
        parser.add_argument("--min_image_side", "--min-image-side", dest="min_image_side", type=int,
                            default=decode.min_side, help="images with a smaller side are TOO_SMALL")
        parser.add_argument("--max_image_bytes", "--max-image-bytes", dest="max_image_bytes", type=int,
                            default=images.max_bytes, help="download size cap")
        parser.add_argument("--fetch_timeout", "--fetch-timeout", dest="fetch_timeout", type=float,
                            default=images.read_timeout_s, help="HTTP read timeout, seconds")
        parser.add_argument("--fetch_retries", "--fetch-retries", dest="fetch_retries", type=int,
                            default=images.max_retries, help="retries on connection errors, timeouts, 429, 5xx")
        parser.add_argument("--fetch_concurrency", "--fetch-concurrency", dest="fetch_concurrency", type=int,
                            default=images.concurrency, help="concurrent downloads per worker thread")
        parser.add_argument("--decode_threads", "--decode-threads", dest="decode_threads", type=int, default=None,
                            help="image decode threads per worker (Pillow releases the GIL; default: the worker's "
                                 "cores on the multi-processing DirectRunner, else 2)")
        parser.add_argument("--image_cache", "--image-cache", dest="image_cache", default=None,
                            help="folder or gs:// prefix caching downloads (ETag/Last-Modified revalidated)")
        parser.add_argument("--allowed_root", "--allowed-root", dest="allowed_root", action="append", default=None,
                            help="extra local folder images may be read from (default: the dumps' folders)")
        parser.add_argument("--models", default=None, choices=(*PROFILES, "none"),
                            help=f"shipped model profile (default: {DEFAULT_PROFILE}; none: no shipped model; "
                                 "see docs/models.md)")
        parser.add_argument("--multitask_model", "--multitask-model", dest="multitask_model", default=None,
                            metavar="DIR", help="multi-task export folder: its heads replace the profile's models")
        for task in MODEL_TASKS:
            parser.add_argument(f"--{task}_model", f"--{task.replace('_', '-')}-model", dest=f"{task}_model",
                                default="default", help=f"exported {task} model folder (or a multi-task export's "
                                "head), 'default' (the profile's) or 'none'")
        parser.add_argument("--max_batch_size", "--max-batch-size", dest="max_batch_size", type=int, default=64,
                            help="RunInference batch cap (GPUs run out of memory on unbounded batches)")
        parser.add_argument("--min_batch_size", "--min-batch-size", dest="min_batch_size", type=int, default=1)
        parser.add_argument("--model_copies", "--model-copies", dest="model_copies", type=int, default=None,
                            help="model copies per worker machine, shared across its processes")
        parser.add_argument("--large_model", "--large-model", dest="large_model", action="store_true",
                            help="load one model per machine, shared across processes")
        parser.add_argument("--tf_threads", "--tf-threads", dest="tf_threads", type=int, default=None,
                            help="TensorFlow intra-op threads per worker (0: TensorFlow's default; default: the "
                                 "worker's cores on the multi-processing DirectRunner, else TensorFlow's)")
        parser.add_argument("--tf_inter_op_threads", "--tf-inter-op-threads", dest="tf_inter_op_threads", type=int,
                            default=0, help="TensorFlow inter-op threads (0: TensorFlow's default)")
        parser.add_argument("--engine", default="auto", choices=ENGINES,
                            help="inference engine (auto: ONNX Runtime on a local runner when every export has "
                                 "a checked model.onnx, else TensorFlow; see docs/models.md)")
        parser.add_argument("--inference_steps", "--inference-steps", dest="inference_steps", default="combined",
                            choices=("combined", "per-model"),
                            help="one RunInference step for all models (default) or one per model")
        parser.add_argument("--no_person_filter", "--no-person-filter", dest="no_person_filter", action="store_true",
                            help="use person images for the product category even when it has packshots")
        parser.add_argument("--person_threshold", "--person-threshold", dest="person_threshold", type=float,
                            default=0.5, help="person score from which an image counts as a person shot")
        parser.add_argument("--min_category_confidence", "--min-category-confidence", dest="min_category_confidence",
                            type=float, default=0.0, help="below it the product category is null and flagged")
        parser.add_argument("--min_gender_confidence", "--min-gender-confidence", dest="min_gender_confidence",
                            type=float, default=0.0, help="below it the product gender is null and flagged")
        parser.add_argument("--min_age_group_confidence", "--min-age-group-confidence",
                            dest="min_age_group_confidence", type=float, default=0.0,
                            help="below it the product age group is null and flagged")
        parser.add_argument("--review_threshold", "--review-threshold", dest="review_threshold", action="append",
                            default=None, metavar="[RETAILER:]FIELD=VALUE",
                            help="estimated probability that the retailer's category, gender or age_group is "
                                 "wrong from which a disputed label enters the review queue (default 0.5); with "
                                 "RETAILER: for that retailer only; repeatable")
        parser.add_argument("--label_error_rate", "--label-error-rate", dest="label_error_rate", action="append",
                            default=None, metavar="[RETAILER:]FIELD=VALUE",
                            help="prior share of wrong retailer labels for category, gender or age_group (default "
                                 "0.05), behind each label's estimated error probability; repeatable")
        parser.add_argument("--no_title_evidence", "--no-title-evidence", dest="no_title_evidence",
                            action="store_true", help="judge the retailer's labels by the images alone, without "
                                                      "what the product titles name")
        parser.add_argument("--progress_interval", "--progress-interval", dest="progress_interval", type=float,
                            default=60.0, help="seconds between progress log lines per worker (0: none)")
        parser.add_argument("--inference_accelerator", "--inference-accelerator", dest="inference_accelerator",
                            default=None, metavar="HINT",
                            help="resource hint for the inference step only, e.g. "
                                 "'type:nvidia-tesla-t4;count:1;install-nvidia-driver' (Dataflow right fitting)")
        parser.add_argument("--inference_min_ram", "--inference-min-ram", dest="inference_min_ram", default=None,
                            metavar="SIZE", help="min_ram resource hint for the inference step, e.g. 16GB")
        parser.add_argument("--allow_private_addresses", "--allow-private-addresses",
                            dest="allow_private_addresses", action="store_true",
                            help="let image URLs resolve to private/loopback addresses (off: SSRF guard)")
