"""Dataflow launches on a machine that cannot reach the object store: said in seconds, not after
minutes of retries (the dry run goes on without the input checks; a submission stops)."""

from __future__ import annotations

import time

import pytest

from runners import preflight
from runners.cli import main
from runners.preflight import object_store_problem, remote_paths

DATAFLOW = ["dataflow", "--project", "my-project", "--region", "us-central1", "--temp-location",
            "gs://my-bucket/tmp", "--container-image", "img:1", "--zalando", "gs://my-bucket/dumps/z-*.jsonl",
            "--output", "gs://my-bucket/out"]


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """Whatever this machine has, Google's client finds no usable credentials."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))


def test_remote_paths_are_found_inside_option_values():
    assert remote_paths(["gs://b/a.jsonl", "shop=gs://b/s.csv:gs://b/s.yaml", "/local/x.jsonl", None, "default"]) == [
        "gs://b/a.jsonl", "gs://b/s.csv", "gs://b/s.yaml"]


def test_missing_credentials_are_reported_at_once(no_credentials):
    problem = object_store_problem(["gs://my-bucket/dumps/z.jsonl"])
    assert problem and "no Google Cloud credentials" in problem
    assert object_store_problem([]) is None


def test_a_store_that_does_not_answer_is_given_up_after_the_deadline(monkeypatch, tmp_path):
    # Stands in for GCS retrying for minutes: a lookup that does not come back.
    monkeypatch.setattr(preflight.FileSystems, "match", lambda patterns: time.sleep(30))
    started = time.monotonic()
    path = f"file://{tmp_path}/x"
    assert object_store_problem([path], deadline_s=0.5) == f"{path}: no answer within 0.5 s"
    assert time.monotonic() - started < 5


def test_dry_run_without_credentials_skips_the_input_checks_and_says_so(no_credentials, capsys):
    started = time.monotonic()
    assert main(DATAFLOW + ["--dry-run"]) == 0
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    assert "existence checks of the inputs skipped" in captured.err and "no Google Cloud credentials" in captured.err
    assert "--runner=DataflowRunner" in captured.out and "graph:" in captured.out
    assert seconds < 60, seconds  # was 130 s of GCS retries before it said 'input not found'


def test_submission_and_remote_models_without_credentials_stop_at_once(no_credentials, capsys):
    assert main(DATAFLOW) == 2
    assert "cannot reach the object store to submit: no Google Cloud credentials" in capsys.readouterr().err
    assert main(DATAFLOW + ["--dry-run", "--category-model", "gs://my-bucket/models/cat"]) == 2
    assert "cannot reach the object store to read gs://my-bucket/models/cat" in capsys.readouterr().err
