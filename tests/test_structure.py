"""The layout stays easy to read: no import cycle between the project's modules, and no
source file over 400 lines. Both are read from the code: an import graph over every tracked
Python file (imports inside functions too, since they run when called), and a line count."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from tests.conftest import ROOT

MAX_LINES = 400
# Folders put on sys.path where their modules run: the repository root (the CDK app, the
# library, the tests), the images' application packages, each Lambda handler's folder (its
# modules import each other by their plain names) and the batch jobs' folder (job_runner).
SEARCH_ROOTS = [
    ROOT, ROOT / "images" / "ray-serve", ROOT / "images" / "gradio", ROOT / "batch",
    *sorted(p for p in (ROOT / "lambda").iterdir() if p.is_dir()),
]


def project_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in tracked.stdout.split() if (ROOT / name).is_file()]


def module_file(name: str, roots: list[Path]) -> Path | None:
    """The project file that defines module `name`, searched as Python would."""
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _package_of(path: Path, roots: list[Path]) -> list[str]:
    """The dotted package a file belongs to, relative to the search root that holds it."""
    root = max((r for r in roots if path.is_relative_to(r)), key=lambda r: len(r.parts))
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1]


def imported_modules(path: Path, roots: list[Path] = SEARCH_ROOTS) -> set[str]:
    """Every module an import statement in `path` names, `from x import y` counting x.y too;
    imports under `if TYPE_CHECKING:` are left out (they never run)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path, roots)
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def import_graph(files: list[Path], roots: list[Path] = SEARCH_ROOTS) -> dict[Path, set[Path]]:
    """File -> the project files it imports (the excluded ones left out)."""
    graph: dict[Path, set[Path]] = {}
    included = set(files)
    for path in files:
        targets = {module_file(name, roots) for name in imported_modules(path, roots)}
        graph[path] = {t for t in targets if t in included and t != path}
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected components with more than one file (Tarjan's algorithm)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    found: list[list[Path]] = []

    def connect(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles_between_the_projects_modules():
    found = cycles(import_graph(project_files()))
    assert [[p.relative_to(ROOT).as_posix() for p in component] for component in found] == []


def test_no_source_file_is_over_400_lines():
    lengths = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in project_files()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_the_library_imports_nothing_of_the_app():
    # ray_serve_ha is the bottom layer: the app (stacks/, app.py, local/, batch/, charts/'s
    # command) uses it, never the other way round.
    app = ("stacks", "app", "local", "batch", "charts", "examples", "tests")
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(n for n in imported_modules(path) if n.split(".")[0] in app)
        for path in sorted((ROOT / "ray_serve_ha").rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_graph_sees_a_cycle_and_an_import_in_a_function(tmp_path):
    # The checks above pass only if they can fail: a made-up pair of modules importing each
    # other (one inside a function) is a cycle.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    graph = import_graph(sorted((tmp_path / "pkg").glob("*.py")), roots=[tmp_path])
    assert cycles(graph) == [[tmp_path / "pkg" / "a.py", tmp_path / "pkg" / "b.py"]]
    assert graph[tmp_path / "pkg" / "c.py"] == set()
