"""Imports inside sebench/ run one way: no module imports itself back through others, and no subpackage
or top-level module does either (DESIGN.md's floors). The checker itself is tested on a package made to
have circles, so that this test can fail."""

import subprocess
import sys
from pathlib import Path

from sebench.importgraph import PACKAGE_DIR, cycles, floors, module_graph, unit_graph

ROOT = Path(__file__).resolve().parents[1]


def test_sebench_has_no_import_circle():
    modules = module_graph()
    assert cycles(modules) == [], "module circles"
    assert cycles(unit_graph(modules)) == [], "subpackage circles"


def test_measuring_sits_at_the_bottom():
    """bench measures an nn.Module: it imports no engine and no store (sebench.speed drives the store)."""
    modules = module_graph()
    assert not {m for m in modules["sebench.bench"] if m.startswith(("sebench.engine", "sebench.store"))}
    assert not any(m.startswith("sebench.analysis.figures") for m in modules["sebench.analysis.excitation"])
    assert "sebench.spec" not in {m for name, deps in modules.items() if name.startswith("sebench.data")
                                  for m in deps}


def _package(tmp_path: Path) -> Path:
    """sebench/ with a circle made of a function-local import, a relative import and `from pkg import sub`."""
    pkg = tmp_path / "sebench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from sebench.sub import b  # deferred, still a dependency\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from sebench.a import f\n")
    (pkg / "leaf.py").write_text("from sebench.sub.c import f as g\n")
    return pkg


def test_checker_finds_function_local_and_relative_circles(tmp_path):
    graph = module_graph(_package(tmp_path))
    assert graph["sebench.a"] == {"sebench.sub.b"} and graph["sebench.sub.b"] == {"sebench.sub.c"}
    assert cycles(graph) == [["sebench.a", "sebench.sub.b", "sebench.sub.c", "sebench.a"]]
    assert cycles(unit_graph(graph)) == [["sebench.a", "sebench.sub", "sebench.a"]]
    assert floors(unit_graph(graph))[-1] == ["sebench.a", "sebench.leaf", "sebench.sub"]  # no height


def test_command_prints_the_graph_and_fails_on_a_circle(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sebench.importgraph"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no import circles" in ok.stdout and "bench" in ok.stdout and str(PACKAGE_DIR.name) in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sebench.importgraph", "--package-dir", str(_package(tmp_path))],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "CIRCLE (modules): a -> sub.b -> sub.c -> a" in bad.stdout and "2 import circle(s)" in bad.stdout
