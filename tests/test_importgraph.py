"""Imports inside sebench/ run one way: pyproject.toml's import-linter contracts (floors, no circles among
the modules of any package, what the low floors must not import) hold, and `lint-imports` fails on a
package made to break them, so that this test can fail."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, config: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}
    return subprocess.run([str(LINT), "--no-logo", "--no-cache", "--config", str(config)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_sebench_keeps_its_import_contracts():
    proc = lint(ROOT, ROOT / "pyproject.toml", str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 5 kept, 0 broken." in proc.stdout


def test_the_contracts_catch_a_circle_and_an_upward_import(tmp_path):
    """A package with a circle made of a function-local import, a relative import and `from pkg import sub`,
    and a low floor that imports a high one, checked with sebench's own contract types."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg import high  # deferred, still a dependency\n")
    (pkg / "high.py").write_text("from pkg import low\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg.sub import b\n")
    config = tmp_path / "contracts.toml"
    config.write_text('''[tool.importlinter]
root_package = "pkg"

[[tool.importlinter.contracts]]
id = "layers"
name = "floors"
type = "layers"
containers = ["pkg"]
layers = ["high", "low"]

[[tool.importlinter.contracts]]
id = "acyclic"
name = "no circles"
type = "acyclic_siblings"
ancestors = ["pkg"]
depth = 3
''')
    proc = lint(tmp_path, config, str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "floors BROKEN" in proc.stdout and "no circles BROKEN" in proc.stdout
    assert "pkg.low is not allowed to import pkg.high" in proc.stdout
