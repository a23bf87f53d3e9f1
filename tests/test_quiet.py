"""Quiet by default: TensorFlow's native log lines never reach the terminal unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from pipeline.quiet import VERBOSE_ENV, filter_stream, is_noise, verbose_requested
from runners.cli import COMMANDS

# Lines TensorFlow 2.21 printed on this project's CPU machine, and two of the older format.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796172913.022767    2678 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1796172913.025693    2678 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "E0000 00:00:1796172917.689601    2678 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "W0000 00:00:1758131045.228 3722035 computation_placer.cc:177] computation placer already registered.",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers",
    "2025-09-17 14:44:05.176998: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:467] Unable to register "
    "cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered",
]
KEPT = [
    "Traceback (most recent call last):",
    "fashion-enrich run: error: input not found: /nope.jsonl",
    "WARNING apache_beam.runners.worker: a real Beam warning",
    "E0000 00:00:1796172917.689601    2678 op_kernel.cc:1840] OP_REQUIRES failed at save_restore: NOT_FOUND",
    "F0000 00:00:1796172917.689601    2678 check.cc:12] Check failed: x == y",
    "I0000 is not a log line",
]


@pytest.mark.parametrize("line", NOISE)
def test_native_noise_is_recognised(line):
    assert is_noise(line.encode())


@pytest.mark.parametrize("line", KEPT)
def test_real_messages_are_kept(line):
    assert not is_noise(line.encode())


def test_filter_stream_keeps_order_and_partial_lines():
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    text = "\n".join([NOISE[0], KEPT[0], NOISE[1], KEPT[1], NOISE[4]]) + "\n" + "no newline at the end"
    worker = threading.Thread(target=filter_stream, args=(read_end, out_write, 0.05))
    worker.start()
    for i in range(0, len(text), 7):  # arrives in small pieces, lines split across reads
        os.write(write_end, text[i:i + 7].encode())
    os.close(write_end)
    worker.join(timeout=10)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as fh:
        got = fh.read().decode()
    os.close(read_end)
    assert got == f"{KEPT[0]}\n{KEPT[1]}\nno newline at the end"


def test_verbose_flag_and_environment_variable(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert verbose_requested(["run", "--output", "x"]) == (False, ["run", "--output", "x"])
    assert verbose_requested(["-v", "run"]) == (True, ["run"])
    assert verbose_requested(["run", "--verbose", "--output", "x"]) == (True, ["run", "--output", "x"])
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert verbose_requested(["run"]) == (True, ["run"])
    monkeypatch.setenv(VERBOSE_ENV, "0")
    assert verbose_requested(["run"])[0] is False


_IMPORT_TF = "import sys; sys.argv = ['fashion-enrich'] + sys.argv[1:]; {quiet}import tensorflow as tf; " \
             "tf.config.list_physical_devices('GPU'); print('stderr still works', file=sys.stderr)"


@pytest.mark.slow
def test_tensorflow_import_is_silent_through_the_filter_and_loud_without_it():
    quiet = subprocess.run([sys.executable, "-c", _IMPORT_TF.format(
        quiet="from pipeline.quiet import quiet_native_logs; quiet_native_logs(); ")],
        capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "stderr still works\n"
    loud = subprocess.run([sys.executable, "-c", _IMPORT_TF.format(quiet="")],
                          capture_output=True, text=True, timeout=120)
    # Without the filter TensorFlow prints its native lines (the reason the filter exists); should a
    # TensorFlow release stop doing so, the quiet assertion above still holds.
    native = [line for line in loud.stderr.splitlines() if is_noise(line.encode())]
    assert loud.stderr.endswith("stderr still works\n") and (native or "oneDNN" not in loud.stderr)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_help_is_quiet(command):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", command, "--help"], capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != VERBOSE_ENV})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "--" in proc.stdout


def test_a_package_named_pipeline_in_the_current_folder_cannot_swallow_stderr(tmp_path):
    """The filter runs this file in isolated mode, so a user's own pipeline/ package in the
    folder they run from is not what the filter process imports."""
    shadow = tmp_path / "pipeline"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the user package, not fashion-enrich')\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {repo!r}); from pipeline.quiet import quiet_native_logs; "
            "quiet_native_logs(); print('E0000 00:00:1.2 1 cuda_platform.cc:52] failed call to cuInit', "
            "file=sys.stderr); print('an error the user must see', file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "an error the user must see\n"
