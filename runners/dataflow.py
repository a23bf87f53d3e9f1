"""Dataflow with GPU workers: the pipeline options of a GPU job, built in one place.

    fashion-enrich dataflow --project P --region R --temp-location gs://B/tmp \\
        --container-image REGION-docker.pkg.dev/P/REPO/fashion-enrich:0.1.0 \\
        [--gpu-type nvidia-tesla-t4] [--gpu-placement job|inference|none] [--mps] [--dry-run] \\
        --zalando gs://B/dumps/zalando-*.jsonl.gz --output gs://B/enriched [any 'run' option]

GPU placement:
* ``job`` (default): every worker gets the GPU (``dataflow_service_options=worker_accelerator``).
  Simple, and right when inference dominates the cost (large models such as InceptionV3).
  One SDK process per worker (``no_use_multiple_sdk_containers``) so one process owns the
  GPU, or ``--mps`` to let several processes share it through NVIDIA MPS instead.
* ``inference``: a Beam resource hint (``accelerator``, ``min_ram``) on the inference step
  only ("right fitting"): Dataflow runs reading, fetching and decoding on CPU workers and
  inference on GPU workers. Right when decoding dominates (large retailer JPEGs, small
  models): the GPU is not left idle while CPUs decode. Do not combine with worker_accelerator.
* ``none``: CPU only.

``--dry-run`` builds the graph with the same options and prints them instead of submitting.
Building the options and the graph needs no credentials; checking that gs:// inputs and
models exist does (they are matched and read before anything is submitted). Whether the store
answers is asked first, in seconds (:mod:`runners.preflight`): without credentials a submission
stops at once, and a dry run says that it skipped the input checks.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

PLACEMENTS = ("job", "inference", "none")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")  # GCS bucket naming rules (short form)


@dataclass(frozen=True)
class DataflowSettings:
    project: str
    region: str
    temp_location: str
    container_image: str
    gpu_type: str = "nvidia-tesla-t4"
    gpu_count: int = 1
    gpu_placement: str = "job"
    mps: bool = False
    machine_type: str = "n1-standard-8"
    max_workers: int = 10
    inference_min_ram: str | None = None
    job_name: str | None = None
    setup_file: str | None = None  # ship this checkout's code on top of the container's

    def __post_init__(self):
        from pipeline.options import ConfigError

        if self.gpu_placement not in PLACEMENTS:
            raise ConfigError(f"--gpu-placement must be one of {PLACEMENTS}")
        if not self.temp_location.startswith("gs://"):
            raise ConfigError("--temp-location must be a gs:// path")
        if self.mps and (self.gpu_placement != "job" or self.gpu_count != 1):
            raise ConfigError("--mps needs --gpu-placement job and one GPU per worker")
        if self.gpu_count < 1 or self.max_workers < 1:
            raise ConfigError("--gpu-count and --max-workers must be >= 1")
        if self.inference_min_ram and self.gpu_placement != "inference":
            raise ConfigError("--inference-min-ram applies to --gpu-placement inference only")
        bucket = self.temp_location[len("gs://"):].split("/", 1)[0]
        if not _BUCKET.match(bucket):
            raise ConfigError(f"--temp-location: {bucket!r} is not a valid bucket name")

    def accelerator(self) -> str:
        value = f"type:{self.gpu_type};count:{self.gpu_count};install-nvidia-driver"
        return value + (";use_nvidia_mps" if self.mps else "")


def dataflow_args(settings: DataflowSettings) -> list[str]:
    """Beam / Dataflow pipeline options for ``settings`` (fashion-enrich's own options excluded)."""
    args = [
        "--runner=DataflowRunner",
        f"--project={settings.project}",
        f"--region={settings.region}",
        f"--temp_location={settings.temp_location}",
        f"--staging_location={settings.temp_location.rstrip('/')}/staging",
        f"--sdk_container_image={settings.container_image}",
        "--sdk_location=container",  # Beam comes from the container, not a staged tarball
        f"--machine_type={settings.machine_type}",
        f"--max_num_workers={settings.max_workers}",
        "--experiments=use_runner_v2",
    ]
    if settings.job_name:
        args.append(f"--job_name={settings.job_name}")
    if settings.setup_file:
        args.append(f"--setup_file={settings.setup_file}")
    if settings.gpu_placement == "job":
        args.append(f"--dataflow_service_options=worker_accelerator={settings.accelerator()}")
        if not settings.mps:
            args.append("--experiments=no_use_multiple_sdk_containers")  # one process owns the GPU
    elif settings.gpu_placement == "inference":
        args.append(f"--inference_accelerator={settings.accelerator()}")
        if settings.inference_min_ram:
            args.append(f"--inference_min_ram={settings.inference_min_ram}")
    return args


def check_remote_paths(config) -> None:
    """Workers cannot read the launcher's disk: inputs, output and cache must be object-store paths."""
    from pipeline.model_choice import flag
    from pipeline.model_info import DEFAULT_PREFIX
    from pipeline.options import ConfigError

    local = [f"{s.retailer} input {s.pattern}" for s in config.sources if "://" not in s.pattern]
    if "://" not in config.output:
        local.append(f"--output {config.output}")
    if config.fetch.cache and "://" not in config.fetch.cache:
        local.append(f"--image-cache {config.fetch.cache}")
    if config.previous and "://" not in config.previous:
        local.append(f"--previous {config.previous}")
    if config.taxonomy_path and "://" not in config.taxonomy_path:
        local.append(f"--taxonomy {config.taxonomy_path}")
    local += sorted({f"{'--multitask-model' if m.head else flag(m.task)} {m.path}" for m in config.models
                     if "://" not in m.path and not m.path.startswith(DEFAULT_PREFIX)})  # shipped: inside the image
    if local:
        raise ConfigError("on Dataflow these must be gs:// paths: " + "; ".join(local))


def _options(argv: list[str], *, offline: bool):
    """Pipeline options of the command line. ``offline``: with Beam's own ``--dry_run``, so that
    validating them does not look up credentials or bucket policies."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(argv + (["--dry_run=True"] if offline else []))


def _validated_pipeline(options):
    """An empty Beam pipeline on these options: Pipeline() validates Dataflow options (project
    id, paths, region...) on construction; its complaint becomes one line."""
    import apache_beam as beam

    from pipeline.options import ConfigError

    try:
        return beam.Pipeline(options=options)
    except ValueError as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc


def build(argv: list[str], *, offline: bool = True):
    """The Beam pipeline (not run) and RunConfig for a Dataflow command line (gs:// inputs and
    models are matched and read, which needs credentials; the options themselves do not)."""
    from pipeline.build import build_pipeline
    from pipeline.options import RunConfig

    options = _options(argv, offline=offline)
    config = RunConfig.from_options(options)
    p = _validated_pipeline(options)
    build_pipeline(p, config)
    return p, config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-enrich dataflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--temp-location", "--temp_location", dest="temp_location", required=True)
    parser.add_argument("--container-image", "--sdk_container_image", dest="container_image", required=True,
                        help="the worker image built from this repository's Dockerfile")
    parser.add_argument("--gpu-type", default="nvidia-tesla-t4")
    parser.add_argument("--gpu-count", type=int, default=1)
    parser.add_argument("--gpu-placement", default="job", choices=PLACEMENTS)
    parser.add_argument("--mps", action="store_true", help="share the GPU between SDK processes (NVIDIA MPS)")
    parser.add_argument("--machine-type", default="n1-standard-8")
    parser.add_argument("--max-workers", type=int, default=10)
    parser.add_argument("--inference-min-ram", default=None, help="e.g. 16GB (with --gpu-placement inference)")
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--setup-file", action="store_true",
                        help="also ship this checkout's code with --setup_file (code changed since the image)")
    parser.add_argument("--dry-run", action="store_true", help="build the graph and print the options; submit nothing")
    return parser


def main(argv: list[str]) -> int:
    from pipeline.build import build_pipeline
    from pipeline.job import run_pipeline
    from pipeline.options import RunConfig
    from pipeline.summary import format_summary

    args, rest = _parser().parse_known_args(argv)
    setup_file = Path(__file__).resolve().parents[1] / "setup.py"
    settings = DataflowSettings(
        project=args.project, region=args.region, temp_location=args.temp_location,
        container_image=args.container_image, gpu_type=args.gpu_type, gpu_count=args.gpu_count,
        gpu_placement=args.gpu_placement, mps=args.mps, machine_type=args.machine_type,
        max_workers=args.max_workers, inference_min_ram=args.inference_min_ram, job_name=args.job_name,
        setup_file=str(setup_file) if args.setup_file else None)
    full = dataflow_args(settings) + rest
    # Options and paths first (offline, cheap), before any input is matched; the config (model
    # cards included) is read once and the graph built once.
    offline = _options(full, offline=True)
    problem = _store_problem(offline, dry_run=args.dry_run)
    config = RunConfig.from_options(offline, match_remote=problem is None)
    p = _validated_pipeline(offline)
    check_remote_paths(config)
    if not args.dry_run:
        p = _validated_pipeline(_options(full, offline=False))
    build_pipeline(p, config)
    if args.dry_run:
        print("fashion-enrich run " + " ".join(shlex.quote(a) for a in full))
        hints = {t.full_label: t.resource_hints for t in _applied(p) if t.resource_hints}
        print(f"graph: {len(_applied(p))} transforms; resource hints: {hints or 'none'}")
        return 0
    result = run_pipeline(p, config)
    print(format_summary(result.manifest, result.seconds))
    return 0 if result.manifest["reconciled"] else 1


def _store_problem(options, *, dry_run: bool) -> str | None:
    """Whether the object store answers, asked in seconds before anything is matched or read.
    A submission refuses at once; a dry run goes on without checking that inputs exist (said
    on stderr), unless it must read a model card or taxonomy from the store."""
    import sys

    from pipeline.flags import MODEL_TASKS, NAMED_RETAILERS, FashionEnrichOptions
    from pipeline.options import ConfigError
    from runners.preflight import object_store_problem, remote_paths

    opts = options.view_as(FashionEnrichOptions)
    inputs = remote_paths([getattr(opts, name) for name in NAMED_RETAILERS] + list(opts.source or ()))
    needed = remote_paths([opts.taxonomy, opts.multitask_model] + [getattr(opts, f"{task}_model")
                                                                     for task in MODEL_TASKS])
    problem = object_store_problem(inputs + needed)
    if problem is None:
        return None
    if not dry_run or needed:
        what = "submit" if not dry_run else f"read {', '.join(needed)}"
        raise ConfigError(f"cannot reach the object store to {what}: {problem}")
    print(f"fashion-enrich dataflow: dry run: existence checks of the inputs skipped ({problem})", file=sys.stderr)
    return problem


def _applied(p) -> list:
    found = []

    class Visitor:
        def enter_composite_transform(self, node):
            found.append(node)

        def leave_composite_transform(self, node):
            pass

        def visit_transform(self, node):
            found.append(node)

        def visit_value(self, value, producer):
            pass

    p.visit(Visitor())
    return found
