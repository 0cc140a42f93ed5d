"""Building blocks of the config schema: fields with help texts and value checks.

Every section of the config (and every loss term's parameters, see unlearn.objective) is a
dataclass whose fields are made with `setting`, so `unlearn config --keys` and `unlearn terms` can
print a help text for each. A `__post_init__` calls `check`; the loader turns the `InvalidValue` it
raises into a one-line UnlearnError naming the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a help text (`factory` for mutable defaults)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


class InvalidValue(Exception):
    """Raised by __post_init__ checks: `key` (relative to the section) and what is wrong with it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def check(ok: bool, key: str, message: str) -> None:
    """Raise InvalidValue(key, message) unless `ok`."""
    if not ok:
        raise InvalidValue(key, message)


def as_float(v: Any) -> float | None:
    """`v` as a float, or None when it is not a number (true/false are not numbers here)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        # PyYAML reads "1e-5" (no dot) as a string; accept it where a number is expected.
        try:
            return float(v)
        except ValueError:
            return None
    return None
