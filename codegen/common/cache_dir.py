"""The user's cache folder for what fxc's backends build: $XDG_CACHE_HOME/fxc/<name>, or
~/.cache/fxc/<name> when XDG_CACHE_HOME is unset or not an absolute path (the XDG base directory
rule). The torch backend's native kernels go to `native`, the Triton backend's kernel sources to
`triton`. Reads the environment; creates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/fxc/<name>, else ~/.cache/fxc/<name>."""
    root = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(root) if os.path.isabs(root) else Path.home() / ".cache"
    return base / "fxc" / name
