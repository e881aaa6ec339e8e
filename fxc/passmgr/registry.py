"""Registries of passes, analyses, backends and compile targets, filled from entry points.

Groups: `fxc.passes`, `fxc.analyses`, `fxc.backends`, and `fxc.targets` (the pass that carries out a
typed target of fxc.compile, by the target's `name`: `budget` for fxc.Budget). fxc's own are
registered the same way (pyproject.toml), so a third-party package adds a pass exactly as fxc does:

    [project.entry-points."fxc.passes"]
    my-pass = "my_package.my_pass:MyPass"

Entry points are read once, lazily; a class is imported only when its name is looked up.
`register(group, name, cls)` adds one at run time (tests, notebooks). A failed lookup in a group with
no entry points at all says the installed metadata predates the checkout (reinstall: pip install -e .).
Reads installed package metadata; writes nothing.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from typing import Any

from fxc.errors import UnknownNameError

GROUPS = ("fxc.passes", "fxc.analyses", "fxc.backends", "fxc.targets")
_KIND = {"fxc.passes": "pass", "fxc.analyses": "analysis", "fxc.backends": "backend", "fxc.targets": "target"}

_entry_points: dict[str, dict[str, importlib.metadata.EntryPoint]] | None = None
_registered: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}


def _load_entry_points() -> dict[str, dict[str, importlib.metadata.EntryPoint]]:
    global _entry_points
    if _entry_points is None:
        found = importlib.metadata.entry_points()
        _entry_points = {group: {ep.name: ep for ep in found.select(group=group)} for group in GROUPS}
    return _entry_points


def refresh() -> None:
    """Read entry points again (after installing a package in a running process)."""
    global _entry_points
    _entry_points = None


def register(group: str, name: str, cls: Any) -> None:
    """Add a class under `name` for this process; it shadows an entry point of the same name."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    _registered[group][name] = cls


def unregister(group: str, name: str) -> None:
    _registered[group].pop(name, None)


def names(group: str) -> list[str]:
    return sorted(set(_load_entry_points()[group]) | set(_registered[group]))


def lookup(group: str, name: str) -> Any:
    """The class registered under `name`; an unknown name lists the close matches."""
    if name in _registered[group]:
        return _registered[group][name]
    entry = _load_entry_points()[group].get(name)
    if entry is None:
        raise UnknownNameError(unknown_message(group, name))
    return entry.load()


def unknown_message(group: str, name: str, extra: list[str] | None = None) -> str:
    known = names(group) + (extra or [])
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    message = f"unknown {_KIND[group]} '{name}'{hint} (known: {', '.join(known) or 'none'})"
    if not _load_entry_points()[group]:
        message += (
            f"; no installed package declares an '{group}' entry point, so fxc's installed metadata is older "
            "than this checkout's pyproject.toml (or fxc is not installed): run `pip install -e .` in the checkout"
        )
    return message
