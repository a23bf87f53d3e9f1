"""Quiet by default: TensorFlow's native start-up lines are filtered out of the CLI's stderr.

TensorFlow (and XLA, absl, oneDNN) log from C++ before ``absl::InitializeLog()`` is called, so
those lines go straight to file descriptor 2 and ``TF_CPP_MIN_LOG_LEVEL`` does not silence them
(tensorflow/tensorflow#100442). On a CPU machine every process that imports TensorFlow (the CLI
and each DirectRunner worker) prints about eight of them, one an ``E`` line about ``cuInit``.

:func:`quiet_native_logs` points descriptor 2 at a pipe read by a small filter process
(this file run as a script) that drops absl/glog INFO and WARNING lines and the known-benign
CUDA errors of a machine without a GPU, and passes everything else through: Python tracebacks,
Beam's warnings, ``F``/other ``E`` lines. Worker processes inherit the descriptor, so their lines
are filtered too. The filter is a process, not a thread, so a crash of the CLI still reaches the
terminal (the filter drains the pipe until every writer has closed it).

Python-side, TensorFlow's and absl's loggers report errors only (:func:`quiet_python_loggers`).
``fashion-enrich -v`` / ``--verbose`` or ``FASHION_ENRICH_VERBOSE=1`` leaves both untouched.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import signal
import subprocess
import sys

VERBOSE_ENV = "FASHION_ENRICH_VERBOSE"

# absl / glog: "I0000 00:00:1796172913.022767    2678 port.cc:153] ..." (I, W; E/F kept unless benign)
_ABSL = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s\]]+:\d+\] ?(.*)$")
# TensorFlow's own older format: "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ..."
_TF = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) [^\s\]]+:\d+\] ?(.*)$")
# Lines that are not log records but always come with the ones above.
_PLAIN = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
          b"To enable the following instructions:")
# E lines that only say "this machine has no GPU" or that a CUDA plugin registered twice.
_BENIGN_ERRORS = re.compile(rb"failed call to cuInit|Unable to register cu\w+ factory|"
                            rb"CUDA_ERROR_NO_DEVICE|no CUDA-capable device")


def is_noise(line: bytes) -> bool:
    """True for a native TensorFlow/absl line the CLI hides by default (``line`` without newline)."""
    line = line.rstrip(b"\r\n")
    if line.startswith(_PLAIN):
        return True
    found = _ABSL.match(line) or _TF.match(line)
    if not found:
        return False
    severity, message = found.groups()
    return severity in (b"I", b"W") or (severity == b"E" and bool(_BENIGN_ERRORS.search(message)))


# Python loggers whose warnings are library chatter in a CLI run (TFT's "instance dicts" notes,
# tf.function retracing, Keras' compiled-metrics notes); errors still show.
CHATTY_LOGGERS = ("tensorflow", "absl")


def quiet_python_loggers() -> None:
    """Only errors from TensorFlow's and absl's Python loggers (verbose leaves them as they are)."""
    import logging

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def verbose_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """``(verbose, argv without -v/--verbose)``; the environment variable also turns it on."""
    rest = [a for a in argv if a not in ("-v", "--verbose")]
    env = os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return env or len(rest) != len(argv), rest


def filter_stream(source: int, sink: int, flush_after_s: float = 0.2) -> None:
    """Copy ``source`` to ``sink`` line by line without the noise lines, until end of file.

    A partial line (no newline yet) is passed on once nothing more arrived for ``flush_after_s``.
    """
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], flush_after_s if pending else None)
        if not ready:
            os.write(sink, pending)
            pending = b""
            continue
        chunk = os.read(source, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if kept:
            os.write(sink, kept)
    if pending and not is_noise(pending):
        os.write(sink, pending)


def quiet_native_logs() -> bool:
    """Route this process's (and its children's) descriptor 2 through the filter process.

    Returns False where stderr is not a descriptor this can redirect (nothing changes then).
    """
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False
    read_end, write_end = os.pipe()
    # This file run as a script in isolated mode: stdlib imports only, so no package on the
    # current folder's path (a user's own "pipeline/") can shadow it and leave stderr unread.
    proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], stdin=read_end, stdout=original,
                            close_fds=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # our last reference to the pipe: the filter sees end of file
        os.close(original)
        try:
            proc.wait(timeout=2.0)  # a lingering child may still hold the pipe; the filter outlives us then
        except subprocess.TimeoutExpired:
            pass

    atexit.register(restore)
    return True


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the CLI; the filter drains what it prints
    filter_stream(0, 1)
