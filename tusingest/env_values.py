"""Values of environment settings: on/off flags and finite numbers, refused naming the variable."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from tusingest.errors import ConfigError

T = TypeVar("T")

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def flag(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ConfigError(name, f"{raw!r} is not on/off")


def number(name: str, raw: str, kind: Callable[[str], T]) -> T:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a valid number") from None
    # float() accepts "nan" and "inf", which slip through every range check.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"{raw!r} is not a finite number")
    return value
