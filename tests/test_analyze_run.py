"""`analyze_run` and `sebench analyze` on a tiny SE-ResNet-20 trained here for one epoch: the CSVs and
figures, the test-error check against summary.json, and one-line errors for a user's mistakes."""

import json
import shutil
import subprocess
import sys

import pytest

from sebench.analysis.excitation import ExcitationStats
from sebench.analysis.run import ERR_TOLERANCE, analyze_run, default_run, same_dataset
from sebench.cli import main
from sebench.engine import fit
from sebench.errors import UserError
from sebench.spec import BenchmarkCfg, DataCfg, ExecutionCfg, ModelCfg, RunConfig

DATA_LABEL = "CIFAR-10 (JPEG q75 mirror, embedded subset)"
TAGS = [f"SE_{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]
OUTPUTS = ("stats_csv", "summary_csv", "class_means_png", "within_class_png", "specificity_png",
           "saturation_png", "report_json")


def tiny_cfg() -> RunConfig:
    """Seconds on a slow CPU: 40 training images, one epoch, a one-iteration throughput probe."""
    return RunConfig(experiment="tiny", profile="test", model=ModelCfg(name="resnet20", se="se"),
                     data=DataCfg(name="cifar10-embedded", train_subset=40, test_subset=100), epochs=1,
                     batch_size=20, eval_batch_size=50, benchmark=BenchmarkCfg(batch_size=2, warmup=0, iters=1),
                     execution=ExecutionCfg(device="cpu", threads=1, progress=False))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return run, fit(tiny_cfg(), run)


def copy_run(run, dest):
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("analysis"))
    return dest


def test_analyze_run_writes_outputs_and_verifies_the_checkpoint(trained, tmp_path):
    run, summary = trained
    result = analyze_run(run, out=tmp_path / "out", device="cpu", threads=1, progress=False)
    assert set(result.paths) == set(OUTPUTS)
    for path in result.paths.values():
        assert path.parent == tmp_path / "out" and path.stat().st_size > 0
    assert abs(result.test_top1_err - summary.final_test_top1_err) <= ERR_TOLERANCE
    assert result.checkpoint_matches and result.images == 100
    assert result.blocks == ["SE_1_3", "SE_2_3", "SE_3_1", "SE_3_2", "SE_3_3"]  # the paper's rule
    assert result.classes == ["frog", "airplane", "dog", "truck"]
    for part in (DATA_LABEL, "resnet20", summary.run_id, "1 epoch"):
        assert part in result.label
    assert result.label.endswith(f"\ntrained on {summary.device_name} (cpu, 1 thread)")  # fp32: no autocast
    stats = ExcitationStats.read_csv(result.paths["stats_csv"])
    assert stats.blocks == TAGS and sum(stats.counts().values()) == 100  # every block for the depth plots
    report = json.loads(result.paths["report_json"].read_text())
    assert report["checkpoint_matches"] and report["summary_test_top1_err"] == summary.final_test_top1_err
    assert report["caption"] == result.label


def test_cli_analyze_writes_into_the_run_folder(trained):
    run, summary = trained
    proc = subprocess.run([sys.executable, "-m", "sebench", "analyze", str(run), "--blocks", "SE_2_3,SE_3_3",
                           "--classes", "cat", "1", "--device", "cpu", "--threads", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"outputs: {run / 'analysis'}" in proc.stdout and "matches summary.json" in proc.stdout
    report = json.loads((run / "analysis" / "analysis.json").read_text())
    assert report["blocks"] == ["SE_2_3", "SE_3_3"] and report["classes"] == ["cat", "automobile"]
    assert report["checkpoint_matches"]
    for name in report["files"].values():
        assert (run / "analysis" / name).stat().st_size > 0


@pytest.mark.parametrize("option, fragment, choices", [
    (["--blocks", "SE_9_9"], "unknown SE block(s) ['SE_9_9']", "SE_1_1, SE_1_2"),
    (["--classes", "frog", "cow"], "unknown class 'cow'", "airplane, automobile"),
])
def test_bad_block_or_class_exits_2_with_one_line(trained, tmp_path, capsys, option, fragment, choices):
    run, _ = trained
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--out", str(out), "--device", "cpu", "--no-progress", *option]) == 2
    err = capsys.readouterr().err
    assert fragment in err and choices in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # nothing half-written


def test_missing_checkpoint_or_unfinished_run_is_a_user_error(trained, tmp_path):
    run, _ = trained
    no_ckpt = copy_run(run, tmp_path / "no_ckpt")
    shutil.rmtree(no_ckpt / "ckpt")
    with pytest.raises(UserError) as err:
        analyze_run(no_ckpt, progress=False)
    message = str(err.value)
    assert str(no_ckpt / "ckpt" / "last.pt") in message and "sebench run tiny --profile test" in message

    unfinished = copy_run(run, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    with pytest.raises(UserError, match="has not finished"):
        analyze_run(unfinished, progress=False)
    with pytest.raises(UserError, match="no config.yaml"):
        analyze_run(tmp_path, progress=False)


def test_cli_analyzes_several_runs_after_checking_them_all(trained, tmp_path, capsys):
    """Several RUN_DIRs: a run without its checkpoint stops the command before the first analysis (nothing
    written anywhere); else each run gets its own analysis/ folder, and the last line says where they are."""
    run, _ = trained
    first, second = copy_run(run, tmp_path / "a"), copy_run(run, tmp_path / "b")
    shutil.rmtree(second / "ckpt")
    argv = ["analyze", str(first), str(second), "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(second / "ckpt" / "last.pt") in err and "no checkpoint" in err
    assert not (first / "analysis").exists() and not (second / "analysis").exists()
    assert main(["analyze", str(first), str(second), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--out names one folder, but 2 runs were given" in capsys.readouterr().err
    shutil.copytree(run / "ckpt", second / "ckpt")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/2]" in out and "[2/2]" in out
    assert f"analysed 2 runs; outputs: {first / 'analysis'}, {second / 'analysis'}" in out
    for d in (first, second):
        assert json.loads((d / "analysis" / "analysis.json").read_text())["checkpoint_matches"]


def test_a_test_error_unlike_the_summary_warns_and_is_recorded(trained, tmp_path):
    run, summary = trained
    other = copy_run(run, tmp_path / "other")
    (other / "summary.json").write_text(json.dumps({**summary.to_json(), "final_test_top1_err": 50.0}))
    with pytest.warns(RuntimeWarning, match="differs from the run's 50.0%"):
        result = analyze_run(other, blocks=["SE_3_3"], device="cpu", threads=1, progress=False)
    assert not result.checkpoint_matches
    assert json.loads(result.paths["report_json"].read_text())["checkpoint_matches"] is False


def fake_run(results, experiment, run_id, *, profile, dataset, err, se="se r16 avg sigmoid standard",
             status="finished", ckpt=False, analysed=False):
    """A run folder with only what default_run reads: summary.json, and a checkpoint or analysis if asked."""
    d = results / "runs" / experiment / run_id
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "status": status, "run_id": run_id, "experiment": experiment, "profile": profile, "model": "resnet20",
        "se": se, "dataset": dataset, "seed": 0, "epochs": 1, "batch_size": 2,
        **({"final_test_top1_err": err} if status == "finished" else {"reason": "stopped", "epoch": 1})}))
    if ckpt:
        (d / "ckpt").mkdir()
        (d / "ckpt" / "last.pt").write_bytes(b"")
    if analysed:
        (d / "analysis").mkdir()
        (d / "analysis" / "analysis.json").write_text("{}")
    return d


def test_same_dataset_takes_variants_but_never_another_set():
    assert same_dataset("CIFAR-10", "CIFAR-10")
    assert same_dataset("CIFAR-10 (JPEG q75 mirror, embedded subset)", "CIFAR-10")
    assert same_dataset("CIFAR-100 [train 10000, test 10000]", "CIFAR-100")
    assert not same_dataset("CIFAR-100", "CIFAR-10") and not same_dataset("CIFAR-10", "CIFAR-100")


def test_default_run_keeps_to_one_data_set_and_prefers_analysable_runs(tmp_path):
    """A lower CIFAR-100 error never beats a CIFAR-10 run (errors of different data sets do not compare);
    within CIFAR-10 a run that can be analysed here beats a better one without checkpoint or analysis;
    plain, failed and other-profile runs never compete."""
    res = tmp_path / "results"
    fake_run(res, "c100", "a1", profile="full40", dataset="CIFAR-100", err=5.0, ckpt=True)
    fake_run(res, "c10", "b1", profile="full40", dataset="CIFAR-10", err=7.0)  # best, but not analysable
    analysed = fake_run(res, "c10", "b2", profile="full40_bf16", dataset="CIFAR-10", err=8.0, analysed=True)
    with_ckpt = fake_run(res, "c10", "b3", profile="full40", dataset="CIFAR-10", err=9.0, ckpt=True)
    fake_run(res, "c10", "b4", profile="full40", dataset="CIFAR-10", err=1.0, se="none", ckpt=True)
    fake_run(res, "c10", "b5", profile="full40", dataset="CIFAR-10", err=None, status="failed", ckpt=True)
    quick = fake_run(res, "q", "c1", profile="quick", dataset="CIFAR-10 (JPEG q75 mirror, embedded subset)",
                     err=30.0, ckpt=True)
    assert default_run(res) == analysed  # bf16 and fp32 compete within the first group
    assert default_run(res, "full40") == with_ckpt
    assert default_run(res, "quick;full40") == quick
    assert default_run(res, dataset="CIFAR-100").name == "a1"
    assert default_run(res, dataset="").name == "a1"  # any data set: lowest error of the usable runs
    (with_ckpt / "ckpt" / "last.pt").unlink()
    assert default_run(res, "full40").name == "b1"  # none usable: the best at all (its rerun command follows)


def test_default_run_without_a_candidate_names_the_variables_to_set(tmp_path):
    res = tmp_path / "results"
    fake_run(res, "c100", "a1", profile="full40", dataset="CIFAR-100", err=5.0, ckpt=True)
    with pytest.raises(UserError) as err:
        default_run(res, "full40;quick", "CIFAR-10")
    msg = str(err.value)
    assert "no finished SE run of CIFAR-10 in the profiles 'full40;quick'" in msg
    assert str(res / "runs") in msg and "SEBENCH_ANALYSIS_DATASET" in msg and "SEBENCH_ANALYSIS_RUN" in msg
