"""Issue 40 (Reliability): broken inputs and a damaged results folder, each ending in one clear line (exit
2 for a user's mistake), nothing written half-way and no other experiment affected.

In the style of tests/test_faults.py, but mostly in-process (`sebench.cli.main`) and without training:
a store of finished runs is written directly (config.yaml + summary.json, as fit leaves them), so each
check takes well under a second. Sessions run as root, so EACCES and ENOSPC are injected with monkeypatch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sebench.cli import main
from sebench.records import RunSummary
from sebench.spec import expand, load_spec
from sebench.store import RunDir, write_run_config

SPEC = """
title: reliability tests
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 64, test_subset: 20}
  epochs: 1
  batch_size: 32
  eval_batch_size: 20
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1, progress: false}
seeds: [0, 1]
sweep:
  - axis: se
    ref: column
    values:
      - {label: plain, baseline: true, set: {model.se: null}}
      - {label: SE, set: {model.se: {reduction: 4}}}
profiles:
  smoke: {}
"""


def write_specs(folder: Path, *names: str) -> Path:
    (folder / "experiments").mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / "experiments" / f"{name}.yaml").write_text(SPEC)
    return folder


def finish_all(folder: Path, name: str, results: str = "results") -> dict[str, Path]:
    """Every run of `name` recorded as finished (as fit would leave it): {run_id: folder}."""
    runs, _ = expand(load_spec(folder / "experiments" / f"{name}.yaml"), "smoke")
    out = {}
    for rc in runs:
        run = RunDir.of(folder / results, rc.experiment, rc.run_id)
        run.path.mkdir(parents=True)
        write_run_config(run.path, rc)
        run.write_summary(RunSummary(status="finished", run_id=rc.run_id, experiment=rc.experiment,
                                     profile=rc.profile, labels=dict(rc.labels), model="cnn3", se="none",
                                     dataset="synthetic", seed=rc.seed, epochs=1, batch_size=32,
                                     final_test_top1_err=50.0 + rc.seed, final_test_top5_err=10.0,
                                     input_size=[3, 32, 32]))
        out[rc.run_id] = run.path
    return out


def cli(folder: Path, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(folder)
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ---- 1. damaged summary.json: quarantined, reported, counted, never silently dropped --------------------

DAMAGE = {
    "null": b"null",
    "list": b"[1, 2]",
    "binary": b"\x00\xff\xfe\x80garbage",
    "text": b"this is not a run summary",
    "other run's": None,  # a valid summary copied from another run's folder
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_summary_is_quarantined_and_reported(kind, tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny", "other")
    tiny = finish_all(folder, "tiny")
    finish_all(folder, "other")
    bad_id, good_id = sorted(tiny)[:2]
    bad = tiny[bad_id] / "summary.json"
    bad.write_bytes(DAMAGE[kind] if DAMAGE[kind] is not None else (tiny[good_id] / "summary.json").read_bytes())
    before = bad.read_bytes()

    # collect: every readable run in runs.csv, the damaged one named with its file and the fix
    code, out, err = cli(folder, monkeypatch, capsys, "collect")
    assert code == 0
    assert "1 damaged run record(s) quarantined" in err and str(Path("results") / "runs" / "tiny" / bad_id) in err
    assert "delete it" in err
    with open(folder / "results" / "smoke" / "runs.csv") as f:
        ids = [r["run_id"] for r in csv.DictReader(f)]
    assert bad_id not in ids and len(ids) == 7  # 4 of other, 3 of tiny

    # doctor lists it with the fix, exit 1; the table counts it under the table
    code, _, err = cli(folder, monkeypatch, capsys, "doctor")
    assert code == 1 and f"tiny/{bad_id}" in err and "delete it" in err
    code, out, _ = cli(folder, monkeypatch, capsys, "report", "tiny", "--profile", "smoke", "--no-plots")
    assert code == 0 and "1 run record(s) of this table are damaged and excluded" in out

    # other experiments: unaffected
    code, out, err = cli(folder, monkeypatch, capsys, "plan", "other", "--profile", "smoke", "--no-estimate")
    assert code == 0 and "4 finished" in out and "damaged" not in out + err
    code, out, _ = cli(folder, monkeypatch, capsys, "run", "other", "--profile", "smoke", "--no-progress")
    assert code == 0 and "4 already finished" in out

    # its own experiment: plan shows it, run leaves it alone (nothing overwritten) and exits non-zero
    code, out, err = cli(folder, monkeypatch, capsys, "plan", "tiny", "--profile", "smoke", "--no-estimate")
    assert code == 0 and "1 damaged" in out and bad_id in err
    code, out, err = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress")
    assert code == 1 and "1 damaged (quarantined)" in out and f"DAMAGED tiny/{bad_id}" in err
    assert bad.read_bytes() == before


def test_clean_store_passes_doctor(tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    finish_all(folder, "tiny")
    code, out, _ = cli(folder, monkeypatch, capsys, "doctor")
    assert code == 0 and "no damaged run records" in out


# ---- 2. bad --set values, runs that cannot fit in memory, --jobs beyond the machine --------------------

@pytest.mark.parametrize("argv, fragment", [
    (["plan", "tiny", "--set", "model=[1,2"], "'[1,2' is not a valid YAML value"),
    (["plan", "tiny", "--set", "data.image_size=100000"], "needs about"),
    (["plan", "tiny", "--set", "model.kwargs=[1, 2]"], "field 'model.kwargs': Input should be a valid dictionary"),
    (["plan", "tiny", "--set", "model.kwargs.foo=1"], "field 'model.kwargs': cnn3 takes no option(s) ['foo']"),
    (["plan", "tiny", "--max-memory", "0.0001"], "given by --max-memory"),
    (["run", "tiny", "--max-memory", "0.0001"], "given by --max-memory"),
    (["run", "tiny", "--jobs", "100000"], "--jobs 100000 is more than the"),
])
def test_bad_settings_end_in_one_line_before_any_run_starts(argv, fragment, tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    code, out, err = cli(folder, monkeypatch, capsys, *argv, "--profile", "smoke", "--no-progress"
                         if argv[0] == "run" else "--no-estimate")
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not list((folder / "results").glob("runs/*/*/config.yaml"))  # nothing started


def test_memory_check_names_the_fix_and_can_be_overridden(tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    code, _, err = cli(folder, monkeypatch, capsys, "plan", "tiny", "--profile", "smoke", "--no-estimate",
                       "--set", "data.image_size=100000")
    assert code == 2 and "image size 100000" in err and "--ignore-memory-check" in err and "GB" in err
    code, out, _ = cli(folder, monkeypatch, capsys, "plan", "tiny", "--profile", "smoke", "--no-estimate",
                       "--set", "data.image_size=100000", "--ignore-memory-check")
    assert code == 0 and "4 missing" in out


# ---- 3. a sweep too large to expand: counted from its axes, capped, the cap a flag ---------------------

def huge_spec(folder: Path, values: int) -> Path:
    keys = ("optim.lr", "optim.momentum", "optim.weight_decay")  # one setting per axis: every run differs
    axes = "".join(f"  - axis: a{k}\n    values:\n" + "".join(
        f"      - {{label: 'v{i}', set: {{{key}: {0.01 + i * 1e-6}}}}}\n" for i in range(values))
        for k, key in enumerate(keys))
    text = SPEC.split("sweep:")[0] + "sweep:\n" + axes + "profiles:\n  smoke: {}\n"
    (folder / "experiments").mkdir(parents=True, exist_ok=True)
    (folder / "experiments" / "huge.yaml").write_text(text)
    return folder


def test_huge_sweep_is_refused_from_its_axes_without_building_it(tmp_path):
    """3 axes of 1,000 values: counted, not expanded (on main, `plan` built all 2e9 configs and hung)."""
    import subprocess
    import sys

    from childenv import child_env

    folder = huge_spec(tmp_path, 1000)
    proc = subprocess.run([sys.executable, "-m", "sebench", "plan", "huge", "--profile", "smoke", "--no-estimate"],
                          cwd=folder, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "expands to 2,000,000,000 runs (1000 a0 x 1000 a1 x 1000 a2 x 2 seeds)" in proc.stderr
    assert "--max-runs" in proc.stderr


def test_max_runs_flag_sets_the_cap(tmp_path, monkeypatch, capsys):
    folder = huge_spec(tmp_path, 3)  # 3 x 3 x 3 x 2 seeds = 54 runs
    code, _, err = cli(folder, monkeypatch, capsys, "plan", "huge", "--profile", "smoke", "--no-estimate",
                       "--max-runs", "50")
    assert code == 2 and "54 runs" in err and "cap of 50" in err
    code, out, _ = cli(folder, monkeypatch, capsys, "plan", "huge", "--profile", "smoke", "--no-estimate",
                       "--max-runs", "54")
    assert code == 0 and "54 runs (54 missing)" in out


# ---- 4. locks: alive only if host, pid, start time and boot match; stale broken, foreign reported -------

def lock_for(directory: Path, **changes) -> None:
    import os
    import socket
    import time

    # what a lock of this process holds (read here, not through the package, so main's code is tested too)
    start = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "job": None,
              "start": start, "boot": boot, **changes}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".lock").write_text(json.dumps(record))


def one_missing(folder: Path) -> Path:
    """Every run of tiny finished but one (returned: its folder, with no records)."""
    runs = finish_all(folder, "tiny")
    missing = runs[sorted(runs)[0]]
    for f in missing.iterdir():
        f.unlink()
    return missing


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
@pytest.mark.parametrize("holder, reason", [
    ({"start": 1}, "now belongs to another process"),  # this very pid, but a process started at another time
    ({"pid": 2**22 + 1}, "is gone"),
    ({"boot": "another-boot"}, "before a reboot"),
])
def test_stale_lock_is_broken_with_a_message(holder, reason, tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    missing = one_missing(folder)
    lock_for(missing, **holder)
    code, out, _ = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress")
    assert code == 0, out
    assert f"stale lock broken: {Path('results') / 'runs' / 'tiny' / missing.name / '.lock'}" in out and reason in out
    assert "1 finished now" in out and json.loads((missing / "summary.json").read_text())["status"] == "finished"
    assert not (missing / ".lock").exists()


def test_foreign_hosts_lock_is_reported_and_run_exits_non_zero(tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    missing = one_missing(folder)
    lock_for(missing, host="some-other-host")
    code, out, err = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress")
    assert code == 1
    assert "1 locked by another host" in out
    assert f"LOCKED {missing.name}: " in err and "some-other-host" in err and "delete the lock file" in err
    assert (missing / ".lock").exists() and not (missing / "summary.json").exists()  # not ours to break


# ---- 5. a wrong data path: found before anything is launched ------------------------------------------

def test_wrong_data_path_stops_run_before_any_worker_starts(tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    jpeg = ["--set", "data.name=cifar10-jpeg", "--set", "data.train_subset=null", "--set", "data.test_subset=null"]
    monkeypatch.delenv("SEBENCH_CIFAR10_JPEG", raising=False)
    missing = str(tmp_path / "nowhere" / "cifar10-jpeg.tar.xz")
    code, _, err = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress",
                       "--jobs", "2", "--data-path", missing, *jpeg)
    assert code == 2 and err.count("\n") == 1
    assert f"the data path of dataset 'cifar10-jpeg' does not exist: {missing}" in err and "--data-path" in err
    assert not list((folder / "results").glob("runs/*/*/*"))  # no run folder holds anything
    code, out, err = cli(folder, monkeypatch, capsys, "plan", "tiny", "--profile", "smoke", "--no-estimate", *jpeg)
    assert code == 0 and "4 missing" in out  # plan still shows the plan, and says what run will stop on
    assert "dataset 'cifar10-jpeg' needs a path" in err and "`sebench run` stops on it" in err


# ---- 6. an unwritable results folder or a full disk, for every command that writes -------------------

def break_disk(kind: str, monkeypatch) -> None:
    """Writes under a results folder fail as on a read-only folder (EACCES at open) or a full disk
    (ENOSPC at fsync); as root neither can be made for real."""
    import errno
    import os

    real_open, real_fsync = os.open, os.fsync
    if kind == "EACCES":
        def refuse(path, flags, *args, **kw):
            if "results" in str(path) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kw)
        monkeypatch.setattr(os, "open", refuse)
    else:
        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "results")
        monkeypatch.setattr(os, "fsync", full)


@pytest.mark.parametrize("kind", ["EACCES", "ENOSPC"])
@pytest.mark.parametrize("argv", [
    ["collect"],
    ["report", "tiny", "--profile", "smoke", "--no-plots"],
    ["speed", "tiny", "--profile", "smoke", "--repeats", "1", "--iters", "1", "--threads", "1"],
])
def test_commands_on_an_unwritable_store_end_in_one_line(argv, kind, tmp_path, monkeypatch, capsys):
    folder = write_specs(tmp_path, "tiny")
    finish_all(folder, "tiny")
    if argv[0] == "report":
        assert cli(folder, monkeypatch, capsys, "collect")[0] == 0
    before = sorted(p for p in (folder / "results").rglob("*"))
    break_disk(kind, monkeypatch)
    code, _, err = cli(folder, monkeypatch, capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot write" in err and ("No space left" in err if kind == "ENOSPC" else "Permission denied" in err)
    assert "--results" in err
    assert sorted(p for p in (folder / "results").rglob("*") if p.suffix == ".tmp") == []  # nothing half-written
    assert [p for p in before if not p.exists()] == []


# ---- 7. a cold data cache: decoded once, whoever else asks waits and reads it ---------------------------

DECODER = """
import os, sys, time
from pathlib import Path
import sebench.data.archive as archive

archive_path, cache, log, ready, peers = sys.argv[1:6]
original = archive._decode_archive

def counted(*args):  # a slow decode, logged: two processes that both decode would both log
    with open(log, "a") as f:
        f.write("decode\\n")
    time.sleep(1.0)
    return original(*args)

archive._decode_archive = counted
Path(f"{ready}.{os.getpid()}").touch()
while len(list(Path(ready).parent.glob(Path(ready).name + ".*"))) < int(peers):  # start together
    time.sleep(0.01)
a = archive.load_archive(archive_path, cache_dir=cache, expected_sha256=None, layout=None)
print(a.train_x.shape, int(a.train_x.sum()))
"""


def test_cold_data_cache_is_decoded_once_by_concurrent_processes(tmp_path):
    import subprocess
    import sys
    import time

    import numpy as np

    from childenv import child_env
    from test_data_archive import write_archive

    fake = write_archive(tmp_path / "fake.tar.xz")
    cache, log = tmp_path / "cache", tmp_path / "decodes.log"
    (tmp_path / "decoder.py").write_text(DECODER)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "decoder.py"), str(fake), str(cache), str(log),
                               str(tmp_path / "ready"), "2"], env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    seen = 0
    while any(p.poll() is None for p in procs):  # whenever the cache file exists, it is whole
        for f in cache.glob("*.npz") if cache.is_dir() else []:
            with np.load(f) as z:
                assert z["train_x"].shape == (6, 3, 8, 8)
            seen += 1
        time.sleep(0.02)
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert log.read_text().count("decode") == 1  # one decode; the other process read the cache
    assert outs[0][0] == outs[1][0] and "(6, 3, 8, 8)" in outs[0][0]
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))


# ---- 8. a resume records its execution settings and says which changed --------------------------------

def interrupted_at_epoch_2(monkeypatch):
    """Training stops (as on Ctrl-C) before epoch 2's checkpoint: the run resumes from epoch 1's."""
    import sebench.engine.checkpoint as checkpoint

    save = checkpoint.save_checkpoint

    def stop(ckpt_dir, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        return save(ckpt_dir, state)

    monkeypatch.setattr(checkpoint, "save_checkpoint", stop)
    return lambda: monkeypatch.setattr(checkpoint, "save_checkpoint", save)


def test_resume_records_settings_and_warns_once_naming_what_changed(tmp_path, monkeypatch, capsys):
    import warnings

    from sebench.engine import fit

    folder = tmp_path
    (folder / "experiments").mkdir()
    one_run = SPEC.replace("epochs: 1", "epochs: 2").replace("seeds: [0, 1]", "seeds: [0]")
    (folder / "experiments" / "tiny.yaml").write_text(one_run.replace("      - {label: SE, set: {model.se: {reduction: 4}}}\n", ""))
    [rc] = expand(load_spec(folder / "experiments" / "tiny.yaml"), "smoke")[0]
    run = RunDir.of(folder / "results", rc.experiment, rc.run_id).path

    restore = interrupted_at_epoch_2(monkeypatch)
    code, _, _ = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress")
    assert code == 130 and (run / "ckpt" / "last.pt").exists()
    restore()
    code, out, err = cli(folder, monkeypatch, capsys, "run", "tiny", "--profile", "smoke", "--no-progress",
                         "--set", "execution.threads=2")
    assert code == 0 and "1 finished now" in out
    line = (f"warning: resuming run {rc.run_id} with threads 2 (was 1): its numbers will not be bitwise those "
            "of an uninterrupted run")
    assert line in out and (out + err).count("resuming run") == 1
    env = json.loads((run / "env.json").read_text())
    assert env["settings"]["threads"] == 1 and [r["settings"]["threads"] for r in env["resumes"]] == [2]
    assert set(env["settings"]) >= {"threads", "world_size", "device", "machine", "amp", "cpu_bf16", "channels_last"}

    # the same settings again: recorded, nothing said
    from sebench.engine.fit import ResumeSettingsChanged
    again = folder / "again"
    restore = interrupted_at_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fit(rc, again)
    restore()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(rc, again)
    assert not [w for w in caught if issubclass(w.category, ResumeSettingsChanged)]
    env = json.loads((again / "env.json").read_text())
    assert [r["settings"] for r in env["resumes"]] == [env["settings"]]


# ---- 9. one Ctrl-C stops a --jobs 2 sweep: workers ended, the resume command printed, nothing left ------

def test_one_ctrl_c_stops_a_jobs_2_sweep_cleanly(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    from childenv import child_env

    long = SPEC.replace("epochs: 1", "epochs: 500").replace("train_subset: 64", "train_subset: 640")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tiny.yaml").write_text(
        long.replace("      - {label: SE, set: {model.se: {reduction: 4}}}\n", ""))  # 2 runs: seeds 0, 1
    runs = [RunDir.of(tmp_path / "results", rc.experiment, rc.run_id).path
            for rc in expand(load_spec(tmp_path / "experiments" / "tiny.yaml"), "smoke")[0]]
    shm = Path("/dev/shm")
    before = {p.name for p in shm.glob("sem.*")} if shm.is_dir() else set()
    argv = ["run", "tiny", "--profile", "smoke", "--jobs", "2", "--no-progress"]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sebench", *argv], cwd=tmp_path, stdout=out, stderr=err,
                                env=child_env(OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 300
        while not all((r / "ckpt" / "last.pt").exists() for r in runs):  # both mid-run, an epoch checkpointed
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.2)
        workers = [json.loads((r / ".lock").read_text())["pid"] for r in runs]
        assert proc.pid not in workers
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)  # stops its workers instead of waiting for 500 epochs
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "err").read_text()
    assert code == 130, err
    assert ("interrupted: 2 runs stopped; their last epoch checkpoints are kept; resume with: "
            "sebench run tiny --profile smoke --jobs 2 --no-progress") in err
    assert "Traceback" not in err
    for pid in workers:  # gone (or, reparented, a zombie: it runs nothing)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    for r in runs:  # resumable: the checkpoint kept, no lock or heartbeat left behind
        assert (r / "ckpt" / "last.pt").exists() and not (r / ".lock").exists()
        assert not (r / ".progress.json").exists() and not (r / "summary.json").exists()
    assert ({p.name for p in shm.glob("sem.*")} if shm.is_dir() else set()) <= before
    code, out, _ = cli(tmp_path, monkeypatch, capsys, "plan", "tiny", "--profile", "smoke", "--no-estimate")
    assert code == 0 and "2 partial" in out
