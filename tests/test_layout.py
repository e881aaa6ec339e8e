"""The layout rules of issue #20, checked on the source tree (no module is executed for (a) and (b)).

(a) import direction: the core (fxc/) imports neither fxc.passes nor fxc.codegen; passes/ does not
    import fxc.codegen; codegen/ does not import fxc.passes; inside the core, the packages are layered
    (errors < ir < passmgr < frontend < api < fxc/__init__ < cli; CORE_LAYERS); inside passes/, the
    folders are layered (select.py, aten_groups.py < algorithms/ < specs/ < analyses/ < prune/, low_rank/,
    auto/ < rewrites/ < training/ < passes/__init__.py; PASSES_LAYERS);
(b) no import cycle among the project's modules;
(c) every pass and analysis registered in pyproject.toml's entry-point tables exists, its module docstring
    has the labelled lines "Reads: ...", "Writes: ..." and "Preserves: ...", and its class is importable
    from fxc.passes.

Imports are read with `ast` from every module of the three packages, at module level and inside
functions, `if TYPE_CHECKING:` blocks included. `import a.b.c` is an edge to module a.b.c;
`from a.b import c` is an edge to a.b.c when that is a module, else to a.b. Package folders come
from [tool.setuptools.package-dir] in pyproject.toml (fxc.passes is passes/, fxc.codegen is codegen/).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]


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


def _core_package(module: str) -> str | None:
    """The CORE_LAYERS key of a core module (its package, or fxc itself); None outside the core."""
    if module.startswith(("fxc.passes", "fxc.codegen")):
        return None
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "fxc"


def _layer_breaches(group_of, layers: dict[str, int], siblings: bool) -> tuple[list[str], list[str]]:
    """(groups without a layer, imports against the layers). `group_of(module)`: its group (None: not
    layered here). A module may import its own group and any group of a lower layer; `siblings`: also
    another group of its own layer."""
    unknown = sorted({g for m in SOURCES if (g := group_of(m)) is not None and g not in layers})
    breaches = []
    for module in sorted(SOURCES):
        own = group_of(module)
        if own is None or own not in layers:
            continue
        for target, line in _imports(module):
            theirs = group_of(target)
            if theirs is None or theirs == own or theirs not in layers or layers[theirs] < layers[own]:
                continue
            if layers[theirs] == layers[own] and siblings:
                continue
            where = "a layer above" if layers[theirs] > layers[own] else "beside it, on the same layer"
            breaches.append(f"{_where(module)}:{line} ({own}) imports {target} ({theirs}, {where})")
    return unknown, breaches


def _order(layers: dict[str, int]) -> str:
    levels = sorted(set(layers.values()))
    return " < ".join(", ".join(sorted(g for g in layers if layers[g] == level)) for level in levels)


def test_core_packages_are_layered():
    unknown, breaches = _layer_breaches(_core_package, CORE_LAYERS, siblings=True)
    assert not unknown, f"core packages without a layer: {unknown}; add them to CORE_LAYERS in tests/test_layout.py"
    assert not breaches, (
        f"imports against the core's layers ({_order(CORE_LAYERS)}); move the code down or the caller up:\n  "
        + "\n  ".join(breaches)
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


# --- the folders of passes/ ---------------------------------------------------------------------------

# passes/ in layers: a module imports from its own folder or from a folder of a lower layer, never from a
# folder above it or beside it on the same layer.
PASSES_LAYERS = {
    "fxc.passes.select": 0, "fxc.passes.aten_groups": 0,  # layer selection; groups of ATen ops
    "fxc.passes.algorithms": 1,  # the math: tensors (and calibration runners) in, tensors out
    "fxc.passes.specs": 2,  # shared vocabulary: candidate specs, quantization schemes, pruning patterns
    "fxc.passes.analyses": 3,  # registered analyses
    "fxc.passes.prune": 4, "fxc.passes.low_rank": 4, "fxc.passes.auto": 4,  # one pass family's helpers each
    "fxc.passes.rewrites": 5,  # registered passes
    "fxc.passes.training": 6,  # compression-aware training (not passes)
    "fxc.passes": 7,  # passes/__init__.py: the public names
}  # fmt: skip


def _passes_folder(module: str) -> str | None:
    """The PASSES_LAYERS key of a module of passes/ (its folder, or the top-level module itself)."""
    if not _inside(module, ("fxc.passes",)):
        return None
    return ".".join(module.split(".")[:3])


def test_passes_folders_are_layered():
    unknown, breaches = _layer_breaches(_passes_folder, PASSES_LAYERS, siblings=False)
    assert not unknown, (
        f"folders or top-level modules of passes/ without a layer: {unknown}; add each to PASSES_LAYERS in "
        "tests/test_layout.py at the layer its imports allow"
    )
    assert not breaches, (
        f"imports against the layers of passes/ ({_order(PASSES_LAYERS)}); fix: move what both need down (tensor "
        "math to passes/algorithms/, shared vocabulary to passes/specs/), or type against a Protocol:\n  "
        + "\n  ".join(breaches)
    )


# --- (c) registered passes and analyses ---------------------------------------------------------------

LABELS = ("Reads:", "Writes:", "Preserves:")


def _registered() -> list[tuple[str, str, str, str]]:
    """(group, name, module, class) for every entry of pyproject.toml's fxc.passes and fxc.analyses tables."""
    tables = PYPROJECT["project"]["entry-points"]
    return [
        (group, name, *target.split(":"))
        for group in ("fxc.passes", "fxc.analyses")
        for name, target in tables[group].items()
    ]


@pytest.mark.parametrize("group,name,module,cls", _registered())
def test_registered_pass_docstring_says_what_it_reads_writes_and_preserves(group, name, module, cls):
    entry = f'pyproject.toml [project.entry-points."{group}"] {name} = "{module}:{cls}"'
    assert module in SOURCES, f"{entry}: no such module in the tree; fix the entry point or restore the module"
    path = SOURCES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    assert any(isinstance(node, ast.ClassDef) and node.name == cls for node in tree.body), (
        f"{entry}: {_where(module)} defines no class {cls}; fix the entry point or the class name"
    )
    doc = ast.get_docstring(tree) or ""
    missing = [label for label in LABELS if not re.search(rf"^{label} \S", doc, re.MULTILINE)]
    assert not missing, (
        f"{group} '{name}' ({module}.{cls}): the module docstring of {_where(module)} has no line starting with "
        f"{' / '.join(repr(label) for label in missing)}; fix: give it one line each, as the other registered "
        "modules do: 'Reads: <analyses, calibration, meta keys>', 'Writes: <graph nodes, tensors, "
        "annotations>', 'Preserves: <analyses still valid>'"
    )


@pytest.mark.parametrize("group,name,module,cls", _registered())
def test_registered_class_is_importable_from_fxc_passes(group, name, module, cls):
    import importlib

    import fxc.passes

    defined = getattr(importlib.import_module(module), cls)
    assert getattr(fxc.passes, cls, None) is defined and cls in fxc.passes.__all__, (
        f"{group} '{name}' ({module}:{cls}) is not exported by fxc.passes; fix: import it in passes/__init__.py "
        "and add it to __all__ (kept sorted)"
    )


def test_fxc_passes_all_is_sorted():
    import fxc.passes

    assert fxc.passes.__all__ == sorted(fxc.passes.__all__), "passes/__init__.py: keep __all__ sorted"
