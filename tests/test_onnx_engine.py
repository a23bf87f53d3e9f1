"""ONNX Runtime as the inference engine: an export's model.onnx written and checked against the
Keras model (models.onnx_export), the engine resolved per run (pipeline.onnx_engine), and the
same model handler scoring alike through both engines. Tiny real exports, random weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.onnx_export import probe_batch, write_onnx  # noqa: E402
from pipeline.inference_config import InferenceConfig  # noqa: E402
from pipeline.keras_handler import KerasModelHandler  # noqa: E402
from pipeline.model_info import ModelInfo  # noqa: E402
from pipeline.onnx_engine import block_mean, onnx_ready, resolve_engine  # noqa: E402
from pipeline.tf_engine import downscale  # noqa: E402
from tests.test_multitask_serving import export_multitask_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = export_multitask_tiny(tmp_path_factory.mktemp("onnx") / "export")
    entry = write_onnx(folder)
    return folder, entry


def test_export_gets_a_checked_model_onnx(export):
    folder, entry = export
    assert entry["file"] == "model.onnx" and (Path(folder) / "model.onnx").is_file()
    assert 0 <= entry["max_abs_diff"] <= 1e-4
    card = json.loads((Path(folder) / "model_card.json").read_text())
    assert card["onnx"] == entry
    assert all(onnx_ready(info) is None for info in ModelInfo.read_all(folder))


def test_both_engines_score_every_head_alike(export):
    folder, _ = export
    infos = tuple(ModelInfo.read_all(folder))
    batch = list(probe_batch(32, n=12, seed=3))
    scores = {}
    for engine in ("tensorflow", "onnxruntime"):
        handler = KerasModelHandler(infos, InferenceConfig(engine=engine, intra_op_threads=1))
        results = handler.run_inference(batch, handler.load_model())
        scores[engine] = [r.inference for r in results]
    for tf_scores, onnx_scores in zip(scores["tensorflow"], scores["onnxruntime"], strict=True):
        assert len(tf_scores) == len(infos) == 5
        for a, b in zip(tf_scores, onnx_scores, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)  # calibrated scores, every head
            assert a.argmax() == b.argmax()


def test_a_model_that_scores_otherwise_gets_no_onnx_file_and_runs_on_tensorflow(tmp_path):
    folder = export_multitask_tiny(tmp_path / "export")
    entry = write_onnx(folder, tolerance=-1.0)  # no difference passes
    assert entry["file"] is None and "differ" in entry["reason"]
    assert not (Path(folder) / "model.onnx").exists()
    infos = tuple(ModelInfo.read_all(folder))
    engine, why = resolve_engine("auto", infos, 32, local=True)
    assert engine == "tensorflow" and "differ" in why
    with pytest.raises(ValueError, match="--engine onnxruntime"):
        resolve_engine("onnxruntime", infos, 32, local=True)


def test_auto_keeps_tensorflow_on_remote_runners_and_for_uneven_sizes(export):
    folder, _ = export
    infos = tuple(ModelInfo.read_all(folder))
    assert resolve_engine("auto", infos, 32, local=True)[0] == "onnxruntime"
    assert resolve_engine("auto", infos, 64, local=True)[0] == "onnxruntime"  # a 2x block mean
    assert resolve_engine("auto", infos, 32, local=False)[0] == "tensorflow"
    assert resolve_engine("onnxruntime", infos, 32, local=False)[0] == "onnxruntime"  # asked for by name
    assert resolve_engine("auto", infos, 48, local=True)[0] == "tensorflow"
    assert resolve_engine("tensorflow", infos, 32, local=True)[0] == "tensorflow"
    with pytest.raises(ValueError):
        resolve_engine("torch", infos, 32, local=True)


def test_block_mean_is_tensorflows_area_downscale_for_whole_factors():
    batch = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    for size in (32, 16):
        np.testing.assert_array_equal(block_mean(batch, size), np.asarray(downscale(batch, size)))


def test_an_onnx_worker_never_imports_tensorflow(export):
    folder, _ = export
    code = ("import sys, numpy as np\n"
            "from pipeline.inference_config import InferenceConfig\n"
            "from pipeline.keras_handler import KerasModelHandler\n"
            "from pipeline.model_info import ModelInfo\n"
            f"infos = tuple(ModelInfo.read_all({folder!r}))\n"
            "h = KerasModelHandler(infos, InferenceConfig(engine='onnxruntime'))\n"
            "out = h.run_inference([np.zeros((32, 32, 3), np.uint8)] * 3, h.load_model())\n"
            "assert len(out) == 3 and len(out[0].inference) == 5\n"
            "print('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_onnx_command_adds_the_file(tmp_path):
    folder = export_multitask_tiny(tmp_path / "export")
    done = subprocess.run([sys.executable, "-m", "runners.cli", "onnx", folder], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model.onnx written" in done.stdout and (Path(folder) / "model.onnx").is_file()
