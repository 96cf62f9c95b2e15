"""Atomic writes and crash-tolerant JSON lines."""

import json

import pytest

from sebench.errors import UserError
from sebench.store import (append_jsonl, atomic_open, atomic_write_json, atomic_write_text, read_jsonl,
                           RunDir, write_jsonl)


def test_run_dir_layout(tmp_path):
    run = RunDir.of(tmp_path, "table2", "abc123")
    assert run.path == tmp_path / "runs" / "table2" / "abc123"
    assert (run.summary, run.metrics, run.ckpt) == (run.path / "summary.json", run.path / "metrics.jsonl", run.path / "ckpt")


def test_atomic_writes_replace_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    atomic_write_text(tmp_path / "sub" / "config.yaml", "x: 1\n")
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.yaml", "summary.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_backup_keeps_previous_version(tmp_path):
    target, backup = tmp_path / "last.pt", tmp_path / "prev.pt"
    for content in (b"one", b"two", b"three"):
        with atomic_open(target, "wb", backup=backup) as f:
            f.write(content)
    assert (target.read_bytes(), backup.read_bytes()) == (b"three", b"two")


def test_torn_last_line_is_dropped_and_cut_before_next_append(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"epoch": 1})
    append_jsonl(log, {"epoch": 2})
    with open(log, "ab") as f:
        f.write(b'{"epoch": 3, "tra')  # a write a SIGKILL cut short
    assert read_jsonl(log) == [{"epoch": 1}, {"epoch": 2}]
    append_jsonl(log, {"epoch": 3})
    assert read_jsonl(log) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    assert log.read_text().count("\n") == 3


def test_corrupt_middle_line_is_an_error_and_missing_file_is_empty(tmp_path):
    log = tmp_path / "m.jsonl"
    assert read_jsonl(log) == []
    log.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(UserError, match="line 2"):
        read_jsonl(log)
    write_jsonl(log, [{"a": 1}])
    assert read_jsonl(log) == [{"a": 1}]


def test_every_committed_summary_reads_through_the_one_schema_and_round_trips():
    """records.RunSummary reads every summary.json committed under results/ (schema 1: no version key) back
    to exactly what the file holds, and refuses a newer schema instead of guessing at it."""
    from pathlib import Path

    from sebench.records import SUMMARY_SCHEMA, RunSummary

    paths = sorted((Path(__file__).resolve().parents[1] / "results" / "runs").glob("*/*/summary.json"))
    assert len(paths) > 100
    for path in paths:
        on_disk = json.loads(path.read_text())
        summary = RunSummary.read(path)
        assert summary.schema_version == on_disk.get("schema_version", 1) <= SUMMARY_SCHEMA, path
        written = summary.to_json()
        assert written == {"schema_version": summary.schema_version, **on_disk}, path
    with pytest.raises(UserError, match="newer than this sebench"):
        RunSummary.parse({**on_disk, "schema_version": SUMMARY_SCHEMA + 1}, "x/summary.json")
