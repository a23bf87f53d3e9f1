"""The run's commit (pipeline/commit.py) on real folders and Parquet files: run twice, as a retried
bundle would, and killed (a real subprocess, SIGKILL) after every one of its file operations in
turn. Each partition is always the previous run's complete files or the new run's, never a mix
and never none, and the commit run again afterwards finishes the new state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.commit import PENDING, commit_partitions, exchange, write_json
from pipeline.records import WrittenFile

OLD, NEW = "2026-10-01T000000-0ld0ld00", "2026-10-01T010000-5e3e3e3e"
DATE = "2026-10-01"
RETAILERS = ("asos", "zalando")


def parquet(path: Path, rows: int, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"product_id": [f"{label}-{i}" for i in range(rows)]}), path)


def staged(tmp: Path, out: Path, run_id: str, label: str) -> list[WrittenFile]:
    """Two images shards for asos, one for zalando, a products file each, no review rows for asos."""
    files = []
    for table, retailer, shards in (("images", "asos", 2), ("images", "zalando", 1), ("products", "asos", 1),
                                    ("products", "zalando", 1), ("review", "zalando", 1)):
        partition = f"run_date={DATE}/retailer={retailer}"
        for shard in range(shards):
            path = out / "_staging" / run_id / table / partition / f"part-{shard:05d}.parquet"
            parquet(path, 3, f"{label}-{table}-{retailer}-{shard}")
            files.append(WrittenFile(table=table, partition=partition, path=str(path), rows=3, shard=shard))
    return files


def state(out: Path) -> dict[str, set[str]]:
    """partition folder -> the labels of the rows a Hive reader would see there."""
    found: dict[str, set[str]] = {}
    for folder in sorted(out.glob(f"*/run_date={DATE}/retailer=*")):
        labels = set()
        for path in folder.glob("*.parquet"):
            labels |= {v.split("-")[0] for v in pq.read_table(path).column("product_id").to_pylist()}
        found[str(folder.relative_to(out))] = labels
    return found


@pytest.fixture
def committed_old(tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "out"
    old = staged(tmp_path, out, OLD, "old")
    commit_partitions(str(out), DATE, OLD, RETAILERS, old + [  # the old run had review rows for asos
        WrittenFile(table="review", partition=f"run_date={DATE}/retailer=asos", shard=0, rows=3,
                    path=str(_review(out)))])
    return out, state(out)


def _review(out: Path) -> Path:
    path = out / "_staging" / OLD / "review" / f"run_date={DATE}" / "retailer=asos" / "part-00000.parquet"
    parquet(path, 3, "old-review")
    return path


def test_the_new_run_replaces_every_partition_of_its_retailers(committed_old):
    out, before = committed_old
    assert all(labels == {"old"} for labels in before.values()) and len(before) == 6
    final = commit_partitions(str(out), DATE, NEW, RETAILERS, staged(out.parent, out, NEW, "new"))
    after = state(out)
    assert set(after) == set(before) - {f"review/run_date={DATE}/retailer=asos"}  # no review rows today: gone
    assert all(labels == {"new"} for labels in after.values())
    assert all(Path(f.path).is_file() and f.path.endswith("-5e3e3e3e.parquet") for f in final) and len(final) == 6
    assert not list(out.rglob(f"{PENDING}*")) and not list(out.rglob("_previous-*"))


def test_a_commit_run_twice_finds_its_work_done(committed_old):
    out, _ = committed_old
    files = staged(out.parent, out, NEW, "new")
    first = commit_partitions(str(out), DATE, NEW, RETAILERS, files)
    snapshot = {p: p.read_bytes() for p in out.rglob("*.parquet") if "_staging" not in str(p)}
    assert commit_partitions(str(out), DATE, NEW, RETAILERS, files) == first  # the staged files are gone now
    assert {p: p.read_bytes() for p in out.rglob("*.parquet") if "_staging" not in str(p)} == snapshot


_KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from pipeline.commit import commit_partitions
    from pipeline.records import WrittenFile
    out, date, run_id, retailers, files, kill_at = json.loads(sys.argv[1])
    count = [0]
    def counted(real):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # before the operation: killed between two steps
            return real(*args, **kwargs)
        return call
    import shutil
    os.rename, os.replace, shutil.rmtree = counted(os.rename), counted(os.replace), counted(shutil.rmtree)
    import pipeline.commit as commit
    commit.exchange = counted(commit.exchange)
    commit_partitions(out, date, run_id, retailers, [WrittenFile(**f) for f in files])
    print("operations", count[0])
""")


def _commit_in_subprocess(out: Path, files: list[WrittenFile], kill_at: int) -> subprocess.CompletedProcess:
    args = json.dumps([str(out), DATE, NEW, list(RETAILERS), [f.__dict__ for f in files], kill_at])
    return subprocess.run([sys.executable, "-c", _KILLER, args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_commit_killed_at_any_step_leaves_each_partition_old_or_new_and_finishes_when_run_again(tmp_path):
    import shutil

    template = tmp_path / "template"
    old = staged(tmp_path, template, OLD, "old")
    commit_partitions(str(template), DATE, OLD, RETAILERS, old)
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    done = _commit_in_subprocess(probe, staged(tmp_path, probe, NEW, "new"), kill_at=0)
    steps = int(done.stdout.split()[-1])
    assert done.returncode == 0 and steps >= 10
    expected_old, expected_new = state(template), state(probe)
    for kill_at in range(1, steps + 1):
        out = tmp_path / f"killed-{kill_at}"
        shutil.copytree(template, out)
        files = staged(tmp_path, out, NEW, "new")
        killed = _commit_in_subprocess(out, files, kill_at)
        assert killed.returncode == -9, (kill_at, killed.stderr[-500:])
        seen = state(out)
        for partition in expected_old.keys() | expected_new.keys():
            assert seen.get(partition) in (expected_old.get(partition), expected_new.get(partition)), (
                kill_at, partition, seen.get(partition))  # old or new: never a mix (a set of both labels)
            if partition in expected_old and partition in expected_new:
                assert partition in seen, (kill_at, partition)  # a partition both runs have is never missing
        commit_partitions(str(out), DATE, NEW, RETAILERS, files)  # the retry, or the next attempt
        assert state(out) == expected_new, kill_at
        assert not list(out.rglob(f"{PENDING}*")) and not list(out.rglob("_previous-*"))


def test_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b" / "y").write_text("b")
    exchange(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "_aside"))
    assert os.listdir(tmp_path / "a") == ["y"] and os.listdir(tmp_path / "b") == ["x"]
    assert not (tmp_path / "_aside").exists()


def test_the_manifest_is_never_half_written(tmp_path):
    path = tmp_path / "manifest.json"
    write_json(str(path), {"run_id": "a", "counts": {"x": 1}})
    write_json(str(path), {"run_id": "b"})
    assert json.loads(path.read_text()) == {"run_id": "b"} and os.listdir(tmp_path) == ["manifest.json"]


def test_a_second_run_on_a_locked_output_fails_at_once_in_one_line(tmp_path, capsys):
    from runners.cli import main

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.commit import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "--output", str(out), "--models", "none", "--progress-interval", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another fashion-enrich run is writing to {out} (pid {holder.pid}" in err[0]
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["run", "--output", str(out), "--models", "none", "--progress-interval", "0"]) == 0  # released
    assert (out / "manifest.json").exists() and (out / "_fashion-enrich.lock").read_text() == ""
