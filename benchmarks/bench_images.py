"""Image stage benchmarks: prints figures and ratios (not a test; nothing is asserted).

1. Decode + preprocess: the ``LoadImages`` Beam stage on the DirectRunner over the Myntra
   images (local files) against a bare loop doing the same work (read bytes,
   ``decode_and_preprocess``) in the same run, at equal parallelism: 1 worker vs one process,
   and 2 workers (multi-processing DirectRunner) vs a 2-process pool. The same on
   retailer-sized 1500x2000 JPEGs made from Myntra photos, at 299 px.
2. Fetch: the same stage over HTTP from a local server that answers after 50 ms, against
   the latency-bound limit ``concurrency / latency``.

    python benchmarks/bench_images.py [--data ../shared/data] [--size 224]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline.images import DecodeConfig, FetchConfig, LoadImages, decode_and_preprocess
from pipeline.images.fetch import Fetcher
from pipeline.records import ImageRecord

ROOT = Path(__file__).resolve().parents[1]


def record(uri: str) -> ImageRecord:
    return ImageRecord(retailer="bench", product_id=uri.rsplit("/", 1)[-1], image_position=1, image_uri=uri,
                       source_file="bench", source_line=1)


def run_stage(uris: list[str] | str, fetch: FetchConfig, decode: DecodeConfig, workers: int,
              decode_threads: int = 1) -> tuple[float, int]:
    """Wall seconds of a pipeline that loads every image and counts the arrays.

    ``uris`` is a list, or a file pattern matched inside the pipeline (as sources do: a
    9,500-element ``Create`` would spend seconds pickling its payload into the graph).
    """
    args = ["--direct_num_workers", str(workers)]
    if workers > 1:
        args += ["--direct_running_mode", "multi_processing"]
    result: dict = {}
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        if isinstance(uris, str):
            found = p | fileio.MatchFiles(uris) | beam.Map(lambda m: m.path)
        else:
            found = p | beam.Create(uris)
        records = found | beam.Reshuffle() | beam.Map(record)
        if decode_threads == 0:  # baseline: the same graph without the image stage
            out = {"images": records | beam.Map(lambda r: (r, None))}
        else:
            out = records | LoadImages(fetch, decode, decode_threads=decode_threads)
        counted = out["images"] | beam.combiners.Count.Globally()
        if workers == 1:  # in-process runner: read the count back
            counted | beam.Map(lambda n: result.__setitem__("n", n))
    return time.perf_counter() - start, result.get("n", -1)


def _loop_one(args) -> int:
    path, size = args
    with open(path, "rb") as fh:
        decode_and_preprocess(fh.read(), DecodeConfig(size=size))
    return 1


def run_loop(paths: list[str], size: int, processes: int) -> float:
    start = time.perf_counter()
    if processes == 1:
        for path in paths:
            _loop_one((path, size))
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            sum(pool.imap_unordered(_loop_one, [(p, size) for p in paths], chunksize=32))
    return time.perf_counter() - start


def bench_decode(folder: Path, size: int, title: str, repeat: int) -> None:
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    fetch = FetchConfig(allowed_roots=(str(folder),))
    decode = DecodeConfig(size=size)
    pattern = str(folder / "*.jpg")
    print(f"\n== decode + preprocess: {len(paths)} {title} -> {size}x{size} (best of {repeat}) ==")
    loops = {n: len(paths) / min(run_loop(paths, size, n) for _ in range(repeat)) for n in (1, 2)}
    base = {w: min(run_stage(pattern, fetch, decode, w, 0)[0] for _ in range(repeat)) for w in (1, 2)}
    print(f"pipeline without the image stage (start-up + listing): {base[1]:.1f} s in-process, "
          f"{base[2]:.1f} s multi-processing")
    print(f"{'configuration':<46} {'img/s':>7} {'bare loop':>9}  ratio  (ratio without start-up)")
    for label, workers, threads, parallel in (("1 worker, 1 decode thread", 1, 1, 1),
                                               ("2 workers (multi-processing), 1 thread each", 2, 1, 2),
                                               ("1 worker, 2 decode threads (default)", 1, 2, 2)):
        stage_s = min(run_stage(pattern, fetch, decode, workers, threads)[0] for _ in range(repeat))
        ips, steady = len(paths) / stage_s, len(paths) / max(1e-9, stage_s - base[workers])
        print(f"{label:<46} {ips:7.1f} {loops[parallel]:9.1f}  {ips / loops[parallel]:5.2f}  "
              f"({steady / loops[parallel]:.2f})")


def make_large(data: Path, count: int, out: Path) -> Path:
    """Retailer-sized JPEGs (1500x2000, quality 90) upscaled from Myntra photos."""
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted((data / "myntra" / "images").glob("*.jpg"))[:count]:
        target = out / src.name
        if not target.exists():
            Image.open(src).convert("RGB").resize((1500, 2000), Image.Resampling.BICUBIC).save(target, quality=90)
    return out


def _serve(port_queue, body: bytes, latency: float, seconds: float) -> None:
    """A 50 ms-latency image server, in its own process so it does not share the GIL."""

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every response

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    threading.Timer(seconds, server.shutdown).start()  # bounded: stops by itself
    server.serve_forever()
    server.server_close()


def bench_fetch(data: Path, count: int, latency: float, concurrency: int) -> None:
    body = next((data / "myntra" / "images").glob("*.jpg")).read_bytes()
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports, body, latency, 300.0), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=30)
        uris = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(count)]
        fetch = FetchConfig(concurrency=concurrency, allow_private_addresses=True)
        limit = concurrency / latency
        fetcher = Fetcher(fetch)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            sum(1 for _ in pool.map(fetcher.fetch, uris))
        bare = count / (time.perf_counter() - start)
        seconds, n = run_stage(uris, fetch, DecodeConfig(size=224), workers=1, decode_threads=2)
        print(f"\n== fetch over HTTP, {latency * 1000:.0f} ms latency, concurrency {concurrency} per DoFn ==")
        print(f"latency-bound limit {limit:.0f} img/s; bare Fetcher on a {concurrency}-thread pool {bare:.1f} img/s "
              f"(ratio {bare / limit:.2f})")
        print(f"Beam LoadImages (fetch + decode, wall incl. start-up): {count} images in {seconds:.1f} s = "
              f"{count / seconds:.1f} img/s; ratio to the limit {count / seconds / limit:.2f}")
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fetch-count", type=int, default=640)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    parser.add_argument("--only", choices=("decode", "large", "fetch"), default=None)
    parser.add_argument("--large", type=int, default=300, help="retailer-sized images for the large benchmark")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Beam {beam.__version__}")
    data = Path(args.data)
    if args.only in (None, "decode"):
        bench_decode(data / "myntra" / "images", args.size, "Myntra JPEGs (mostly 224x300)", args.repeat)
    if args.only in (None, "large"):
        folder = make_large(data, args.large, Path(tempfile.gettempdir()) / "fashion-enrich-bench-large")
        bench_decode(folder, 299, "retailer-sized 1500x2000 JPEGs", args.repeat)
    if args.only in (None, "fetch"):
        bench_fetch(Path(args.data), args.fetch_count, args.latency, args.concurrency)


if __name__ == "__main__":
    main()
