"""User-facing errors: the CLI turns these into one-line messages and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(ValueError):
    """A problem with the user's input (config, flags, files); never a bug in snnbench."""


def did_you_mean(value: str, valid: Iterable[str]) -> str:
    """Return a hint listing the valid options, with the closest one first when there is one."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid: {', '.join(valid)}"


def unknown(kind: str, value: str, valid: Iterable[str], where: str = "") -> BenchError:
    """Build the standard 'unknown name' error."""
    loc = f"{where}: " if where else ""
    return BenchError(f"{loc}unknown {kind} {value!r}; {did_you_mean(value, valid)}")
