"""The wheel ships the whole project: every package (each folder holding an __init__.py under the
folders of [tool.setuptools.package-dir]), every module, the native kernel's C source, the CLI's
built-in calibration text (fxc/cli/data/), and the entry points the registries read.

The wheel is built offline from a copy of pyproject.toml, README.md and the package folders in a
temporary folder (`pip wheel --no-deps --no-build-isolation --no-index`, with the setuptools of this
environment), so the working tree gets no build/ or egg-info from it. A folder missing from the
explicit packages list, a package folder without __init__.py, or package data that does not match
fails here with the fix named.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIRS: dict[str, str] = SETUPTOOLS["package-dir"]


def _source_folders() -> dict[str, Path]:
    """Dotted package name -> source folder, for every folder under a package-dir root (the most
    specific root wins: fxc.passes is passes/, not fxc/passes/)."""
    folders: dict[str, Path] = {}
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: item[0].count(".")):
        base = ROOT / folder
        for path in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            if path.name == "__pycache__" or "__pycache__" in path.parts:
                continue
            folders[".".join([package, *path.relative_to(base).parts])] = path
    return folders


FOLDERS = _source_folders()
PACKAGES = sorted(name for name, path in FOLDERS.items() if (path / "__init__.py").is_file())


def _in_wheel(package: str) -> str:
    return package.replace(".", "/")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (pip install 'setuptools>=70.1')")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in sorted(set(PACKAGE_DIRS.values())):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout[-2000:]}\n{built.stderr[-4000:]}"
    [path] = (work / "dist").glob("fxc-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_every_folder_with_modules_is_a_package():
    missing = [
        str(path.relative_to(ROOT))
        for path in FOLDERS.values()
        if any(path.glob("*.py")) and not (path / "__init__.py").is_file()
    ]
    assert not missing, f"folders with modules but no __init__.py (add one, with a docstring): {missing}"


def test_the_packages_list_names_every_package():
    listed = set(SETUPTOOLS["packages"])
    assert not set(PACKAGES) - listed, (
        f"pyproject.toml [tool.setuptools] packages lacks {sorted(set(PACKAGES) - listed)}: add them, "
        "or their modules are left out of the wheel"
    )
    assert not listed - set(PACKAGES), f"packages listed without a folder: {sorted(listed - set(PACKAGES))}"


def test_wheel_holds_every_package_and_module(wheel):
    names = set(wheel.namelist())
    missing = [f"{_in_wheel(p)}/__init__.py" for p in PACKAGES if f"{_in_wheel(p)}/__init__.py" not in names]
    for package in PACKAGES:
        for module in FOLDERS[package].glob("*.py"):
            entry = f"{_in_wheel(package)}/{module.name}"
            if entry not in names:
                missing.append(entry)
    assert not missing, f"the wheel lacks {missing}; list the package in pyproject.toml [tool.setuptools] packages"


def test_wheel_ships_the_native_kernel_source(wheel):
    names = set(wheel.namelist())
    sources = sorted((ROOT / PACKAGE_DIRS["fxc.codegen"] / "torch" / "native").glob("*.c"))
    assert sources, "codegen/torch/native/*.c not found"
    for source in sources:
        assert f"fxc/codegen/torch/native/{source.name}" in names, (
            f"{source.name} is not in the wheel; pyproject.toml [tool.setuptools.package-data] "
            '"fxc.codegen.torch.native" must list "*.c"'
        )


def test_wheel_ships_the_cli_calibration_text(wheel):
    """`fxc compress` calibrates a model with a tokenizer on fxc/cli/data/calibration.txt by default."""
    names = set(wheel.namelist())
    for source in sorted((ROOT / "fxc" / "cli" / "data").iterdir()):
        entry = f"fxc/cli/data/{source.name}"
        assert entry in names, (
            f"{entry} is not in the wheel; pyproject.toml [tool.setuptools.package-data] \"fxc.cli\" must list "
            f'"data/{source.name}"'
        )
        assert wheel.read(entry) == source.read_bytes()


def test_wheel_declares_the_entry_points(wheel):
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for group in ("fxc.passes", "fxc.analyses", "fxc.backends", "fxc.targets", "console_scripts"):
        assert f"[{group}]" in text, f"entry-point group {group} missing from the wheel's entry_points.txt"
    for group in ("fxc.passes", "fxc.analyses", "fxc.backends", "fxc.targets"):
        for name, target in PYPROJECT["project"]["entry-points"][group].items():
            assert f"{name} = {target}" in text
