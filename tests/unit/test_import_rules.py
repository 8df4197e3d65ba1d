"""The package's import rules, checked on its source: no import circle between twinlm modules
(lazy imports count too), no private name imported from another module, and twinlm imports at
the top of a module (commands/ import their work lazily so `twinlm --help` starts fast, as
cli.py says; anywhere else a lazy import needs a comment on its line saying why)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "twinlm"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def owner(name: str) -> str | None:
    """The twinlm module an imported dotted name lives in (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def twinlm_imports(tree: ast.AST):
    """(node, imported module or module.name strings) for every twinlm import in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("twinlm")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twinlm") and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        if names:
            yield node, names


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for _, names in twinlm_imports(ast.parse(path.read_text())):
            targets |= {t for t in map(owner, names) if t and t != name and not name.startswith(t + ".")}
        edges[name] = targets - {"twinlm"}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def says_why(line: str) -> bool:
    """The line carries a comment other than a bare linter directive (`# noqa: E402`)."""
    comment = line.partition("#")[2]
    return bool(re.sub(r"noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?", "", comment).strip())


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_checks_find_what_they_look_for():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not says_why("from twinlm.x import y  # noqa: E402")
    assert says_why("import twinlm.x  # noqa: F401  (registers a model class)")


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path in MODULES.items():
        for node, _ in twinlm_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                bad += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


def test_twinlm_imports_are_at_the_top_unless_a_comment_says_why():
    bad = []
    for name, path in MODULES.items():
        if name.startswith("twinlm.commands."):
            continue  # lazily by design: see cli.py's docstring
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        # A module-level import after the first def or class is a module-bottom import.
        first_def = min((n.lineno for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)),
                        default=len(lines) + 1)
        top = {id(node) for node in tree.body if node.lineno < first_def}
        for node, _ in twinlm_imports(tree):
            if id(node) not in top and not says_why(lines[node.lineno - 1]):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert bad == [], "twinlm imported below the top without a comment saying why: " + ", ".join(bad)
