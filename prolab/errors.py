"""The one exception type for mistakes a user can fix (bad files, bad arguments, bad input), and the one
reader of a number a user typed.

The CLI prints these as one line and exits non-zero; the app shows them as a message. Anything
else escaping the library is a bug and keeps its traceback.
"""
from __future__ import annotations

import math


class ProLabError(Exception):
    """A user-facing error with a message that says what to change."""


def name_list(names, limit: int = 8) -> str:
    """``names`` joined for a message, the first ``limit`` of them and " ..." when there are more."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def finite_number(value, what: str) -> float | None:
    """``value`` (a number or its text) as a finite float; None when empty. ``what`` names it in the
    error, e.g. "The unknown threshold"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ProLabError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise ProLabError(f"{what} must be a finite number, got {value}.")
    return x


def check_threshold(value) -> float | None:
    """The unknown threshold as a float (a number or its text); None, empty or 0 is off. Anything but a
    finite number is an error."""
    return finite_number(value, "The unknown threshold") or None
