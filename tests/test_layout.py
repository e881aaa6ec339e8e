"""The layout rules of issue #20, checked on the source tree (no module is executed for (a) and (b)).

(a) import direction: the core (fxc/) imports neither fxc.passes nor fxc.codegen; passes/ does not
    import fxc.codegen; codegen/ does not import fxc.passes; inside the core, the packages are layered
    (errors < ir < passmgr < frontend < api < fxc/__init__ < cli; CORE_LAYERS);
(b) no import cycle among the project's modules;
(c) every registered pass's and analysis's module docstring says what it reads, writes and preserves.

Imports are read with `ast` from every module of the three packages, at module level and inside
functions, `if TYPE_CHECKING:` blocks included. `import a.b.c` is an edge to module a.b.c;
`from a.b import c` is an edge to a.b.c when that is a module, else to a.b. Package folders come
from [tool.setuptools.package-dir] in pyproject.toml (fxc.passes is passes/, fxc.codegen is codegen/).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _source_files() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages (the most specific folder wins)."""
    modules: dict[str, Path] = {}
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: item[0].count(".")):
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _source_files()
SOURCES = {name: path for name, path in MODULES.items() if "__pycache__" not in path.parts}


def _is_package(module: str) -> bool:
    return SOURCES[module].name == "__init__.py"


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement in `module`'s file."""
    path = SOURCES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _deepest_module(alias.name)
                if target:
                    found.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _deepest_module(f"{base}.{alias.name}") or _deepest_module(base)
                if target:
                    found.append((target, node.lineno))
    return found


def _deepest_module(name: str) -> str | None:
    """The longest prefix of the dotted `name` that is a project module; None outside the project."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in SOURCES:
            return candidate
    return None


GRAPH = {module: sorted({target for target, _ in _imports(module) if target != module}) for module in SOURCES}


def _where(module: str) -> str:
    return str(SOURCES[module].relative_to(ROOT))


RULES = [
    # (who, what it must not import, why)
    (lambda m: not m.startswith(("fxc.passes", "fxc.codegen")), ("fxc.passes", "fxc.codegen"),
     "the core finds passes and backends through fxc.passmgr.registry (entry points), never by import"),
    (lambda m: m.startswith("fxc.passes"), ("fxc.codegen",),
     "passes write the op set (fxc/ir/ops.py); how a backend lowers it is the backend's business"),
    (lambda m: m.startswith("fxc.codegen"), ("fxc.passes",),
     "backends read the IR and the op set (fxc/ir/), not the passes that wrote it"),
]


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_tree_is_found():
    assert {"fxc", "fxc.passes", "fxc.codegen", "fxc.passmgr.passbase"} <= set(SOURCES)


def test_imports_point_the_right_way():
    breaches = []
    for module in sorted(SOURCES):
        for applies, forbidden, why in RULES:
            if not applies(module):
                continue
            for target, line in _imports(module):
                if _inside(target, forbidden):
                    breaches.append(f"{_where(module)}:{line} imports {target} ({why})")
    assert not breaches, "imports against the layout (fix: go through the registry or move the code):\n  " + (
        "\n  ".join(breaches)
    )


# The core's packages in layers: a module imports from its own layer or the ones below, never above.
CORE_LAYERS = {
    "fxc.errors": 0, "fxc.version": 0,
    "fxc.ir": 1, "fxc.eval": 1,
    "fxc.passmgr": 2,
    "fxc.frontend": 3,
    "fxc.api": 4,
    "fxc": 5,  # fxc/__init__.py: the public names
    "fxc.cli": 6,
}  # fmt: skip


def _core_layer(module: str) -> tuple[str, int] | None:
    if module.startswith(("fxc.passes", "fxc.codegen")):
        return None
    parts = module.split(".")
    package = ".".join(parts[:2]) if len(parts) > 1 else "fxc"
    return package, CORE_LAYERS[package] if package in CORE_LAYERS else -1


def test_core_packages_are_layered():
    unknown = sorted({_core_layer(m)[0] for m in SOURCES if _core_layer(m) and _core_layer(m)[1] < 0})
    assert not unknown, f"core packages without a layer: {unknown}; add them to CORE_LAYERS in tests/test_layout.py"
    breaches = []
    for module in sorted(SOURCES):
        own = _core_layer(module)
        if own is None:
            continue
        for target, line in _imports(module):
            theirs = _core_layer(target)
            if theirs is not None and theirs[1] > own[1]:
                breaches.append(f"{_where(module)}:{line} ({own[0]}) imports {target} ({theirs[0]}, a layer above)")
    order = " < ".join(sorted(CORE_LAYERS, key=CORE_LAYERS.get))
    assert not breaches, f"imports against the core's layers ({order}); move the code down or the caller up:\n  " + (
        "\n  ".join(breaches)
    )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iterators = [start], [iter(graph[start])]
        state[start] = 1
        while iterators:
            child = next(iterators[-1], None)
            if child is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                iterators.append(iter(graph.get(child, ())))
    return None


def test_find_cycle_reports_one():
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_no_import_cycle():
    cycle = _find_cycle(GRAPH)
    if cycle:
        steps = []
        for module, target in zip(cycle, cycle[1:]):
            line = next(line for t, line in _imports(module) if t == target)
            steps.append(f"{_where(module)}:{line} imports {target}")
        pytest.fail(
            "import cycle (TYPE_CHECKING and function-level imports count): " + " -> ".join(cycle) + "\n  "
            + "\n  ".join(steps)
            + "\n  fix: move what both need into a module below both, or type against a Protocol"
        )


# --- (c) docstrings of registered passes and analyses -----------------------------------------------

WORDS = ("reads", "writes", "preserves")


def _registered() -> list[tuple[str, str]]:
    from fxc.passmgr import registry

    return [(group, name) for group in ("fxc.passes", "fxc.analyses") for name in registry.names(group)]


@pytest.mark.parametrize("group,name", _registered())
def test_registered_pass_docstring_says_what_it_reads_writes_and_preserves(group, name):
    from fxc.passmgr import registry

    cls = registry.lookup(group, name)
    module = sys.modules[cls.__module__]
    doc = module.__doc__ or ""
    missing = [word for word in WORDS if not re.search(rf"\b{word}\b", doc, re.IGNORECASE)]
    where = Path(module.__file__).resolve()
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    assert not missing, (
        f"{group} '{name}' ({cls.__module__}.{cls.__name__}): the module docstring of {where} does not say "
        f"{' / '.join(w.capitalize() for w in missing)}; fix: end it with a line such as "
        "'Reads <analyses, calibration>; writes <graph nodes, tensors, annotations>; preserves <analyses>.'"
    )
