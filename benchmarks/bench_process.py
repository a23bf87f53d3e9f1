"""Whole-process throughput: ``fashion-enrich run`` against the bare script doing the same work
without Beam (``bare_run.py``: TensorFlow, the limit as first defined, and ONNX Runtime, the
engine the run uses by default), in turn, ``--pairs`` times; wall, user and system time of each
process tree (``getrusage(RUSAGE_CHILDREN)`` around each, so every worker it reaped counts).
Prints every round, the medians and the ratios (bare wall / run wall: 1.0 is the bare limit).

    python benchmarks/bench_process.py --pairs 3                  # all 9,523 Myntra images
    python benchmarks/bench_process.py --pairs 3 --images 2000
    python benchmarks/bench_process.py --pairs 3 --run-args="--engine tensorflow"
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_enrich import write_catalog  # benchmarks/, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def timed(command: list[str]) -> tuple[float, float, float]:
    """(wall, user, system) seconds of one command and every process it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{shlex.join(command[:4])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def line(name: str, figures: tuple[float, float, float], n: int) -> str:
    wall, user, system = figures
    return f"{name:<22} wall {wall:6.1f} s ({n / wall:6.1f} img/s), user {user:6.1f} s, system {system:5.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--images", type=int, default=0, help="first N Myntra images (0: all)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--run-args", default="", help="more arguments for the runs")
    parser.add_argument("--bare-engines", default="tensorflow,onnxruntime", help="comma-separated bare scripts")
    args = parser.parse_args()
    folder = Path(args.data) / "myntra" / "images"
    images = sorted(folder.glob("*.jpg"))
    images = images[: args.images] if args.images else images
    n = len(images)
    work = Path(tempfile.mkdtemp(prefix="fashion-enrich-process-"))
    dump = write_catalog(work / "catalog", images, n)
    listing = work / "images.txt"
    listing.write_text("\n".join(str(p) for p in images))
    run = [sys.executable, "-m", "runners.cli", "run", "--source", f"bench={dump}:{dump.parent / 'bench.yaml'}",
           "--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.workers),
           "--allowed-root", str(folder), "--progress-interval", "0", *shlex.split(args.run_args)]
    bare = [sys.executable, str(HERE / "bare_run.py"), "--list", str(listing), "--workers", str(args.workers)]
    engines = [e for e in args.bare_engines.split(",") if e]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} Myntra images, {args.workers} workers; run arguments: {args.run_args or '(none)'}")
    runs, bares = [], {engine: [] for engine in engines}
    for i in range(args.pairs):
        runs.append(timed([*run, "--output", str(work / f"out{i}")]))
        print(f"round {i + 1}: {line('run', runs[-1], n)}", flush=True)
        for engine in engines:
            bares[engine].append(timed([*bare, "--engine", engine]))
            print(f"         {line(f'bare {engine}', bares[engine][-1], n)}", flush=True)
    med_run = _median(runs)
    print(f"median of {args.pairs}: {line('run', med_run, n)}")
    for engine, figures in bares.items():
        med = _median(figures)
        print(f"              {line(f'bare {engine}', med, n)}\n"
              f"  ratio against bare {engine} (bare wall / run wall): {med[0] / med_run[0]:.2f}; system time run / "
              f"bare: {med_run[2] / max(med[2], 1e-9):.2f}x; user time run / bare: {med_run[1] / med[1]:.2f}x")


def _median(figures: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return tuple(statistics.median(f[k] for f in figures) for k in range(3))

if __name__ == "__main__":
    main()
