"""The one reader of environment settings: a blank value means the default, and every value
that cannot be used is refused with a `ConfigError` naming its variable."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from tusingest.errors import ConfigError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class Env:
    """Typed, validated reads of variables; `overrides` (CLI flags by variable name) win."""

    def __init__(
        self, values: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
    ) -> None:
        merged = dict(values)
        for name, value in (overrides or {}).items():
            if value is not None:
                merged[name] = value
        self._values = merged

    def optional(self, name: str) -> str | None:
        """The stripped value, None when unset or blank."""
        value = self._values.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def flag(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise ConfigError(name, f"{raw!r} is not on/off")

    def integer(
        self, name: str, default: int, *, low: int | None = None, high: int | None = None
    ) -> int:
        """An integer within [low, high] (each bound optional)."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not an integer") from None
        _check_range(name, value, low, high)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float | None = None,
        high: float | None = None,
        positive: bool = False,
    ) -> float:
        """A finite number within [low, high]; `positive` also refuses 0."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not a valid number") from None
        # float() accepts "nan" and "inf", which slip through every range check.
        if not math.isfinite(value):
            raise ConfigError(name, f"{raw!r} is not a finite number")
        if positive and value <= 0:
            raise ConfigError(name, "must be > 0")
        _check_range(name, value, low, high)
        return value

    def path(self, name: str, default: Path) -> Path:
        """An absolute path (`~` expanded, relative to the working directory)."""
        raw = self.optional(name)
        return (Path(raw) if raw else default).expanduser().absolute()

    def choice(
        self, name: str, default: str, options: Iterable[str], *, fold: Callable[[str], str]
    ) -> str:
        """One of `options`, after `fold` (str.upper or str.lower) of the value."""
        allowed = tuple(options)
        value = fold(self.text(name, default))
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}")
        return value

    def items(self, name: str) -> tuple[str, ...]:
        """A comma list without blanks; () when unset."""
        raw = self.optional(name)
        if raw is None:
            return ()
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        """A URL of one of `schemes` (without `://`), trailing `/` removed; None when unset."""
        raw = self.optional(name)
        if raw is None:
            return None
        if not raw.startswith(tuple(f"{scheme}://" for scheme in schemes)):
            raise ConfigError(name, f"{redacted(raw)!r} is not a {' or '.join(schemes)} URL")
        return raw.rstrip("/")


def redacted(url: str) -> str:
    """`url` for a message: whatever precedes its last `@` (a user and a password, even one
    with an unescaped `/` or `@`) is `***`, with or without a scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and not low <= value <= high:
        raise ConfigError(name, f"must be between {low:g} and {high:g}")
    if low is not None and value < low:
        raise ConfigError(name, f"must be >= {low:g}")
    if high is not None and value > high:
        raise ConfigError(name, f"must be <= {high:g}")
