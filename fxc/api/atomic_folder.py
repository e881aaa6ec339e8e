"""Write a folder all at once: a crash leaves the old folder or the new one, never a mix.

    write_folder(Path("out"), lambda tmp: ...write files into tmp...)

The files are written into a sibling temporary folder (`.out.fxc-tmp-<pid>-<random>`), flushed to
disk, given the usual modes (0666 / 0777 less the umask), and the folder is then renamed into place:
on Linux with renameat2(RENAME_EXCHANGE), which swaps the old and new folders in one step, elsewhere
by moving the old folder aside first. Temporary folders a killed writer left behind (their pid is
gone) are removed by the next write next to them. The folder it replaces must hold nothing but
the files `owned` names, so a typo cannot delete a user's folder.
Reads and writes only `target`, its sibling temporary folders, and nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from fxc.errors import FormatError

_TMP, _OLD = ".fxc-tmp-", ".fxc-old-"


def write_folder(target: Path, write: Callable[[Path], None], owned: Iterable[str]) -> Path:
    """Run `write(tmp)` on a fresh sibling folder, then put it at `target` atomically."""
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(target, set(owned))
    _remove_stale(parent, target.name)
    tmp = parent / f".{target.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}"
    mask = _umask()
    tmp.mkdir(mode=0o700)
    try:
        write(tmp)
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~mask)
            _fsync(file)
        os.chmod(tmp, 0o777 & ~mask)
        if target.exists():
            _replace(tmp, target)
        else:
            os.rename(tmp, target)
        _fsync(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_replaceable(target: Path, owned: set[str]) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FormatError(f"{target} exists and is not a folder; give fxc.save a folder path")
    if target.is_dir():
        others = sorted(p.name for p in target.iterdir() if p.name not in owned)
        if others:
            raise FormatError(
                f"{target} holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); fxc.save "
                "replaces the whole folder, so give it a new or empty folder"
            )


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary folders of writers that no longer run."""
    for marker in (_TMP, _OLD):
        for path in parent.glob(f".{name}{marker}*"):
            pid = path.name[len(name) + 1 + len(marker):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is writing only one folder at a time here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(new: Path, target: Path) -> None:
    """Swap `new` into `target`'s place; the old content ends up at `new`'s path, then is removed."""
    if not _exchange(new, target):
        old = target.parent / f".{target.name}{_OLD}{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(target, old)
        os.rename(new, target)
        new = old
    shutil.rmtree(new, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): both paths swapped in one step (Linux 3.15+, glibc 2.28+)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
