"""``model.onnx`` beside an export's ``model.keras``: the same network for ONNX Runtime, checked.

The pipeline scores with ONNX Runtime on CPU where an export has this file
(:mod:`pipeline.onnx_engine`): on the shipped multi-task model it is ~2x faster than TensorFlow
on one thread, and a worker that never imports TensorFlow is ready seconds sooner
(benchmarks/README.md). The file is written only when it scores like the Keras model:

1. the serving function (uint8 ``(n, size, size, 3)`` in, the model's output: one array, or one
   per head of a multi-task export, named after the head) is converted with ``tf2onnx``;
2. both score a probe batch (:func:`probe_batch`: seeded random pixels, flat colours, white);
   the largest absolute difference of any score must be ``<= tolerance`` (1e-4), else the file
   is removed and the card says why;
3. the card's ``onnx`` entry records the file, the opset, the difference measured and the
   versions that made it; a card without it (or with ``"file": null``) means TensorFlow only.

``fashion-enrich onnx FOLDER...`` adds the file to existing exports; training adds it to each
export it writes.
"""

from __future__ import annotations

import json
import os

from pipeline.onnx_engine import ONNX_FILE

OPSET = 17
TOLERANCE = 1e-4


def probe_batch(size: int, n: int = 16, seed: int = 0):
    """uint8 images the Keras and ONNX models must agree on: random pixels, flat colours, white."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    for i, value in enumerate((0, 127, 255)):
        batch[i] = value
    batch[3, :, :] = rng.integers(0, 256, 3, dtype=np.uint8)
    return batch


def _outputs(value, names: list[str]) -> dict:
    """A Keras output (an array, or a dict per head) as {name: numpy array}."""
    import numpy as np

    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return {names[0]: np.asarray(value)}


def write_onnx(folder: str, tolerance: float = TOLERANCE) -> dict:
    """Convert ``folder``'s ``model.keras`` to ``model.onnx``, check it on :func:`probe_batch`, and
    record the outcome as the card's ``onnx`` entry (returned). Never raises for a model that
    cannot be converted: the entry's ``file`` is null and ``reason`` says why."""
    import numpy as np

    from models.export import CARD

    card_path = os.path.join(folder, CARD)
    with open(card_path, encoding="utf-8") as fh:
        card = json.load(fh)
    target = os.path.join(folder, ONNX_FILE)
    try:
        entry = _convert_and_check(folder, int(card["image_size"]), target, tolerance, np)
    except Exception as exc:  # noqa: BLE001 - any conversion fault leaves the export TensorFlow-only
        entry = {"file": None, "reason": f"{type(exc).__name__}: {exc}"[:500]}
    if entry["file"] is None and os.path.exists(target):
        os.remove(target)
    card["onnx"] = entry
    with open(card_path, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
    return entry


def describe(entry: dict) -> str:
    """One line on a :func:`write_onnx` outcome."""
    if entry["file"]:
        return f"model.onnx written: scores within {entry['max_abs_diff']:.1e} of the Keras model's"
    return f"no model.onnx: {entry['reason']}"


def _convert_and_check(folder: str, size: int, target: str, tolerance: float, np) -> dict:
    import keras
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    import pipeline.model_layers  # noqa: F401 - registers the custom preprocessing layers

    model = keras.models.load_model(os.path.join(folder, "model.keras"), compile=False)
    signature = [tf.TensorSpec((None, size, size, 3), tf.uint8)]
    serve = tf.function(lambda x: model(x, training=False), autograph=False, input_signature=signature)
    tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET, output_path=target)
    batch = probe_batch(size)
    session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch}), strict=True))
    want = _outputs(serve(batch), names)
    if set(want) != set(got):
        return {"file": None, "reason": f"outputs {sorted(got)} are not the model's {sorted(want)}"}
    diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    entry = {"opset": OPSET, "max_abs_diff": diff, "tolerance": tolerance, "probe": f"{len(batch)} images",
             "tf2onnx": tf2onnx.__version__, "onnxruntime": ort.__version__}
    if not diff <= tolerance:
        return {"file": None, "reason": f"scores differ by {diff:.2e} (> {tolerance:g})", **entry}
    return {"file": ONNX_FILE, **entry}
