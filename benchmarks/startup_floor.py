"""The shortest wall time any run of a catalog can have on this machine, from measured parts.

A run cannot score an image before (1) its launcher has imported Beam and the pipeline (the
workers are started after that), (2) a worker has imported TensorFlow, loaded the models and
traced the scoring function, and it cannot finish before (3) every image has been through the
models. Decoding, features, Beam's bookkeeping and writing may all overlap these, so they are
left out. Each part is measured on its own, on otherwise idle cores, in a fresh interpreter
where start-up is concerned, so each is a lower bound of its share of a real run:

* ``launcher_seconds``: a fresh interpreter importing Beam and ``pipeline.build``;
* ``models_ready_seconds``: a fresh interpreter loading the models as a worker does (the
  pipeline's ``KerasModelHandler``: TensorFlow and Keras imported, the exports loaded) and
  scoring one batch (the first call traces the scoring function);
* ``parallel_predict_seconds``: the same scoring function over all the images, split across
  worker processes with one TensorFlow thread per core each (as the run's workers score) and
  started together once loaded and traced; the floor takes the faster of this and the
  one-process ``model.predict`` of the issue's limit.

The floor is (1) + (2) + the faster predict; the best ratio any run can reach against the limit
(decode + predict, start-up excluded) is ``limit / floor``. Not a test: figures only.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _fresh_seconds(code: str, repeat: int) -> float:
    """Best wall time of ``python -c code`` in a new interpreter (interpreter start included);
    its stderr (TensorFlow's native start-up lines) is shown only when it fails."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"start-up probe failed ({done.returncode}):\n{done.stderr[-3000:]}")
        best = min(best, seconds)
    return best


def launcher_seconds(repeat: int = 3) -> float:
    return _fresh_seconds("import apache_beam, pipeline.build", repeat)


def load_scorer(folders: list[str], size: int, threads: int):
    """The models of ``folders`` behind the pipeline's scoring function, loaded as a worker loads them."""
    from pipeline.keras_handler import InferenceConfig, KerasModelHandler
    from pipeline.model_info import ModelInfo

    infos = tuple(info for folder in folders for info in ModelInfo.read_all(folder))
    return KerasModelHandler(infos, InferenceConfig(intra_op_threads=threads), size).load_model()


def models_ready_seconds(folders: list[str], size: int, repeat: int = 2) -> float:
    batch = f"np.zeros((64, {size}, {size}, 3), np.uint8)"
    code = (f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport numpy as np\n"
            f"from startup_floor import load_scorer\nload_scorer({folders!r}, {size}, 1)({batch})\n")
    return _fresh_seconds(code, repeat)


def _predict_worker(paths: list[str], folders: list[str], size: int, threads: int, ready, go, out,
                    log: str) -> None:
    os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)  # TensorFlow's native lines: shown on failure
    import numpy as np

    from pipeline.images import DecodeConfig, decode_and_preprocess

    cfg = DecodeConfig(size=size)
    batch = np.stack([decode_and_preprocess(Path(p).read_bytes(), cfg).array for p in paths])
    model = load_scorer(folders, size, threads)
    model(batch[:64])  # load and trace before the clock starts
    ready.put(True)
    go.wait()
    start = time.perf_counter()
    for i in range(0, len(batch), 64):  # the run's batches: at most 64 (InferenceConfig.max_batch_size)
        model(batch[i:i + 64])
    out.put(time.perf_counter() - start)


def parallel_predict_seconds(images: list[Path], folders: list[str], size: int, workers: int,
                             cores: int) -> float:
    """Wall seconds of ``predict`` over ``images`` split across ``workers`` processes that start
    together (each with ``cores // workers`` TensorFlow threads), models loaded beforehand."""
    ctx = mp.get_context("spawn")  # no TensorFlow state inherited from this process
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    paths = [str(p) for p in images]
    with tempfile.TemporaryDirectory() as logs:
        procs = [ctx.Process(target=_predict_worker, args=(paths[i::workers], folders, size, max(1, cores // workers),
                                                          ready, go, out, os.path.join(logs, f"{i}.log")))
                 for i in range(workers)]
        for proc in procs:
            proc.start()
        waiting = len(procs)
        while waiting:
            try:
                ready.get(timeout=1)
                waiting -= 1
            except queue.Empty:
                failed = [i for i, proc in enumerate(procs) if proc.exitcode not in (None, 0)]
                if failed:
                    for proc in procs:
                        proc.kill()
                    raise RuntimeError("a predict worker failed:\n"
                                       + Path(logs, f"{failed[0]}.log").read_text()[-3000:]) from None
        go.set()
        seconds = max(out.get(timeout=3600) for _ in procs)
        for proc in procs:
            proc.join()
    return seconds


def floor_line(n: int, limit_s: float, launch_s: float, ready_s: float, predict_s: float,
               parallel_s: float, workers: int) -> str:
    """The figures, the floor and the best ratio it leaves, as one printed line."""
    fastest = min(predict_s, parallel_s)
    floor = launch_s + ready_s + fastest
    return (f"floor for {n} images: launcher imports {launch_s:.1f} s + models ready in a fresh worker "
            f"{ready_s:.1f} s + predict {fastest:.1f} s (one process {predict_s:.1f} s, {workers} processes "
            f"{parallel_s:.1f} s) = {floor:.1f} s: no run can beat a ratio of {limit_s / floor:.2f} "
            f"against the limit's {limit_s:.1f} s")
