"""The package's own import graph, read from the source with `ast`, and its circles.

Imports must run one way (DESIGN.md: from the command down to the layers). Every `import` statement
counts, wherever it stands: module level, inside a function (deferred imports still make a dependency),
under `if TYPE_CHECKING`. Two graphs are checked:

* modules: `from sebench.data import build_loaders` is an edge to `sebench.data` (its __init__);
  `from sebench.engine import checkpoint` is an edge to the submodule `sebench.engine.checkpoint`.
* units: each subpackage collapsed into one node (`sebench.data.build` -> `sebench.data`), each top-level
  module its own, so `spec -> data -> spec` is a circle even when it passes through different files.

`python -m sebench.importgraph` prints the unit graph floor by floor and exits 1 when there is a circle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "sebench"
PACKAGE_DIR = Path(__file__).resolve().parent

Graph = dict[str, set[str]]


def module_names(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under `package_dir` (a package's is its __init__)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` is or lies in (None: outside the package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` (at `path`) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package that holds `module`
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known) if target.split(".")[0] == PACKAGE else None
            if resolved is not None and resolved != module:
                out.add(resolved)
    return out


def module_graph(package_dir: Path = PACKAGE_DIR) -> Graph:
    names = module_names(package_dir)
    known = set(names)
    return {module: imports_of(module, path, known) for module, path in names.items()}


def unit(module: str) -> str:
    """The node a module belongs to in the unit graph: its subpackage, or itself at the top level."""
    parts = module.split(".")
    return ".".join(parts[:2])


def unit_graph(graph: Graph) -> Graph:
    units: Graph = {}
    for module, targets in graph.items():
        node = units.setdefault(unit(module), set())
        node.update(unit(t) for t in targets if unit(t) != unit(module))
    return units


def cycles(graph: Graph) -> list[list[str]]:
    """Every circle as one closed path per strongly connected component (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the package's module count
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_closed_path(graph, c) for c in components)


def _closed_path(graph: Graph, component: list[str]) -> list[str]:
    """One circle through the component's first node, as a path that ends where it starts (BFS)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return component  # unreachable for a strongly connected component


def floors(graph: Graph) -> list[list[str]]:
    """Nodes by height: floor 0 imports nothing of the package, floor k only floors below k. Nodes on a
    circle (no height) come last, as one group."""
    height: dict[str, int] = {}
    remaining = dict(graph)
    while remaining:
        ready = [v for v, deps in remaining.items() if all(d in height for d in deps)]
        if not ready:
            break
        for v in ready:
            height[v] = max((height[d] + 1 for d in graph[v]), default=0)
            del remaining[v]
    result = [sorted(v for v in height if height[v] == h) for h in range(max(height.values(), default=-1) + 1)]
    return result + ([sorted(remaining)] if remaining else [])


def _short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.") if name != PACKAGE else name


def report(package_dir: Path = PACKAGE_DIR, out=sys.stdout) -> int:
    """Print the unit graph floor by floor and every circle of both graphs; 1 when there is one."""
    modules = module_graph(package_dir)
    units = unit_graph(modules)
    print(f"{PACKAGE} import graph: {len(modules)} modules, {sum(map(len, modules.values()))} imports; "
          f"{len(units)} units (subpackages collapsed). Floor 0 imports nothing of the package, floor k only "
          "floors below it; @: on or above a circle", file=out)
    layered = floors(units)
    on_circle = set(layered[-1]) if any(cycles(units)) else set()
    for h, floor in enumerate(layered):
        for v in floor:
            deps = ", ".join(sorted(map(_short, units[v]))) or "-"
            print(f"  {'@' if v in on_circle else h:>2}  {_short(v):<14} -> {deps}", file=out)
    found = [("module", c) for c in cycles(modules)] + [("unit", c) for c in cycles(units)]
    for kind, circle in found:
        print(f"CIRCLE ({kind}s): {' -> '.join(map(_short, circle))}", file=out)
    print(f"{len(found)} import circle(s)" if found else "no import circles", file=out)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.importgraph", description=__doc__.split("\n")[0])
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR, help="the package folder to read")
    return report(parser.parse_args(argv).package_dir)


if __name__ == "__main__":
    raise SystemExit(main())
