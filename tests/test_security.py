"""Security review, one test per rule:

* YAML is read only with yaml.safe_load (no yaml.load / full_load / unsafe_load / Loader=), and a spec
  with a python/object tag is refused with a UserError.
* Checkpoints are read only with torch.load(..., weights_only=True), and one that carries a pickled
  object (which would run code when unpickled) is refused without running it.
* No shell: no shell=True, os.system, os.popen or os.spawn*; subprocess calls get argv lists, never a
  string built from spec values.
* A spec cannot make the store write outside the results folder (its name and profile names are single
  path components).
* Secrets stay out of the store: the values of WANDB_API_KEY and of every variable whose name holds
  KEY/TOKEN/SECRET/PASSWORD never appear in what a run writes (config.yaml, env.json, metrics.jsonl,
  summary.json, checkpoints) nor in what `sebench run` prints. (sebench/tracking/ has its own test.)
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

import sebench
from sebench.engine import checkpoint
from sebench.errors import UserError
from sebench.spec import load_spec

PACKAGE = Path(sebench.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def calls(tree: ast.AST):
    """(dotted name of the callee, call node) for every call in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def parsed():
    for path in SOURCES:
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(), filename=str(path))


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


# ---- YAML ---------------------------------------------------------------------------------------------------

def test_yaml_is_only_read_with_safe_load():
    assert SOURCES, "no package sources found"
    bad = []
    for where, tree in parsed():
        for name, node in calls(tree):
            last = name.rsplit(".", 1)[-1]
            if last in ("load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all") \
                    and name.startswith("yaml"):
                bad.append(f"{where}:{node.lineno} {name}")
            if name.startswith("yaml") and keyword(node, "Loader") is not None:
                bad.append(f"{where}:{node.lineno} {name}(Loader=...)")
    text = "\n".join(p.read_text() for p in SOURCES)
    bad += [m.group(0) for m in re.finditer(r"(yaml\.(unsafe_|full_)?load\(|Loader\s*=|unsafe_load)", text)]
    assert not bad, bad
    assert "yaml.safe_load(" in text


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/object:builtins.object {{}}",
])
def test_spec_with_a_python_tag_is_refused(tmp_path, tag):
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"title: {tag.format(marker=marker)}\nsource: {{seed: s, table: T}}\nseeds: [0]\n"
                    "base: {model: {name: resnet20}, epochs: 1}\nprofiles: {smoke: {}}\n")
    with pytest.raises(UserError, match="constructor"):
        load_spec(spec)
    assert not marker.exists()


# ---- checkpoints ----------------------------------------------------------------------------------------------

def test_torch_load_always_has_weights_only_true():
    bad = []
    for where, tree in parsed():
        for name, node in calls(tree):
            if name == "torch.load":
                flag = keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    text = "\n".join(p.read_text() for p in SOURCES)
    assert text.count("torch.load(") == sum(1 for _ in re.finditer(r"torch\.load\([^)]*weights_only=True", text))
    assert not bad, bad


class Payload:
    """Unpickling this would create a folder: the proof that pickled code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    state = {"epoch": 1, "run_id": "r", "model": {}, "optimizer": {}, "scheduler": {}, "rng": {},
             "payload": Payload(str(marker))}
    torch.save(state, ckpt / "last.pt")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        with pytest.raises(UserError, match="no readable checkpoint"):
            checkpoint.load_latest(ckpt, "r")
    assert not marker.exists()
    # The same bytes through an unsafe load would have run the payload: the test's premise holds.
    torch.load(ckpt / "last.pt", weights_only=False)
    assert marker.exists()


# ---- no shell -------------------------------------------------------------------------------------------------

SHELL_FUNCTIONS = {"os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.spawnl", "os.spawnlp",
                   "os.spawnv", "os.spawnvp", "commands.getoutput", "subprocess.getoutput",
                   "subprocess.getstatusoutput"}
SUBPROCESS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
              "subprocess.check_output"}


def test_no_shell_and_argv_lists_only():
    bad, seen = [], 0
    for where, tree in parsed():
        for name, node in calls(tree):
            if name in SHELL_FUNCTIONS:
                bad.append(f"{where}:{node.lineno} {name}")
            if name in SUBPROCESS:
                seen += 1
                shell = keyword(node, "shell")
                if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                    bad.append(f"{where}:{node.lineno} shell=")
                argv = node.args[0] if node.args else keyword(node, "args")
                # A list display, or a name bound to one (checked where it is built): never a string.
                if isinstance(argv, (ast.Constant, ast.JoinedStr, ast.BinOp)) or (
                        isinstance(argv, ast.Call) and ast.unparse(argv.func).endswith(("format", "join"))):
                    bad.append(f"{where}:{node.lineno} string command {ast.unparse(argv)}")
    assert not bad, bad
    assert seen >= 2  # git (env.py) and torchrun (launch.py)
    text = "\n".join(p.read_text() for p in SOURCES)
    assert "shell=True" not in text and "os.system(" not in text and "os.popen(" not in text


def test_torchrun_command_keeps_spec_values_as_single_arguments():
    from sebench.cli import build_parser
    from sebench.launch import torchrun_argv

    evil = "x; touch /tmp/pwned #"
    args = build_parser().parse_args(["run", evil, "--set", f"model.name={evil}", "--results", "$(id)",
                                      "--launcher", "torchrun"])
    argv = torchrun_argv(args, 2)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert evil in argv and f"model.name={evil}" in argv and "$(id)" in argv


# ---- the store stays inside the results folder ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../outside", "/abs", "a/b", ".hidden", ".."])
def test_spec_names_cannot_leave_the_results_folder(tmp_path, name):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: '{name}'\ntitle: t\nsource: {{seed: s, table: T}}\nseeds: [0]\n"
                    "base: {model: {name: resnet20}, epochs: 1}\nprofiles: {smoke: {}}\n")
    with pytest.raises(UserError, match="name"):
        load_spec(spec)
    spec.write_text(f"title: t\nsource: {{seed: s, table: T}}\nseeds: [0]\n"
                    f"base: {{model: {{name: resnet20}}, epochs: 1}}\nprofiles: {{'{name}': {{}}}}\n")
    with pytest.raises(UserError, match="profiles"):
        load_spec(spec)


# ---- secrets --------------------------------------------------------------------------------------------------

SPEC = """
title: secrets
source: {seed: s, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 64, test_subset: 20}
  epochs: 1
  batch_size: 32
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1}
seeds: [0]
profiles: {smoke: {}}
"""
SECRET_NAMES = ["WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HF_TOKEN", "DB_PASSWORD",
                "MY_SERVICE_KEY", "slurm_secret", "OPENAI_API_KEY"]


def test_secrets_in_the_environment_never_reach_the_store_or_the_output(tmp_path, monkeypatch, capsys):
    from sebench.cli import main

    sentinels = {name: f"sentinel-{i}-{name.lower()}-a9f3e1" for i, name in enumerate(SECRET_NAMES)}
    for name, value in sentinels.items():
        monkeypatch.setenv(name, value)
    values = set(sentinels.values())
    (tmp_path / "secrets.yaml").write_text(SPEC)
    results = tmp_path / "results"
    assert main(["run", str(tmp_path / "secrets.yaml"), "--profile", "smoke", "--results", str(results),
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    written = [p for p in results.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "last.pt"} <= names
    for path in written:
        blob = path.read_bytes()
        for value in values:
            assert value.encode() not in blob, f"{path.name} holds the value of a secret"
        for name in sentinels:
            assert name.encode() not in blob, f"{path.name} names {name}"
    for value in values:
        assert value not in out and value not in err
