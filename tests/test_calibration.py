"""Temperature scaling and ECE on synthetic scores, and the pipeline applying a model's temperature."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.calibration import calibrate, expected_calibration_error, fit_temperature  # noqa: E402
from pipeline.temperature import apply_temperature, apply_to_outputs  # noqa: E402


def calibrated_world(n=6000, k=5, seed=0):
    """Scores that are calibrated by construction: labels drawn from the scores themselves."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, k))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return p, labels


def test_over_confident_scores_are_fixed_by_temperature():
    p, labels = calibrated_world()
    over = apply_temperature(p, 1 / 2.5)  # sharpened: the typical over-confident network
    before = expected_calibration_error(over, labels)
    result = calibrate(over, labels, fitted_on="synthetic")
    assert result["temperature"] == pytest.approx(2.5, rel=0.12)  # recovers the sharpening
    assert result["ece_after"] < before / 3 and result["ece_after"] < 0.03
    fixed = apply_temperature(over, result["temperature"])
    assert (fixed.argmax(axis=1) == over.argmax(axis=1)).all()  # accuracy unchanged
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0, rtol=1e-6)


def test_calibrated_scores_keep_a_temperature_near_one_and_a_small_ece():
    p, labels = calibrated_world(seed=1)
    assert fit_temperature(p, labels) == pytest.approx(1.0, abs=0.1)
    assert expected_calibration_error(p, labels) < 0.03


def test_sigmoid_outputs_follow_the_two_column_form():
    raw = np.array([[0.01], [0.3], [0.5], [0.9], [0.999]])
    two = np.concatenate([1 - raw, raw], axis=1)
    for t in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(apply_to_outputs(raw, t, sigmoid=True)[:, 0],
                                   apply_temperature(two, t)[:, 1], rtol=1e-5, atol=1e-6)
    softer = apply_to_outputs(raw, 3.0, sigmoid=True)
    assert (np.abs(softer - 0.5) <= np.abs(raw - 0.5) + 1e-9).all()  # T > 1 moves towards 0.5


def test_the_model_handler_applies_the_cards_temperature(tmp_path):
    from models.architectures import ModelSpec, build_model
    from models.export import export_model, load_exported
    from pipeline.keras_handler import KerasModelHandler
    from pipeline.model_info import ModelInfo

    spec = ModelSpec("custom_cnn", image_size=32, num_outputs=3, width=4)
    export_model(build_model(spec), out=str(tmp_path), spec=spec, task="gender", classes=["FEMALE", "MALE", "UNISEX"],
                 data_dir=str(tmp_path), train_config={}, metrics={}, wall_seconds=0.0,
                 calibration={"method": "temperature", "temperature": 2.0})
    info = ModelInfo.read(str(tmp_path))
    assert info.temperature == 2.0
    batch = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    handler = KerasModelHandler(info)
    scored = np.stack([r.inference[0] for r in handler.run_inference(batch, handler.load_model())])
    raw = load_exported(str(tmp_path))[0].predict(np.stack(batch), verbose=0)
    np.testing.assert_allclose(scored, apply_temperature(raw, 2.0), rtol=1e-4, atol=1e-6)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["calibration"]["temperature"] == 2.0
