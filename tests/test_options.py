"""RunConfig: validation and a JSON round trip (what runners ship to workers and manifests)."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import ConfigError, RunConfig
from pipeline.source_config import samples_dir

NO_MODELS = ("--models", "none")


def config(*argv: str) -> RunConfig:
    return RunConfig.from_options(PipelineOptions(list(argv)))


def test_defaults_use_the_shipped_samples_and_their_folder_as_the_allowed_root(tmp_path):
    cfg = config("--output", str(tmp_path))
    assert cfg.retailers == ("zalando", "asos", "farfetch")
    assert cfg.fetch.allowed_roots == (str(samples_dir()),)
    assert not cfg.fetch.allow_private_addresses  # the SSRF guard is on by default
    sizes = {m.image_size for m in cfg.models}
    assert cfg.decode.size == (sizes.pop() if sizes else 224)  # the shipped models set the size
    assert cfg.output == str(tmp_path)





def test_json_round_trip(tmp_path):
    cfg = config("--output", str(tmp_path), "--run-date", "2026-04-05", "--image-size", "128", *NO_MODELS,
                 "--fetch-retries", "1", "--allowed-root", str(tmp_path), "--decode-threads", "3")
    assert cfg.decode.size == 128 and cfg.models == ()
    assert RunConfig.from_json(cfg.to_json()) == cfg
    with_models = config("--output", str(tmp_path), "--min-category-confidence", "0.3", "--max-batch-size", "16")
    assert RunConfig.from_json(with_models.to_json()) == with_models


def test_image_size_must_match_the_models(tmp_path):
    cfg = config("--output", str(tmp_path))
    if not cfg.models:
        pytest.skip("no default models shipped")
    with pytest.raises(ConfigError, match="differs from the models"):
        config("--output", str(tmp_path), "--image-size", str(cfg.decode.size + 8))


def test_models_of_different_sizes_decode_at_the_largest(tmp_path):
    """A 96 px category model beside the shipped (smaller) ones: the images are decoded at 96 px
    and the smaller models score a downscaled copy (pipeline.tf_engine.Scorer)."""
    from models.architectures import ModelSpec, build_model
    from models.export import export_model

    shipped = config("--output", str(tmp_path), "--models", "compact")
    if not shipped.models:
        pytest.skip("no compact models shipped")
    spec = ModelSpec("custom_cnn", image_size=96, num_outputs=2, width=4)
    export_model(build_model(spec), out=str(tmp_path / "cat96"), spec=spec, task="category",
                 classes=["DRESSES", "JEANS"], data_dir=str(tmp_path), train_config={}, metrics={}, wall_seconds=0.0)
    cfg = config("--output", str(tmp_path), "--models", "compact", "--category-model", str(tmp_path / "cat96"))
    assert cfg.decode.size == 96 and sorted(m.image_size for m in cfg.models)[-1] == 96
    assert min(m.image_size for m in cfg.models) < 96
    with pytest.raises(ConfigError, match="largest"):
        config("--output", str(tmp_path), "--models", "compact", "--category-model", str(tmp_path / "cat96"),
               "--image-size", "64")


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "4", *NO_MODELS], "size"),
    (["--fetch-concurrency", "0"], "concurrency"),
    (["--decode-threads", "0"], "decode-threads"),
    (["--shards-per-partition", "0"], "shards"),
])
def test_invalid_values_are_config_errors(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        config("--output", str(tmp_path), *argv)


def test_each_multi_processing_worker_gets_its_share_of_the_cores(monkeypatch):
    """2 workers on 2 cores: one TensorFlow and one decode thread each (not 2 + 2 apiece, which
    oversubscribes the cores); one process, or another runner: TensorFlow's default, 2 decoders."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    four = config("--direct_running_mode", "multi_processing", "--direct_num_workers", "4")
    assert (four.decode_threads, four.inference.intra_op_threads) == (1, 1)
    two = config("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    assert (two.decode_threads, two.inference.intra_op_threads) == (2, 2)
    every_core = config("--direct_running_mode", "multi_processing", "--direct_num_workers", "0")
    assert every_core.decode_threads == 1
    one_process = config()
    assert (one_process.decode_threads, one_process.inference.intra_op_threads) == (2, 0)
    dataflow = config("--runner", "DataflowRunner", "--direct_running_mode", "multi_processing")
    assert (dataflow.decode_threads, dataflow.inference.intra_op_threads) == (2, 0)
    given = config("--direct_running_mode", "multi_processing", "--direct_num_workers", "4",
                   "--decode-threads", "3", "--tf-threads", "0")
    assert (given.decode_threads, given.inference.intra_op_threads) == (3, 0)
    shared_model = config("--direct_running_mode", "multi_processing", "--direct_num_workers", "2", "--large-model")
    assert (shared_model.decode_threads, shared_model.inference.intra_op_threads) == (2, 0)  # one model, all cores
