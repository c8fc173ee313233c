"""Dependencies run one way: cli -> tasks -> models -> layers.

Read from the source (every `import`, at module level or inside a
function), so a lazy import that closes a cycle counts too.
"""

import ast
import importlib.metadata
import pathlib

import pytest

import keras_mirasol

PACKAGE = pathlib.Path(keras_mirasol.__file__).parent

# What each part of the package may import from the others. `data`
# stands beside `models`: neither imports the other; what both need
# (the clip ops) lives in `layers`.
ALLOWED = {
    "logs": set(),
    # Figures from what runs wrote (numpy and matplotlib only).
    "plots": set(),
    # Huge pages for the host allocator (the standard library only).
    "host_memory": set(),
    "layers": set(),
    "models": {"layers"},
    "data": {"layers"},
    "distribution": {"models", "layers"},
    "export": {"models", "layers"},
    "evaluation": {"models", "data", "layers"},
    # Run checkpoints (Keras and NumPy only), beside `training`.
    "checkpointing": set(),
    "training": {"checkpointing", "models", "data", "distribution", "layers"},
    "benchmark": {"host_memory", "models", "data", "layers"},
    "demo": {"training", "evaluation", "plots", "models", "data", "layers"},
    "cli": {
        "logs",
        "host_memory",
        "plots",
        "benchmark",
        "demo",
        "training",
        "evaluation",
        "export",
        "distribution",
        "models",
        "data",
        "layers",
    },
}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports():
    """`{module: {imported keras_mirasol modules}}` for the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported.update(n for n in names if n.startswith("keras_mirasol"))
        modules[_module_name(path)] = imported
    return modules


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_parts_import_only_the_parts_below_them():
    wrong = []
    for module, imported in _imports().items():
        part = _part(module)
        if part is None:
            continue
        for other in imported:
            other_part = _part(other)
            if other_part in (None, part):
                continue
            if other_part not in ALLOWED[part]:
                wrong.append(f"{module} imports {other}")
    assert not wrong, wrong


def test_no_module_import_cycle():
    graph = _imports()
    visiting, done, cycles = set(), set(), []

    def visit(module, stack):
        visiting.add(module)
        for other in sorted(graph.get(module, ())):
            if other not in graph or other == module:
                continue
            if other in visiting:
                cycles.append(stack[stack.index(other) :] + [other])
            elif other not in done:
                visit(other, stack + [other])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    # A module importing its own package (`from keras_mirasol.models
    # import X` inside models) shows here too: the package imports it.
    assert not cycles, cycles


def test_every_part_is_listed():
    parts = {_part(module) for module in _imports()} - {None}
    assert parts == set(ALLOWED)


@pytest.mark.one_backend
def test_version_is_the_installed_distributions():
    assert keras_mirasol.__version__ == importlib.metadata.version(
        "keras-mirasol"
    )
