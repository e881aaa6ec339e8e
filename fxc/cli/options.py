"""The `--backend-option KEY=VALUE` items of `fxc compress`, `fxc report` and `fxc generate` as a backend_options
dict, and the flag itself.

    add_backend_option_argument(subparser)             # --backend-option KEY=VALUE, repeatable
    parse_backend_options(["native=false", "sparse-crossover=0.25"]) == {"native": False, "sparse_crossover": 0.25}

Kebab-case keys read as snake_case; VALUE reads as true/false (any case), an integer or finite decimal
number, else the text itself; the last item for a key wins. Reads and writes nothing (no state).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from fxc.errors import OptionError
from fxc.passmgr.options import to_field_name


def add_backend_option_argument(command: argparse.ArgumentParser, note: str = "") -> None:
    """--backend-option KEY=VALUE on a subcommand; `note` ends its help."""
    command.add_argument(
        "--backend-option", action="append", default=[], metavar="KEY=VALUE",
        help="a backend option, repeatable, e.g. native=false (the torch backend without its native AMX kernel); "
             f"VALUE reads as true/false, a number, else text{note}",
    )


def parse_backend_options(items: Sequence[str]) -> dict[str, Any]:
    """The --backend-option KEY=VALUE items as a backend_options dict (kebab-case keys read as snake_case)."""
    options = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise OptionError(f"--backend-option {item!r} is not KEY=VALUE (e.g. --backend-option native=false)")
        options[to_field_name(key.strip())] = _scalar(value.strip())
    return options


def _scalar(text: str) -> bool | int | float | str:
    """true / false (any case) as a bool, an integer or finite decimal number as a number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text
