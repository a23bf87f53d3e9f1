"""The inference stage's settings (validated, frozen): batching, model sharing, threads, the
steps and the engine. Plain Python: the launcher reads it without TensorFlow or ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass

STEPS = ("combined", "per-model")
ENGINES = ("tensorflow", "onnxruntime")  # what a run uses; --engine auto resolves to one (pipeline.onnx_engine)


@dataclass(frozen=True)
class InferenceConfig:
    min_batch_size: int = 1
    max_batch_size: int = 64  # bounded: GPUs run out of memory on unbounded batches
    model_copies: int | None = None
    large_model: bool = False
    intra_op_threads: int = 0  # 0: the engine's default
    inter_op_threads: int = 0
    steps: str = "combined"  # one RunInference for all models, or one per model
    engine: str = "tensorflow"

    def __post_init__(self):
        if not 1 <= self.min_batch_size <= self.max_batch_size <= 4096:
            raise ValueError("need 1 <= min_batch_size <= max_batch_size <= 4096")
        if self.steps not in STEPS:
            raise ValueError(f"inference steps must be one of {STEPS}")
        if self.engine not in ENGINES:
            raise ValueError(f"the inference engine must be one of {ENGINES}")
