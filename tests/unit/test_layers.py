"""Imports point one way: read every import of the library (function-local ones included) and check the layering
that docs/design.md describes, so that a cycle or a shortcut fails here instead of surfacing as an ImportError."""

import ast
import pathlib

import pytest

import hf_transfer

LIBRARY = pathlib.Path(hf_transfer.__file__).parent
COMMAND_LINE = {
    "cli",
    "__main__",
    "predict",
    "evaluate",
    "advise",
}  # the console script and the old `python -m` spellings
LEAVES = {"errors", "options", "assets", "hub", "metrics", "defaults"}


def _modules():
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        module = ".".join(("hf_transfer", *parts))
        package = module.rsplit(".", 1)[0]
        if parts[-1] == "__init__":
            module = package
        yield path, module, package


def _imports(path: pathlib.Path, package: str):
    """(imported module, imported names, line) for every import of hf_transfer code in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "hf_transfer":
                target = node.module
            else:
                continue
            yield target, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hf_transfer":
                    yield alias.name, [], node.lineno


def room(module: str) -> str:
    """The subpackage (or top-level module) a module lives in: hf_transfer.engine.optim -> engine."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges():
    edges = []
    for path, module, package in _modules():
        for target, names, line in _imports(path, package):
            targets = (
                [target]
                if target != "hf_transfer"
                else [
                    f"hf_transfer.{name}"
                    if (LIBRARY / name).is_dir() or (LIBRARY / f"{name}.py").is_file()
                    else "hf_transfer"
                    for name in names
                ]
            )
            for resolved in targets:
                edges.append((module, resolved, names, f"{path.relative_to(LIBRARY.parent)}:{line}"))
    return edges


EDGES = _edges()


def test_the_walk_sees_the_library():
    rooms = {room(module) for module, *_ in EDGES}
    assert {
        "models",
        "data",
        "engine",
        "adapters",
        "features",
        "runs",
        "pipeline",
        "distill",
        "domain",
        "advice",
        "contrastive",
        "cli",
    } <= rooms
    assert any(room(target) == "models" and room(source) == "engine" for source, target, *_ in EDGES)


def test_every_import_names_a_module_that_exists():
    """A function-local import runs only when its function does: a wrong path would fail in a user's run, not here."""

    def exists(module):
        path = LIBRARY.parent.joinpath(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    missing = []
    for source, target, names, where in EDGES:
        if exists(target):
            continue
        parent = target.rsplit(".", 1)[0]  # `from .x import name`, where name is a module of package x
        if not (names and exists(parent)):
            missing.append(f"{where}: {target}")
    assert not missing, f"imports of modules that do not exist: {missing}"


def test_no_cycle_between_subpackages():
    graph = {}
    for source, target, _, where in EDGES:
        a, b = room(source), room(target)
        if a != b and a != "__init__" and b != "__init__":
            graph.setdefault(a, {}).setdefault(b, where)

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, {}):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    for start in graph:
        found = cycle_from(start)
        assert found is None, (
            "import cycle " + " -> ".join(found) + ": " + ", ".join(graph[a][b] for a, b in zip(found, found[1:]))
        )


def test_library_never_imports_the_command_line_layer():
    offenders = [
        where
        for source, target, _, where in EDGES
        if room(source) not in COMMAND_LINE and room(source) != "__init__" and room(target) in COMMAND_LINE
    ]
    assert not offenders, f"library code imports the command-line layer at {offenders}"


def test_leaves_import_only_leaves():
    offenders = [where for source, target, _, where in EDGES if room(source) in LEAVES and room(target) not in LEAVES]
    assert not offenders, f"a top-level leaf imports a subpackage at {offenders}"


def test_no_private_name_crosses_a_subpackage():
    offenders = [
        f"{where} imports {name}"
        for source, target, names, where in EDGES
        if room(source) != room(target)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offenders, f"private names used across subpackages: {offenders}"


@pytest.mark.parametrize("package", sorted(p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()))
def test_every_subpackage_says_what_lives_there_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((LIBRARY / package / "__init__.py").read_text())) or ""
    assert len(doc) > 100 and "May import" in doc, (
        f"hf_transfer/{package}/__init__.py needs its one-paragraph docstring"
    )


def test_the_walk_fails_on_a_cycle(monkeypatch):
    """The cycle check is not vacuous: an engine -> pipeline import on top of pipeline -> engine is reported."""
    fake = [*EDGES, ("hf_transfer.engine.trainer", "hf_transfer.pipeline.training", ["prepare"], "fake:1")]
    monkeypatch.setitem(globals(), "EDGES", fake)
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_cycle_between_subpackages()


def test_recipes_and_scripts_import_names_the_library_has():
    """Recipes and scripts run as files: a renamed library function would surface only when someone runs them."""
    import importlib
    import importlib.util

    root = LIBRARY.parent
    missing = []
    for path in sorted([*root.glob("recipes/*.py"), *root.glob("scripts/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hf_transfer":
                module = importlib.import_module(node.module)
                missing += [
                    f"{path.relative_to(root)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                ]
    assert not missing, f"imports of names the library does not have: {missing}"
