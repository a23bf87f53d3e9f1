"""Runners: the nightly DirectRunner job and the Dataflow GPU options, all offline.

The Dataflow graph is built with the Dataflow options and inspected (nothing contacts Google
Cloud); every transform and DoFn of the full graph pickles with both of Beam's picklers; the
Dockerfile's versions match the package pins; the nightly runner's exit code and summary are
checked on a catalog with many bad records.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.internal import cloudpickle_pickler, dill_pickler
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, PipelineOptions, WorkerOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.options import ConfigError
from pipeline.progress import LOGGER, LogProgress, _WorkerLogFilter
from runners.cli import main
from runners.dataflow import DataflowSettings, build, check_remote_paths, dataflow_args
from runners.nightly import EXIT_DEAD_LETTER, EXIT_FAILED, EXIT_OK, default_workers, direct_args

REPO = Path(__file__).resolve().parents[1]
ACCELERATOR_URN = "beam:resources:accelerator:v1"
MIN_RAM_URN = "beam:resources:min_ram_bytes:v1"


def settings(**overrides) -> DataflowSettings:
    base = dict(project="my-project", region="europe-west4", temp_location="gs://my-bucket/tmp",
                container_image="europe-west4-docker.pkg.dev/my-project/fe/fashion-enrich:0.1.0")
    return DataflowSettings(**{**base, **overrides})


def hints_by_transform(p: beam.Pipeline) -> dict[str, dict[str, bytes]]:
    """Transform label -> its resource hints, read from the portable proto the runner receives."""
    proto = p.to_runner_api()
    environments = proto.components.environments
    return {t.unique_name: dict(environments[t.environment_id].resource_hints) if t.environment_id else {}
            for t in proto.components.transforms.values() if t.unique_name}


def test_job_wide_gpu_options_are_dataflow_options():
    args = dataflow_args(settings(gpu_type="nvidia-l4", machine_type="g2-standard-8"))
    options = PipelineOptions(args)
    gcp = options.view_as(GoogleCloudOptions)
    assert gcp.project == "my-project" and gcp.region == "europe-west4"
    assert gcp.dataflow_service_options == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    assert "no_use_multiple_sdk_containers" in options.view_as(DebugOptions).experiments
    worker = options.view_as(WorkerOptions)
    assert worker.machine_type == "g2-standard-8" and worker.sdk_container_image.endswith("fashion-enrich:0.1.0")
    # With MPS, several SDK processes share the GPU: no single-container experiment.
    mps = PipelineOptions(dataflow_args(settings(mps=True)))
    assert mps.view_as(GoogleCloudOptions).dataflow_service_options[0].endswith(";use_nvidia_mps")
    assert "no_use_multiple_sdk_containers" not in (mps.view_as(DebugOptions).experiments or [])


def test_inference_placement_puts_the_gpu_hint_on_the_inference_step_only(samples):
    args = dataflow_args(settings(gpu_placement="inference", inference_min_ram="16GB")) + [
        "--zalando", str(samples / "zalando.jsonl"), "--output", "gs://my-bucket/enriched"]
    assert not any(a.startswith("--dataflow_service_options") for a in args)  # not with right fitting
    p, config = build(args)
    assert config.output == "gs://my-bucket/enriched"
    hints = hints_by_transform(p)
    scoring = {name: h for name, h in hints.items() if name.startswith("ScoreImages")}
    assert scoring and all(h.get(ACCELERATOR_URN) == b"type:nvidia-tesla-t4;count:1;install-nvidia-driver"
                           and h.get(MIN_RAM_URN) == b"16000000000" for h in scoring.values())
    others = {name: h for name, h in hints.items() if not name.startswith("ScoreImages")}
    assert any(name.startswith("LoadImages") for name in others)
    assert not any(ACCELERATOR_URN in h for h in others.values())  # fetch + decode stay on CPU workers


def test_dataflow_refuses_local_paths_and_bad_settings(samples):
    _, config = build(dataflow_args(settings()) + ["--zalando", str(samples / "zalando.jsonl"),
                                                   "--output", "/tmp/local-out"])
    with pytest.raises(ConfigError, match=r"gs:// paths: zalando input .*; --output /tmp/local-out"):
        check_remote_paths(config)
    with pytest.raises(ConfigError, match="temp-location"):
        settings(temp_location="/tmp")
    with pytest.raises(ConfigError, match="mps"):
        settings(gpu_placement="inference", mps=True)
    with pytest.raises(ConfigError, match="inference-min-ram applies"):
        settings(inference_min_ram="16GB")
    with pytest.raises(ConfigError, match="not a valid bucket name"):
        settings(temp_location="gs://b/tmp")  # Beam would go looking for a default bucket online


def test_dataflow_dry_run_prints_options_and_hints(samples, capsys):
    # A dry run builds the whole graph with Dataflow options: no credentials, no network.
    out = "gs://my-bucket/out"
    assert main(["dataflow", "--project", "p", "--region", "us-central1", "--temp-location", "gs://my-bucket/tmp",
                 "--container-image", "img:1", "--dry-run", "--output", out]) == 2
    assert "Invalid Project ID (p)" in capsys.readouterr().err  # Beam's own validation, as one line
    code = main(["dataflow", "--project", "my-project", "--region", "us-central1", "--temp-location", "gs://my-bucket/tmp",
                 "--container-image", "img:1", "--gpu-placement", "inference", "--dry-run",
                 "--source", f"myshop={samples / 'asos.jsonl'}:{REPO / 'schemas/mappings/asos.yaml'}",
                 "--output", out])
    assert code == 2  # the input is a local file: refused, in one line
    assert "must be gs:// paths: myshop input" in capsys.readouterr().err


def test_dataflow_dry_run_succeeds_and_shows_the_inference_hints(samples, capsys, monkeypatch):
    # Inputs on gs:// would be matched online; here the local sample passes the remote-path check.
    monkeypatch.setattr("runners.dataflow.check_remote_paths", lambda config: None)
    assert main(["dataflow", "--project", "my-project", "--region", "us-central1", "--temp-location",
                 "gs://my-bucket/tmp", "--container-image", "img:1", "--gpu-placement", "inference",
                 "--inference-min-ram", "16GB", "--dry-run", "--zalando", str(samples / "zalando.jsonl"),
                 "--output", "gs://my-bucket/out"]) == 0
    out = capsys.readouterr().out
    assert "--runner=DataflowRunner" in out and "--inference_accelerator=type:nvidia-tesla-t4;count:1" in out
    assert "'ScoreImages'" in out and "beam:resources:accelerator:v1" in out and "LoadImages" not in out.split(
        "resource hints:")[1]


def test_the_dataflow_options_object_also_runs_on_the_direct_runner(samples, tmp_path):
    """The same option set (GPU hint on inference) runs locally when the runner is swapped."""
    from pipeline.job import run_job

    args = [a for a in dataflow_args(settings(gpu_placement="inference")) if not a.startswith("--runner")]
    result = run_job(args + ["--runner=DirectRunner", "--zalando", str(samples / "zalando.jsonl"),
                             "--output", str(tmp_path / "out"), "--progress-interval", "0"])
    assert result.manifest["reconciled"]
    assert result.manifest["counts"]["images"]["zalando"] == 33


def test_dataflow_command_builds_its_graph_once_and_runs_it(samples, tmp_path, monkeypatch, capsys):
    """The submit path end to end, with the runner swapped for the DirectRunner: options and paths
    are checked first, then one graph is built (inputs and models read once) and run."""
    import pipeline.build

    monkeypatch.setattr("runners.dataflow.check_remote_paths", lambda config: None)  # local sample input
    built = []
    real = pipeline.build.build_pipeline
    monkeypatch.setattr(pipeline.build, "build_pipeline", lambda p, config: built.append(config) or real(p, config))
    out = tmp_path / "out"
    assert main(["dataflow", "--project", "my-project", "--region", "us-central1", "--temp-location",
                 "gs://my-bucket/tmp", "--container-image", "img:1", "--gpu-placement", "none",
                 "--zalando", str(samples / "zalando.jsonl"), "--output", str(out),
                 "--runner=DirectRunner", "--progress-interval", "0"]) == 0
    assert len(built) == 1
    manifest = json.loads(next((out / "manifests").rglob("*.json")).read_text())
    assert manifest["reconciled"] and manifest["counts"]["images"]["zalando"] == 33
    assert "reconciled" in capsys.readouterr().out.lower()


def all_transforms(p: beam.Pipeline) -> list:
    found = []

    class Visitor:
        def enter_composite_transform(self, node):
            found.append(node.transform)

        def leave_composite_transform(self, node):
            pass

        def visit_transform(self, node):
            found.append(node.transform)

        def visit_value(self, value, producer):
            pass

    p.visit(Visitor())
    return [t for t in found if t is not None]


@pytest.mark.parametrize("pickler", [dill_pickler, cloudpickle_pickler], ids=["dill", "cloudpickle"])
def test_every_transform_and_dofn_of_the_full_graph_pickles(pickler, samples):
    p, _ = build(["--output", "gs://bucket/out", "--image-cache", "gs://bucket/cache"])  # all models, samples
    transforms = all_transforms(p)
    assert len(transforms) > 50
    fns = [t.fn for t in transforms if isinstance(t, beam.ParDo)]
    assert any(type(fn).__name__ == "_ApplyScores" for fn in fns)
    assert any(type(fn).__name__ == "_CountAndLog" for fn in fns)
    for obj in transforms + fns:
        restored = pickler.loads(pickler.dumps(obj))
        assert type(restored).__qualname__ == type(obj).__qualname__  # local classes come back by value


def test_dockerfile_versions_match_the_package_pins():
    docker = (REPO / "Dockerfile").read_text()
    setup = (REPO / "setup.py").read_text()
    beam_version = re.search(r"^ARG BEAM_VERSION=(\S+)$", docker, re.M).group(1)
    python_version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", docker, re.M).group(1)
    low, high = re.search(r'"apache-beam\[gcp\]>=([\d.]+),<([\d.]+)"', setup).groups()
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(beam_version) < as_tuple(high)
    assert f'python_requires=">={python_version},<' in setup
    assert beam_version == beam.__version__  # the image runs the Beam the tests ran
    pins = dict(line.split("==") for line in (REPO / "runners/constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["apache-beam"] == beam_version
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in docker
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in docker
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in docker


def test_nightly_defaults_are_sized_to_the_machine_and_never_override_the_user():
    assert default_workers(cpus=16, memory_gib=64) == 16
    assert default_workers(cpus=16, memory_gib=9) == 4  # memory-bound: 2 GiB per worker
    assert default_workers(cpus=2, memory_gib=1) == 1
    args = direct_args(["--direct_num_workers=3", "--output", "x"], workers=8)
    assert "--direct_num_workers=8" not in args and "--direct_num_workers=3" in args
    assert "--direct_running_mode=multi_processing" in args and "--runner=DirectRunner" in args


@pytest.fixture
def mostly_bad_catalog(tmp_path, samples) -> Path:
    """Two good Zalando lines, then malformed lines and records without images."""
    shutil.copytree(samples / "images", tmp_path / "images")
    good = (samples / "zalando.jsonl").read_text().splitlines()[:2]
    bad = ["{not json"] * 4 + [json.dumps({"id": f"Z{i}", "name": "x", "categoryKeys": ["clothing"]})
                               for i in range(4)]
    dump = tmp_path / "zalando.jsonl"
    dump.write_text("\n".join(good + bad) + "\n")
    return dump


def test_nightly_exits_3_when_the_dead_letter_share_is_too_high(mostly_bad_catalog, tmp_path, capsys):
    common = ["--zalando", str(mostly_bad_catalog), "--output", str(tmp_path / "out"), "--workers", "1",
              "--models", "none",
              "--direct_running_mode", "in_memory"]
    assert main(["nightly", *common]) == EXIT_DEAD_LETTER
    out = capsys.readouterr().out
    assert "FAILED: dead-letter share" in out and "exceeds 5.0%" in out
    assert re.search(r"top dead-letter reasons: (MALFORMED_JSON 4, NO_IMAGES 4|NO_IMAGES 4, MALFORMED_JSON 4)", out)
    assert re.search(r"throughput: [\d.]+ images/s", out)
    # The same run under a looser threshold passes, and reports its share.
    assert main(["nightly", *common, "--max-dead-letter-share", "0.9"]) == EXIT_OK
    out = capsys.readouterr().out
    share = 8 / (8 + 4)  # 8 dead letters; 2 good lines -> 4 images
    assert f"OK: dead-letter share {share:.1%}" in out


def test_nightly_exits_4_when_the_job_itself_fails(samples, tmp_path, capsys):
    """A model whose archive has a config but no weights passes the launcher's checks and fails
    on the worker when it loads: a failed job, not a count problem."""
    import zipfile

    from pipeline.model_profiles import shipped_model_dir

    broken = tmp_path / "broken-model"
    shutil.copytree(shipped_model_dir("compact/category"), broken)
    with zipfile.ZipFile(shipped_model_dir("compact/category") / "model.keras") as src, \
            zipfile.ZipFile(broken / "model.keras", "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
    (broken / "model.onnx").unlink()  # else ONNX Runtime serves it (pipeline.onnx_engine) and nothing fails
    code = main(["nightly", "--zalando", str(samples / "zalando.jsonl"), "--output", str(tmp_path / "out"),
                 "--category-model", str(broken), "--models", "none",
                 "--direct_running_mode", "in_memory", "--progress-interval", "0"])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("fashion-enrich nightly: FAILED: ") and "Traceback" not in err


def test_progress_lines_in_process_and_from_workers(caplog, samples):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with TestPipeline() as p:
        _ = p | beam.Create(range(5)) | LogProgress("things", interval_s=0)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(re.match(r"progress \[worker \d+\] things: 4 so far", m) for m in lines), lines
    # How the multi-processing DirectRunner re-logs a worker's record: progress kept, chatter dropped.
    worker = logging.getLogger("apache_beam.runners.portability.local_job_service")

    def relogged(level, message):
        entry = f'severity: INFO timestamp {{ seconds: 1 }} message: "{message}" log_location: "x.py:1"'
        return worker.makeRecord(worker.name, level, "f", 1, "Worker: %s", (entry,), None)

    keep = relogged(logging.INFO, "progress [worker 7] images loaded: 10 so far, 5.0/s")
    assert _WorkerLogFilter().filter(keep) and keep.getMessage().startswith("progress [worker 7]")
    assert not _WorkerLogFilter().filter(relogged(logging.INFO, "BatchElements statistics: ..."))
    assert not _WorkerLogFilter().filter(relogged(logging.WARNING, "Resource module is not available for x"))
    real = relogged(logging.WARNING, "Could not load \\'model\\'")
    assert _WorkerLogFilter().filter(real) and real.getMessage() == "worker: Could not load 'model'"


def test_malloc_tuning_launcher_keeps_its_threshold_and_workers_get_their_engines(monkeypatch):
    import os
    import platform
    import subprocess
    import sys

    from pipeline import memory

    monkeypatch.setattr(memory, "_tuned", False)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert memory.tune_malloc(memory.LAUNCHER_MMAP_THRESHOLD) is glibc and memory._tuned is glibc
    memory.tune_child_processes("tensorflow")
    # TensorFlow workers keep glibc's dynamic threshold: nothing fixes one for them, two arenas each
    assert os.environ["MALLOC_ARENA_MAX"] == "2" and "MALLOC_MMAP_THRESHOLD_" not in os.environ
    assert memory.mmap_threshold(None) is None and memory.mmap_threshold(memory.LAUNCHER_MMAP_THRESHOLD) == 65536
    # a stage run in the launcher's own process does not undo the launcher's setting
    assert memory.tune_malloc() is glibc
    # a spawned worker: its first call applies the worker settings (no fixed threshold)
    probe = "from pipeline import memory; print(memory.tune_malloc(), memory._tuned, memory.mmap_threshold(None))"
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert seen == [str(glibc), str(glibc), "None"]
    memory.tune_child_processes("onnxruntime")  # ONNX Runtime workers: a fixed 1 MiB
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert seen == [str(glibc), str(glibc), str(1024 * 1024)]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")  # an operator's own setting fixes every kind
    memory.tune_child_processes("onnxruntime")
    assert memory.mmap_threshold(None) == memory.mmap_threshold(memory.LAUNCHER_MMAP_THRESHOLD) == 131072


def test_beams_memory_warning_is_dropped_and_other_warnings_kept():
    from pipeline.progress import _BenignFilter

    def record(msg: str, path: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, path, 1, msg, (), None)

    beam_base = "/site-packages/apache_beam/ml/inference/base.py"
    benign = "Resource module is not available for current platform, memory usage cannot be fetched."
    assert not _BenignFilter().filter(record(benign, beam_base))
    assert _BenignFilter().filter(record(benign, "/work/pipeline/inference.py"))  # only Beam's own
    assert _BenignFilter().filter(record("Model load failed", beam_base))
