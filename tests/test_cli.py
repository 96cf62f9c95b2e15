"""The `sebench` command: help, the models table, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from sebench.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "models" in out and "bench" in out and "claims" in out


def test_models_one_configuration(capsys):
    assert main(["models", "resnet50", "--reduction", "8", "--stages", "4"]) == 0
    out = capsys.readouterr().out
    assert "25.557" in out and "3.858" in out  # plain ResNet-50
    assert "SE_4_1" in out and "1024->128->1024" in out and "se r8" in out


def test_models_table_paper_se(capsys):
    assert main(["models", "resnet20", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "28.088" in out and "3.860" in out and "0.270" in out


@pytest.mark.parametrize("argv, fragment", [
    (["models", "resnet51"], "unknown model 'resnet51'"),
    (["models", "resnet20", "--variant", "turbo"], "unknown variant 'turbo'"),
    (["models", "resnet20", "--gate", "softmax"], "unknown gate 'softmax'"),
    (["models", "resnet20", "--squeeze", "sum"], "unknown squeeze 'sum'"),
    (["models", "resnet20", "--position", "after_3x3"], "does not exist in a BasicBlock"),
    (["models", "resnet20", "--latent-channels", "0"], "no hidden channels"),
    (["models", "resnet20", "--stages", "x"], "comma-separated"),
    (["run", "cifar10_se_vs_baseline", "--launcher", "slurm", "--wandb"], "add --wait"),
])
def test_user_mistakes_exit_2_without_traceback(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_console_script_exit_code():
    proc = subprocess.run([sys.executable, "-m", "sebench", "models", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown model 'nope'" in proc.stderr and "Traceback" not in proc.stderr
