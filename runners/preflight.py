"""Before a Dataflow launch: can this machine reach the object store at all? Answered in seconds.

Without credentials or network, Beam's GCS client retries each lookup for about two minutes
before an input check can say anything. The launcher asks first: are there Google Cloud
credentials (an instant local check), and does one lookup answer within a short deadline.
"""

from __future__ import annotations

import re
import threading

from apache_beam.io.filesystems import FileSystems

_REMOTE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:]+")
PROBE_DEADLINE_S = 10.0


def remote_paths(values) -> list[str]:
    """Every object-store path inside these option values (``NAME=gs://a:gs://b`` gives two)."""
    return [path for value in values if isinstance(value, str) for path in _REMOTE.findall(value)]


def _no_credentials() -> str | None:
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return None  # no Google client installed: the probe below says what happens
    try:
        google.auth.default()
    except DefaultCredentialsError:
        return ("no Google Cloud credentials on this machine (gcloud auth application-default login, "
                "or GOOGLE_APPLICATION_CREDENTIALS)")
    return None


def object_store_problem(paths: list[str], *, deadline_s: float = PROBE_DEADLINE_S) -> str | None:
    """None when the object store of ``paths`` answers; otherwise one line that says why not."""
    if not paths:
        return None
    if any(p.startswith("gs://") for p in paths):
        missing = _no_credentials()
        if missing:
            return missing
    outcome: dict[str, object] = {}

    def probe() -> None:
        try:
            FileSystems.match([paths[0]])
        except Exception as exc:  # noqa: BLE001 - any failure of the lookup is the answer
            outcome["error"] = exc

    thread = threading.Thread(target=probe, daemon=True)  # a lookup still retrying is left behind
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        return f"{paths[0]}: no answer within {deadline_s:g} s"
    if "error" in outcome:
        return f"{paths[0]}: {' '.join(str(outcome['error']).split())[:300]}"
    return None
