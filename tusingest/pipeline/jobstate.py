"""The JSON form of operations' typed state: versioned, and tolerant of fields added later (an
operation written by an older node still reads) or unknown (written by a newer one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

# Written into every state; a reader can tell, and convert, what an older node wrote.
VERSION = 1
VERSION_KEY = "v"

T = TypeVar("T")


class JobState(Protocol):
    """What a handler persists as it goes (`Progress`) and when it is done."""

    def to_json(self) -> dict[str, Any]: ...


def from_json(
    cls: type[T], raw: Any, convert: Mapping[str, Callable[[Any], Any]] | None = None
) -> T | None:
    """A dataclass from its JSON object: unknown keys are ignored and missing ones take the
    field's default; None when a field without default is missing or a value does not fit
    (the work that would have produced it is done again)."""
    if not isinstance(raw, Mapping):
        return None
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in raw:
            value = raw[field.name]
            if convert and field.name in convert:
                try:
                    value = convert[field.name](value)
                except (TypeError, ValueError, KeyError):
                    return None
            values[field.name] = value
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            return None
    try:
        return cls(**values)
    except (TypeError, ValueError):
        return None


def dump(state: Any) -> dict[str, Any]:
    """A flat state dataclass as its versioned JSON object."""
    return {VERSION_KEY: VERSION, **dataclasses.asdict(state)}


def load(cls: type[T], raw: Any) -> T:
    """A flat state dataclass from its JSON object; ValueError when it is not one."""
    state = from_json(cls, raw)
    if state is None:
        raise ValueError(f"not a {cls.__name__}: {raw!r}")
    return state
