"""Imports run one way: graph -> data -> models -> pipeline -> eval/training -> serve/cli.

Every module of src/sg2image is parsed with `ast` (nothing is imported, so lazy imports inside
functions and TYPE_CHECKING blocks count as much as top-level ones). A module may import its own
layer or a lower one, never a higher one, and no chain of imports may come back to where it
started. For example, `from sg2image.models.conditioning import label_prompt` in data/coco.py is
refused (data imports models), and so is a `from sg2image.data.shapes_dataset import ...` inside
data/shapes.py while shapes_dataset imports shapes (a cycle); the tests at the bottom build such
packages and check that both are named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sg2image"

# Layers, lowest first. A module's layer is the first prefix of its dotted name found here.
# drawing pictures graphs and boxes and needs nothing but graph; sampling runs a pipeline over
# a split; the package root exports the pipeline's public classes (lazily).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("graph", ("sg2image.graph", "sg2image.drawing")),
    ("data", ("sg2image.data",)),
    ("models", ("sg2image.models",)),
    ("pipeline", ("sg2image.pipeline", "sg2image.sampling", "sg2image")),
    ("eval/training", ("sg2image.eval", "sg2image.training")),
    ("serve/cli", ("sg2image.serve", "sg2image.cli", "sg2image.cli_common", "sg2image.cli_data",
                   "sg2image.__main__")),
]


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module under `package` (a package's name is its own)."""
    root = package.parent
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def layer_of(module: str) -> tuple[int, str]:
    """(rank, name) of the module's layer: the longest matching prefix decides."""
    best = None
    for rank, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the package root ("sg2image", no dot) is only itself, not everything under it
            if module == prefix or ("." in prefix and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank, name)
    if best is None:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS in tests/test_layers.py")
    return best[1], best[2]


def parse(path: Path) -> ast.Module:
    """The file's syntax tree. CPython 3.11 counts ast.parse's recursion in one counter for
    all threads (CPython gh-106905): a thread parsing beside this one, which a test
    left running, can make it raise "AST constructor recursion depth mismatch"; the
    file is fine, so it is parsed again."""
    source = path.read_text()
    for _ in range(2):
        try:
            return ast.parse(source, filename=str(path))
        except SystemError:
            continue
    return ast.parse(source, filename=str(path))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for each import of the package in the file, wherever it is.

    `from pkg import name` imports the module pkg.name when there is one, else pkg itself."""
    is_package = path.name == "__init__.py"
    top = next(iter(modules)).split(".")[0]
    found = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, node.lineno))
    return [(t, line) for t, line in found if t == top or t.startswith(top + ".")]


def import_graph(package: Path) -> dict[str, list[tuple[str, int]]]:
    modules = module_names(package)
    graph = {}
    for name, path in modules.items():
        edges = []
        for target, line in imports_of(name, path, modules):
            # `import a.b.c` of a name that is not a module: keep the longest module prefix
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                edges.append((target, line))
        graph[name] = edges
    return graph


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    problems = []
    for module, edges in graph.items():
        rank, layer = layer_of(module)
        for target, line in edges:
            target_rank, target_layer = layer_of(target)
            if target_rank > rank:
                problems.append(
                    f"{module} (layer {layer}) imports {target} (layer {target_layer}) "
                    f"at line {line}: imports run graph -> data -> models -> pipeline -> "
                    "eval/training -> serve/cli"
                )
    return problems


def import_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Each cycle once, as 'a (line n) -> b (line m) -> a', found by depth-first search."""
    cycles, seen_cycles = [], set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[tuple[str, int]] = []

    def visit(module: str) -> None:
        state[module] = 1
        for target, line in graph.get(module, []):
            path.append((module, line))
            if state.get(target) == 1:
                start = next(i for i, (m, _) in enumerate(path) if m == target)
                loop = path[start:]
                key = frozenset(m for m, _ in loop)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    steps = " -> ".join(f"{m} (line {ln})" for m, ln in loop)
                    cycles.append(f"import cycle: {steps} -> {target}")
            elif target not in state:
                visit(target)
            path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_every_module_has_a_layer():
    for module in module_names(PACKAGE):
        layer_of(module)  # raises naming the module
    with pytest.raises(AssertionError, match="sg2image.newmodule: in no layer"):
        layer_of("sg2image.newmodule")


def test_imports_run_down_the_layers():
    problems = upward_imports(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(import_graph(PACKAGE))
    assert not cycles, "\n".join(cycles)


# ------------------------------------------------------------------- the checks can fail


@pytest.fixture
def bad_package(tmp_path):
    """A package with the two faults this file guards against: data imports models (lazily,
    inside a function), and data/shapes.py <-> data/shapes_dataset.py import each other."""
    root = tmp_path / "sg2image"
    files = {
        "__init__.py": "",
        "graph.py": "",
        "data/__init__.py": "",
        "data/coco.py": (
            "from sg2image.graph import Vocab\n\n"
            "def caption(objects):\n"
            "    from sg2image.models.conditioning import label_prompt\n"
            "    return label_prompt(objects)\n"
        ),
        "data/shapes.py": "def __getattr__(name):\n    from .shapes_dataset import ShapesDataset\n",
        "data/shapes_dataset.py": "from sg2image.data import shapes\n",
        "models/__init__.py": "",
        "models/conditioning.py": "from sg2image.graph import Vocab\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_upward_import_is_named(bad_package):
    problems = upward_imports(import_graph(bad_package))
    assert problems == [
        "sg2image.data.coco (layer data) imports sg2image.models.conditioning (layer models) "
        "at line 4: imports run graph -> data -> models -> pipeline -> eval/training -> "
        "serve/cli"
    ]


def test_cycle_is_named(bad_package):
    assert import_cycles(import_graph(bad_package)) == [
        "import cycle: sg2image.data.shapes (line 2) -> sg2image.data.shapes_dataset (line 1)"
        " -> sg2image.data.shapes"
    ]
