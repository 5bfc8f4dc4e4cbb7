"""Guards on the repository layout that would otherwise break users in confusing ways."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mlflow_folder_does_not_shadow_the_mlflow_package():
    """`import mlflow` from the repository root must find the real package, not ./mlflow/."""
    out = subprocess.run(
        [sys.executable, "-c", "import mlflow, sys; print(mlflow.__file__); print(hasattr(mlflow, 'start_run'))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "site-packages" in out[0]
    assert out[1] == "True"
    assert not (ROOT / "mlflow" / "__init__.py").exists()


def test_core_never_imports_kfp():
    """The core library knows nothing of KFP (dependencies point downward only)."""
    offenders = [
        p.name
        for p in (ROOT / "bakeoff").rglob("*.py")
        if "cli" not in p.parts and ("import kfp" in p.read_text() or "from kfp" in p.read_text())
    ]
    assert offenders == []


def test_cli_help_is_fast_and_imports_no_tensorflow():
    code = "import sys; from bakeoff.cli import app; print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _module_name(path: Path, root: Path) -> str:
    """``root/bakeoff/cli/__init__.py`` -> ``bakeoff.cli``; ``root/bakeoff/weights.py`` -> ``bakeoff.weights``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside functions, except ``if TYPE_CHECKING:`` bodies
    (those never run, so they cannot take part in an import cycle)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        else:
            children = list(ast.iter_child_nodes(node))
        for child in children:
            visit(child)

    visit(tree)
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Resolve ``from . import x`` / ``from ..y import z`` against the importing module's package."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: line of the first such import}."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def owner(name: str) -> str | None:
        """The module of ours that ``name`` (a module or a name inside one) lives in."""
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {name: {} for name in files}
    for name, path in files.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(node, name, path.name == "__init__.py")
                targets = [f"{base}.{alias.name}" for alias in node.names]  # a submodule or a name in ``base``
            for target in filter(None, map(owner, targets)):
                if target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def _tangles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """Groups of modules that import each other, directly or round a longer loop (strong components > 1)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = sorted(graph)
    index = {name: i for i, name in enumerate(names)}
    edges = [(index[a], index[b]) for a in names for b in graph[a]]
    rows, cols = zip(*edges) if edges else ((), ())
    adjacency = coo_matrix(([1] * len(edges), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    groups: dict[int, set[str]] = {}
    for name, label in zip(names, labels):
        groups.setdefault(int(label), set()).add(name)
    return [frozenset(group) for group in groups.values() if len(group) > 1]


def _describe(group: frozenset[str], graph: dict[str, dict[str, int]]) -> str:
    """One cycle in ``group``, with the file and line of each import, so the fix is easy to find."""
    try:
        graphlib.TopologicalSorter({a: [b for b in graph[a] if b in group] for a in group}).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1][::-1]  # graphlib lists it against the import direction
    steps = [f"{a} -> {b} ({a.replace('.', '/')}.py:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return "; ".join(steps)


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        Path(root, name).parent.mkdir(parents=True, exist_ok=True)
        Path(root, name).write_text(text)


def test_import_graph_sees_every_kind_of_import(tmp_path):
    """The graph builder follows function-level and relative imports and skips TYPE_CHECKING blocks."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\nfrom pkg import b\n",
        "pkg/b.py": "def f():\n    from pkg.sub.c import thing\n",
        "pkg/sub/__init__.py": "from . import c\n",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nfrom ..a import x\nif TYPE_CHECKING:\n    from pkg import b\n",
    }
    _write_tree(tmp_path, files)
    graph = _import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {},
        "pkg.a": {"pkg.b": 2},
        "pkg.b": {"pkg.sub.c": 2},
        "pkg.sub": {"pkg.sub.c": 1},
        "pkg.sub.c": {"pkg.a": 2},
    }
    tangled = _tangles(graph)
    assert tangled == [{"pkg.a", "pkg.b", "pkg.sub.c"}]
    assert _describe(tangled[0], graph).count(" -> ") == 3
    assert _tangles({"pkg.a": {"pkg.b": 1}, "pkg.b": {}}) == []


def test_core_has_no_import_cycle():
    """A cycle makes import order matter and hides which module owns a fact (issue 9): none under bakeoff/."""
    graph = _import_graph(ROOT, "bakeoff")
    tangled = set(_tangles(graph))
    assert not tangled, "import cycles: " + " | ".join(_describe(group, graph) for group in tangled)


def _test_module_names(tests: Path) -> dict[str, Path]:
    """Every name a test file can be imported by: pytest puts each test folder and tests/ itself on sys.path
    (``trackhelp``, ``support.net``), and the repository root holds ``tests.x`` paths too."""
    names = {}
    for path in tests.rglob("*.py"):
        names[_module_name(path, tests)] = path
        names[_module_name(path, tests.parent)] = path
        names[_module_name(path, path.parent)] = path  # the file's own folder (rootdir-less pytest imports)
    return names


def _private_imports(tests: Path) -> list[str]:
    """``from other_test_module import _helper`` (or ``other._helper``) anywhere under ``tests``."""
    modules = _test_module_names(tests)
    found = []
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}  # local name -> test module path, for ``import trackhelp`` then ``trackhelp._x``
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and modules.get(node.module or "", path) != path:
                found += [
                    f"{path.relative_to(tests)}:{node.lineno} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if modules.get(alias.name, path) != path:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                found.append(f"{path.relative_to(tests)}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_private_test_import_finder_finds_them(tmp_path):
    files = {
        "conftest.py": "def _shared(): ...\n",
        "helpers.py": "def _secret(): ...\ndef public(): ...\n",
        "area/test_a.py": "from helpers import _secret, public\nimport helpers\nhelpers._secret()\nhelpers.public()\n",
        "area/test_b.py": "from conftest import _shared\nfrom os import _exit\n",
        "area/test_c.py": "def _mine(): ...\nfrom bakeoff.storage import _client_for\n",
    }
    _write_tree(tmp_path, files)
    assert _private_imports(tmp_path) == [
        "area/test_a.py:1 imports helpers._secret",
        "area/test_a.py:3 uses helpers._secret",
        "area/test_b.py:1 imports conftest._shared",
    ]


def test_no_test_imports_another_test_files_private_helpers():
    """Shared helpers live in tests/support (public names); a ``_private`` one belongs to its own file."""
    assert _private_imports(ROOT / "tests") == []
