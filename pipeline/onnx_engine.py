"""The inference engine: TensorFlow, or ONNX Runtime where every export ships a checked ``model.onnx``.

``--engine auto`` (the default) resolves in the launcher (:func:`resolve_engine`):

* ``onnxruntime`` on a local runner when every model's export has a ``model.onnx`` its card
  vouches for (:mod:`models.onnx_export`: scores within 1e-4 of the Keras model's) and each
  smaller model's input divides the run's array size (its copy is a block mean, as TensorFlow's
  area resize makes it for whole factors). The shipped default is ~2x faster this way on one CPU
  thread, and its workers never import TensorFlow;
* ``tensorflow`` otherwise, and always on Dataflow and other remote runners, whose GPU workers
  run the Keras models through TensorFlow.

``--engine tensorflow`` or ``onnxruntime`` forces one; ``onnxruntime`` for models without the
file fails the run at start, in one line. :class:`OnnxScorer` stands in for the TensorFlow
``Scorer`` behind the same model handler (batches, calibration and failure isolation unchanged).
"""

from __future__ import annotations

import json
import os

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.inference_config import ENGINES as RUN_ENGINES
from pipeline.model_info import ModelInfo, resolve_model_path

ENGINES = ("auto", *RUN_ENGINES)  # what --engine accepts
ONNX_FILE = "model.onnx"  # models.onnx_export writes it; the card's "onnx" entry vouches for it


def onnx_ready(info: ModelInfo) -> str | None:
    """None when ``info``'s export has a checked ``model.onnx``, else why not (one phrase)."""
    folder = resolve_model_path(info.path)
    try:
        with FileSystems.open(FileSystems.join(folder, "model_card.json"), compression_type="uncompressed") as fh:
            entry = json.load(fh).get("onnx") or {}
    except (OSError, ValueError) as exc:
        return f"its card cannot be read ({type(exc).__name__})"
    if entry.get("file") != ONNX_FILE:
        return entry.get("reason") or "its export has no model.onnx (fashion-enrich onnx adds one)"
    if not FileSystems.exists(FileSystems.join(folder, ONNX_FILE)):
        return "its card names model.onnx but the file is missing"
    return None


def resolve_engine(requested: str, models: tuple[ModelInfo, ...], image_size: int, local: bool) -> tuple[str, str]:
    """(engine, why) for the run's models: see the module docstring. ValueError when
    ``onnxruntime`` is requested and cannot serve them."""
    if requested not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}")
    if not models or requested == "tensorflow":
        return "tensorflow", "requested" if models else "no models"
    if requested == "auto" and not local:
        return "tensorflow", "a remote runner (GPU workers run TensorFlow)"
    blocker = _blocker(models, image_size)
    if blocker is None:
        return "onnxruntime", "every export has a checked model.onnx"
    if requested == "onnxruntime":
        raise ValueError(f"--engine onnxruntime: {blocker}")
    return "tensorflow", blocker


def _blocker(models: tuple[ModelInfo, ...], image_size: int) -> str | None:
    """Why ONNX Runtime cannot serve ``models`` at ``image_size`` (the first reason), or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    for info in models:
        if image_size % info.image_size:
            return f"{info.model_id} takes {info.image_size} px, not a whole fraction of {image_size} px"
        if (why := onnx_ready(info)) is not None:
            return f"{info.model_id}: {why}"
    return None


def block_mean(batch: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, s, s, 3) -> (n, size, size, 3), ``s`` a multiple of ``size``: the mean of each
    block, rounded half to even, as TensorFlow's area resize and round give for a whole factor."""
    n, s = batch.shape[0], batch.shape[1]
    k = s // size
    blocks = batch.reshape(n, size, k, size, k, 3).astype(np.float32)
    return np.clip(np.round(blocks.mean(axis=(2, 4))), 0, 255).astype(np.uint8)


class OnnxScorer:
    """The exports' ``model.onnx`` in ONNX Runtime sessions, called like the TensorFlow ``Scorer``:
    a uint8 batch at ``image_size`` -> one score array per pick (``(model index, None)``: the
    model's single output; ``(model index, head)``: that head's output)."""

    def __init__(self, folders: list[str], image_size: int, sizes: list[int], picks: list[tuple[int, str | None]],
                 threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
        options.inter_op_num_threads = 1
        self.models = [ort.InferenceSession(os.path.join(folder, ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"]) for folder in folders]
        self._inputs = [session.get_inputs()[0].name for session in self.models]
        self._names = [[o.name for o in session.get_outputs()] for session in self.models]
        self._image_size, self._sizes, self._picks = image_size, list(sizes), list(picks)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        copies = {self._image_size: np.ascontiguousarray(batch, dtype=np.uint8)}
        outputs = []
        for session, name, size in zip(self.models, self._inputs, self._sizes, strict=True):
            if size not in copies:
                copies[size] = block_mean(copies[self._image_size], size)
            outputs.append(session.run(None, {name: copies[size]}))
        return [outputs[i][0] if head is None else outputs[i][self._names[i].index(head)] for i, head in self._picks]
